"""Tests for the embedded local backend, on a tiny random model built here (and the real gemma when slow)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from trace_builder.chat_format import PLAIN_STOP_STRINGS, plain_transcript, prompt_token_ids, truncate_at_stop_string
from trace_builder.errors import LLMError, UserError
from trace_builder.llm import model_files
from trace_builder.llm.base import ChatRequest
from trace_builder.llm.local import LocalBackend, _Pending
from trace_builder.llm.local_engine import escape_control_chars, use_onednn_linears

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
TRAINING_TEXT = [
    '{"name": "Ada", "age": 36, "tags": ["math", "code"]}',
    "User: What is the capital of France?\n\nAssistant: Paris is the capital of France.",
    "The quick brown fox jumps over the lazy dog. 0123456789 true false null",
    '{"verdict": "yes", "score": 7, "reasons": ["clear", "short"]}',
]


def build_tiny_model(directory: Path, chat_template: str | None) -> Path:
    """A randomly initialised 2-layer Llama with a byte-level BPE tokenizer trained on a few strings."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
    # ASCII bytes only: a random model over a full byte vocabulary strings together UTF-8
    # fragments (even encoded surrogates, which xgrammar lets through and Python decodes as
    # several U+FFFD), which is noise, not behaviour under test.
    ascii_alphabet = [char for char in pre_tokenizers.ByteLevel.alphabet() if _byte_of(char) < 128]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=ascii_alphabet)
    raw.train_from_iterator(TRAINING_TEXT, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="<|end|>", pad_token="<pad>")
    if chat_template:
        tokenizer.chat_template = chat_template
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


def _byte_of(char: str) -> int:
    """The byte a GPT-2 byte-level alphabet character stands for."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    if ord(char) in printable:
        return ord(char)
    others = [b for b in range(256) if b not in printable]
    return others[ord(char) - 256]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-chat"), CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def tiny_plain_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-plain"), None)


def ask(content: str, **params: Any) -> ChatRequest:
    return ChatRequest(messages=({"role": "user", "content": content},), **params)


def run_all(backend: LocalBackend, requests: list[ChatRequest]) -> list[Any]:
    async def go() -> list[Any]:
        try:
            return await asyncio.gather(*(backend.complete(r) for r in requests), return_exceptions=True)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def validate(value: Any, schema: dict[str, Any]) -> None:
    """The subset of JSON Schema these tests use (jsonschema is not a dependency)."""
    kind = schema.get("type")
    if "enum" in schema:
        assert value in schema["enum"]
    if kind == "object":
        assert isinstance(value, dict)
        assert set(schema.get("required", [])) <= set(value)
        assert set(value) <= set(schema["properties"])
        for key, item in value.items():
            validate(item, schema["properties"][key])
    elif kind == "array":
        assert isinstance(value, list)
        assert len(value) <= schema.get("maxItems", len(value))
        assert len(value) >= schema.get("minItems", 0)
        for item in value:
            validate(item, schema["items"])
    elif kind == "string":
        assert isinstance(value, str)
        assert len(value) <= schema.get("maxLength", len(value))
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool)
        assert schema.get("minimum", value) <= value <= schema.get("maximum", value)
    elif kind == "boolean":
        assert isinstance(value, bool)


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
}
VERDICT = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["yes", "no"]},
        "ok": {"type": "boolean"},
        "score": {"type": "integer", "minimum": 0, "maximum": 10},
    },
    "required": ["verdict", "ok", "score"],
}


# ----------------------------------------------------------------------------- pure helpers


def test_plain_transcript_ends_with_assistant_turn() -> None:
    text = plain_transcript(({"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi there "}))
    assert text == "Be brief.\n\nUser: Hi there\n\nAssistant:"


def test_prompt_uses_chat_template_when_the_tokenizer_has_one(tiny_model: Path, tiny_plain_model: Path) -> None:
    from transformers import AutoTokenizer

    messages = ({"role": "user", "content": "Hello"},)
    templated = AutoTokenizer.from_pretrained(str(tiny_model))
    assert templated.decode(prompt_token_ids(templated, messages)) == "<|user|>Hello<|end|><|assistant|>"
    plain = AutoTokenizer.from_pretrained(str(tiny_plain_model))
    assert plain.decode(prompt_token_ids(plain, messages), skip_special_tokens=True) == "User: Hello\n\nAssistant:"


def test_truncate_at_stop_string_cuts_at_the_earliest() -> None:
    assert truncate_at_stop_string("Paris.\nUser: and\nAssistant:", PLAIN_STOP_STRINGS) == "Paris."
    assert truncate_at_stop_string("Paris.", PLAIN_STOP_STRINGS) == "Paris."


def test_control_characters_in_json_strings_are_escaped() -> None:
    text = escape_control_chars('{"a": "x\x1cy\tz"}')
    assert json.loads(text) == {"a": "x\x1cy\tz"}


def test_onednn_linears_compute_what_the_model_computed(tiny_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 14, 20], [3, 3, 7, 2, 11]])
    with torch.inference_mode():
        before = model(input_ids=ids).logits
        if not use_onednn_linears(model):
            pytest.skip("this torch build has no oneDNN linear")
        after = model(input_ids=ids).logits
    assert model.lm_head.forward.__func__ is not torch.nn.Linear.forward
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_onednn_linears_can_be_turned_off_and_fall_back_when_a_call_fails(
    tiny_model: Path, monkeypatch, caplog
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from trace_builder.llm.local_engine import ONEDNN_ENV

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32).eval()
    monkeypatch.setenv(ONEDNN_ENV, "0")
    assert not use_onednn_linears(model)
    assert model.lm_head.forward.__func__ is torch.nn.Linear.forward
    monkeypatch.delenv(ONEDNN_ENV)
    if not use_onednn_linears(model):
        pytest.skip("this torch build has no oneDNN linear")
    ids = torch.tensor([[1, 5, 9]])
    with torch.inference_mode():
        expected = model(input_ids=ids).logits

        def broken(*args):
            raise RuntimeError("mkldnn: unsupported shape")  # as a kernel fails at a shape it was not proven at

        monkeypatch.setattr("trace_builder.llm.local_engine._onednn_linear", broken)
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after, expected, rtol=1e-4, atol=1e-4)  # the layers fell back, the answer stands
    assert model.lm_head.forward.__func__ is torch.nn.Linear.forward
    assert "goes back to torch's default kernel" in caplog.text


# ----------------------------------------------------------------------------- generation


def test_concurrent_requests_are_batched_and_all_complete(tiny_model: Path) -> None:
    backend = LocalBackend(model=str(tiny_model), batch_size=4)
    requests = [ask(f"question {i}", max_tokens=6 + i, temperature=0.0 if i % 2 else 0.9, seed=i) for i in range(10)]
    results = run_all(backend, requests)
    for request, result in zip(requests, results):
        assert not isinstance(result, BaseException), result
        assert result.finish_reason in {"stop", "length"}
        assert 0 <= result.completion_tokens <= request.max_tokens
        assert result.prompt_tokens > 0
    assert sum(backend.batch_sizes) == 10
    assert max(backend.batch_sizes) > 1
    assert max(backend.batch_sizes) <= 4


def test_max_tokens_is_honoured_exactly_by_a_model_that_never_stops(tiny_model: Path) -> None:
    backend = LocalBackend(model=str(tiny_model), batch_size=3)
    results = run_all(backend, [ask("count", max_tokens=n) for n in (1, 5, 9)])
    for n, result in zip((1, 5, 9), results):
        assert result.completion_tokens <= n
        if result.finish_reason == "length":
            assert result.completion_tokens == n


def test_greedy_is_deterministic_and_seeded_sampling_repeats(tiny_model: Path) -> None:
    backend = LocalBackend(model=str(tiny_model), batch_size=4)
    requests = [
        ask("same", max_tokens=12),
        ask("same", max_tokens=12),
        ask("same", max_tokens=12, temperature=1.0, seed=7),
        ask("same", max_tokens=12, temperature=1.0, seed=7),
    ]
    a, b, c, d = run_all(backend, requests)
    assert a.text == b.text
    assert c.text == d.text


def test_json_schema_answers_parse_and_validate_even_for_a_random_model(tiny_model: Path) -> None:
    backend = LocalBackend(model=str(tiny_model), batch_size=8)
    schemas = [PERSON, VERDICT] * 4
    requests = [
        ask(f"describe {i}", max_tokens=160, json_schema=schema, temperature=(0.0 if i < 2 else 1.0), seed=i)
        for i, schema in enumerate(schemas)
    ]
    results = run_all(backend, requests)
    for schema, result in zip(schemas, results):
        assert not isinstance(result, BaseException), result
        validate(json.loads(result.text), schema)
    assert backend.batch_sizes == [8]


def test_json_answer_is_closed_when_the_budget_runs_out(tiny_model: Path) -> None:
    """An unbounded string would run to max_tokens; the closing reserve still yields valid JSON."""
    schema = {
        "type": "object",
        "properties": {"essay": {"type": "string"}, "done": {"type": "boolean"}},
        "required": ["essay", "done"],
    }
    backend = LocalBackend(model=str(tiny_model), batch_size=4)
    requests = [ask("write", max_tokens=40, json_schema=schema, temperature=1.0, seed=s) for s in range(4)]
    for result in run_all(backend, requests):
        validate(json.loads(result.text), schema)
        assert result.completion_tokens <= 40
        if result.extra.get("forced_close"):
            assert result.finish_reason == "length"


def test_plain_layout_model_answers(tiny_plain_model: Path) -> None:
    backend = LocalBackend(model=str(tiny_plain_model), batch_size=2)
    text, structured = run_all(backend, [ask("hi", max_tokens=8), ask("hi", max_tokens=64, json_schema=VERDICT)])
    assert text.completion_tokens <= 8
    assert "\nUser:" not in text.text
    validate(json.loads(structured.text), VERDICT)


def test_bad_schema_fails_only_its_own_request(tiny_model: Path) -> None:
    backend = LocalBackend(model=str(tiny_model), batch_size=2)
    bad, good = run_all(backend, [ask("x", max_tokens=4, json_schema={"type": "nonsense"}), ask("y", max_tokens=4)])
    assert isinstance(bad, LLMError) and bad.reason == "invalid_json_schema"
    assert "nonsense" in bad.detail and ".cc" not in bad.detail
    assert good.completion_tokens <= 4


def test_prompt_longer_than_the_context_is_an_llm_error(tiny_model: Path) -> None:
    backend = LocalBackend(model=str(tiny_model), batch_size=1)
    (result,) = run_all(backend, [ask("fox " * 2000, max_tokens=4)])
    assert isinstance(result, LLMError) and result.reason == "prompt_too_long"


def test_closed_backend_refuses_requests(tiny_model: Path) -> None:
    async def go() -> None:
        backend = LocalBackend(model=str(tiny_model), batch_size=1)
        await backend.complete(ask("a", max_tokens=2))
        await backend.aclose()
        with pytest.raises(LLMError, match="backend_closed"):
            await backend.complete(ask("b", max_tokens=2))

    asyncio.run(go())


# ----------------------------------------------------------------------------- model files


def test_missing_model_path_is_a_one_line_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        LocalBackend(model=str(tmp_path / "nowhere"))
    assert "\n" not in str(caught.value) and "gemma3-270m" in str(caught.value)
    with pytest.raises(UserError, match="config.json"):
        LocalBackend(model=str(tmp_path))


def test_conversion_is_atomic_and_cleans_up_after_a_killed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def fake_convert(work: Path) -> None:
        calls.append(work)
        (work / "config.json").write_text("{}")
        if len(calls) == 1:
            raise KeyboardInterrupt  # killed mid-conversion
        (work / model_files._DONE_MARKER).write_text("{}")

    monkeypatch.setattr(model_files, "_convert_embedded_gguf", fake_convert)
    stale = tmp_path / f".{model_files.EMBEDDED_DIR_NAME}.tmp-999-dead"
    stale.mkdir()

    with pytest.raises(KeyboardInterrupt):
        model_files.ensure_embedded_model(tmp_path)
    assert not (tmp_path / model_files.EMBEDDED_DIR_NAME).exists()
    assert not calls[0].exists()

    target = model_files.ensure_embedded_model(tmp_path)
    assert target == tmp_path / model_files.EMBEDDED_DIR_NAME and (target / "config.json").is_file()
    assert not stale.exists()
    assert model_files.ensure_embedded_model(tmp_path) == target
    assert len(calls) == 2


def test_cache_root_follows_trace_build_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRACE_BUILD_CACHE", str(tmp_path))
    assert model_files.model_cache_root() == tmp_path / "models"
    monkeypatch.delenv("TRACE_BUILD_CACHE")
    assert model_files.model_cache_root() == Path.home() / ".cache" / "trace-build" / "models"


# ----------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_embedded_gemma_answers_plain_and_json() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    backend = LocalBackend(model=model_files.EMBEDDED_MODEL, batch_size=2)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 40}, "confident": {"type": "boolean"}},
        "required": ["city", "confident"],
    }
    plain, structured = run_all(
        backend,
        [
            ask("What is the capital of France?", max_tokens=24),
            ask("What is the capital of France? Answer in JSON.", max_tokens=48, json_schema=schema),
        ],
    )
    assert not isinstance(plain, BaseException), plain
    assert "Paris" in plain.text and plain.completion_tokens <= 24
    assert not isinstance(structured, BaseException), structured
    validate(json.loads(structured.text), schema)


def test_batches_group_similar_prompt_lengths_and_serve_the_oldest_first(tiny_model: Path) -> None:
    backend = LocalBackend(model=str(tiny_model), batch_size=2)  # the worker is never started
    loop = asyncio.new_event_loop()
    try:
        lengths = [50, 2000, 60, 1900, 55]
        for i, n in enumerate(lengths):
            backend._queue.put(_Pending(ask("x" * n), loop.create_future(), loop, arrival=float(i)))
        batches = []
        while True:
            batch, stop = backend._next_batch()
            batches.append([len(p.request.messages[0]["content"]) for p in batch])
            if not backend._backlog:
                break
    finally:
        loop.close()
    assert batches == [[50, 55], [2000, 1900], [60]]
