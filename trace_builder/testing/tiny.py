"""Randomly initialised causal LMs and a tokenizer built locally: for tests and benchmarks, nothing downloaded."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ["<pad>", "<unk>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|> ' + message['content'] + ' <|end|> ' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}"
)
WORDS = (
    "write a short poem about the sea in three lines use formal tone answer in english "
    "list five fruits with numbers do not mention apples give a title in bold end with a question "
    "summarize the text below in two sentences keep it under fifty words include the word blue "
    "explain why the sky looks blue to a child avoid jargon use a table with two columns "
    "reply as a pirate add an emoji respond in json with keys name and age one two three four"
).split()


def _qwen2_shape(hidden: int, intermediate: int, layers: int, heads: int, vocab: int | None) -> dict[str, Any]:
    return dict(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=2,
        vocab_size=vocab,
        tie_word_embeddings=True,
    )


# Shapes like the public Qwen2 checkpoints (random weights: for speed and memory, not quality).
# The tiny one takes its vocabulary size from the tokenizer.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": _qwen2_shape(hidden=32, intermediate=64, layers=2, heads=4, vocab=None),
    "qwen2-0.5b-like": _qwen2_shape(hidden=896, intermediate=4864, layers=24, heads=14, vocab=151936),
    "qwen2-1.5b-like": _qwen2_shape(hidden=1536, intermediate=8960, layers=28, heads=12, vocab=151936),
}


def build_tokenizer(extra_words: list[str] | None = None) -> Any:
    """A word-level tokenizer over WORDS with a chat template, as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in list(WORDS) + list(extra_words or []) + list("0123456789.,:;!?-"):
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<eos>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(
    size: str = "tiny", vocab_size: int | None = None, seed: int = 0, dtype: Any = None, device: str = "cpu"
) -> Any:
    """A Qwen2ForCausalLM of the named size with random weights, initialised directly on `device`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    shape = dict(SIZES[size])
    shape["vocab_size"] = shape["vocab_size"] or vocab_size
    if shape["vocab_size"] is None:
        raise ValueError("the tiny size takes its vocab_size from the tokenizer; pass vocab_size")
    torch.manual_seed(seed)
    config = Qwen2Config(**shape, max_position_embeddings=8192, pad_token_id=0, eos_token_id=2, bos_token_id=None)
    # Initialising a 1.5B model on the CPU takes longer than the GPU benchmark it feeds.
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    return model.to(dtype) if dtype is not None else model


def save_tiny_model(directory: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Write a random model of `size` and the local tokenizer to `directory` (a from_pretrained dir)."""
    tokenizer = build_tokenizer()
    model = build_model(size, vocab_size=len(tokenizer), seed=seed)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


def _sentence(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def synthetic_rows(method: str, n: int, prompt_words: int = 12, response_words: int = 16, seed: int = 0) -> list[dict]:
    """Rows with the final-dataset columns of `method` (records.FINAL_SCHEMAS), made of random WORDS.

    Chosen responses repeat a fixed pattern so a model can learn to prefer them quickly; an IOPO
    x2 is x1 plus a marker phrase, answered by a second fixed pattern, so the preference depends
    on the instruction, as IOPO needs.
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        constraints = [_sentence(rng, 4), _sentence(rng, 4)]
        base = {
            "id": f"ex{i:05d}",
            "seed_id": f"seed{i:05d}",
            "language": "en",
            "description": _sentence(rng, 5),
            "constraints": constraints,
            "dimensions": ["inclusion", "numerical"],
            # the second constraint is one a check decides, as a real run's often are
            "checks": [None, json.dumps({"kind": "word_count", "params": {"max": response_words}})],
            "input": "NULL",
            "constraint_count": len(constraints),
            "prompt": _sentence(rng, prompt_words),
        }
        good = " ".join(["one two three"] * (response_words // 3))
        bad = _sentence(rng, response_words)
        if method in ("sft", "eval"):
            base["response"] = good
        elif method == "dpo":
            base.update(chosen=good, rejected=bad)
        elif method == "iopo":
            base.update(
                response=good,
                perturb_op="add",
                constraints_2=constraints + [_sentence(rng, 4)],
                dimensions_2=["inclusion", "numerical", "theme"],
                checks_2=base["checks"] + [None],
                prompt_2=base["prompt"] + " reply as a pirate",
                response_2=" ".join(["four blue sea"] * (response_words // 3)),
                x1_y2_passes=False,
            )
        rows.append(base)
    return rows


def write_dataset(directory: Path, method: str, rows: list[dict]) -> Path:
    """Write rows as <directory>/part-00000.parquet with the final schema of `method`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from trace_builder.records import FINAL_SCHEMAS

    directory.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=FINAL_SCHEMAS[method])
    pq.write_table(table, directory / "part-00000.parquet")
    return directory
