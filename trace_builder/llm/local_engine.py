"""The local backend's generation engine: batched decoding on CPU, JSON answers held to their schema by xgrammar."""

from __future__ import annotations

import json
import logging
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trace_builder.chat_format import (
    PLAIN_STOP_STRINGS,
    has_chat_template,
    prompt_token_ids,
    stop_token_ids,
    truncate_at_stop_string,
)
from trace_builder.errors import LLMError
from trace_builder.llm.base import ChatRequest, ChatResult

log = logging.getLogger("trace_builder")


def default_thread_count() -> int:
    """All cores but one, which stays free for the event loop and the rest of the process.

    torch's OpenMP threads meet at a barrier in every matmul, so one descheduled thread
    stalls them all: on the 2-core dev box, with other processes busy, 2 threads decoded
    at 1.4 tokens/s (batch 1) and 4.7 (batch 8) where 1 thread did 19 and 110.
    """
    return max(1, (os.cpu_count() or 1) - 1)


def schema_key(schema: dict[str, Any]) -> str:
    # Not sorted: property order is part of the grammar (answers follow the schema's order).
    return json.dumps(schema, separators=(",", ":"))


def closing_reserve(max_tokens: int) -> int:
    """Tokens kept at the end of a JSON answer's budget to close the structure."""
    return max(16, min(96, max_tokens // 4))


def inside_json_string(json_prefix: str) -> bool:
    """Whether a prefix of compact JSON ends inside a string (an odd number of unescaped quotes)."""
    inside = escaped = False
    for char in json_prefix:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = inside
        elif char == '"':
            inside = not inside
    return inside


def escape_control_chars(json_text: str) -> str:
    """Escape raw control characters, which JSON forbids inside strings.

    xgrammar 0.2's rule for strings with maxLength/minLength admits control characters
    (only quote, backslash, CR and LF are excluded). With any_whitespace=False nothing
    outside a string can be a control character, so escaping them all is safe and keeps
    every string's decoded length (and so maxLength) unchanged.
    """
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m.group()):04x}", json_text)


def _xgrammar_message(exc: Exception) -> str:
    """xgrammar's first error line without its '[time] file.cc:line: ' prefix."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return re.sub(r"^\[[^\]]*\]\s*\S+:\d+:\s*", "", line)[:300]


@dataclass
class _Row:
    """One request inside a running batch."""

    index: int  # position in the batch's request list
    prompt_ids: list[int]
    max_new: int
    temperature: float
    generator: Any  # torch.Generator | None
    matcher: Any  # xgrammar.GrammarMatcher | None
    stop_strings: tuple[str, ...]
    reserve: int = 0
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    forced_close: bool = False


class LocalEngine:
    """Model, tokenizer and grammar machinery; used only from the backend's worker thread."""

    def __init__(self, model_dir: Path, num_threads: int, onednn: bool = True):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        torch.set_num_threads(num_threads)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        # float32: CPUs without AVX-512 BF16 run bfloat16 matmuls far slower, and on the
        # 2-core dev box (which has it) gemma's 262k-token output layer still ran no faster
        # in bfloat16. (int8 dynamic quantization decoded 3-5x faster but quantizes
        # activations per tensor across the batch, which wrecked batched answers; weight-only
        # int8 kernels were 3-9x slower.)
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        self.model.eval()
        self.onednn = onednn and use_onednn_linears(self.model)
        self.vocab_size = int(self.model.config.get_text_config().vocab_size)
        self.max_positions = int(getattr(self.model.config.get_text_config(), "max_position_embeddings", 0) or 0)
        self.stop_ids = stop_token_ids(self.tokenizer, self.model.generation_config)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.stop_ids[0] if self.stop_ids else 0)
        self.plain_layout = not has_chat_template(self.tokenizer)
        self._compiler = None
        self._grammars: OrderedDict[str, Any] = OrderedDict()
        self._closer_ids: tuple[Any, Any] = ()

    # -- grammars

    def _grammar_compiler(self) -> Any:
        if self._compiler is None:
            import xgrammar as xgr

            info = xgr.TokenizerInfo.from_huggingface(
                self.tokenizer, vocab_size=self.vocab_size, stop_token_ids=self.stop_ids
            )
            self._compiler = xgr.GrammarCompiler(info, max_threads=max(1, os.cpu_count() or 1))
            self._closer_ids = self._closing_token_ids()
        return self._compiler

    def compiled_grammar(self, schema: dict[str, Any]) -> Any:
        key = schema_key(schema)
        if key in self._grammars:
            self._grammars.move_to_end(key)
            return self._grammars[key]
        # any_whitespace=False: the grammar fixes the separators (", " and ": "), so a model
        # cannot fill its budget with whitespace between tokens; strings cannot hold raw
        # newlines in JSON. String length is bounded only by a schema's own maxLength (xgrammar
        # unrolls it, so keep it modest: 4000 takes ~6 s to compile) and by the closing
        # reserve (see `_closing_token_ids`).
        compiled = self._grammar_compiler().compile_json_schema(key, any_whitespace=False, strict_mode=True)
        self._grammars[key] = compiled
        if len(self._grammars) > 256:
            self._grammars.popitem(last=False)
        return compiled

    def _closing_token_ids(self) -> tuple[Any, Any]:
        """Ids of tokens made only of JSON closers (", ], }), as (starting with a quote, the rest)."""
        # These ASCII characters are their own token strings in SentencePiece and byte-level
        # BPE vocabularies alike, so the raw token strings suffice (decoding 262k ids is slow).
        closers = {'"', "]", "}"}
        tokens = self.tokenizer.convert_ids_to_tokens(list(range(min(len(self.tokenizer), self.vocab_size))))
        ids = [i for i, token in enumerate(tokens) if token and set(token) <= closers]
        as_tensor = lambda chosen: self.torch.tensor(chosen, dtype=self.torch.long)  # noqa: E731
        return (
            as_tensor([i for i in ids if tokens[i].startswith('"')]),
            as_tensor([i for i in ids if not tokens[i].startswith('"')]),
        )

    # -- generation

    def generate(self, requests: list[ChatRequest], is_cancelled: list[Any]) -> list[ChatResult | LLMError]:
        """Generate answers for `requests` together; one result or error per request, in order."""
        import xgrammar as xgr

        torch = self.torch
        errors: dict[int, LLMError] = {}
        rows: list[_Row] = []
        for index, request in enumerate(requests):
            try:
                rows.append(self._row_for(index, request))
            except LLMError as error:
                errors[index] = error
        for row in rows:
            if row.max_new == 0:
                row.finish_reason = "length"
        rows_to_run = [row for row in rows if row.finish_reason is None]
        if rows_to_run:
            with torch.inference_mode():
                self._decode(rows_to_run, is_cancelled, xgr)
        results = {row.index: self._result(row) for row in rows}
        return [errors[i] if i in errors else results[i] for i in range(len(requests))]

    def _row_for(self, index: int, request: ChatRequest) -> _Row:
        torch = self.torch
        ids = prompt_token_ids(self.tokenizer, request.messages)
        max_new = max(0, int(request.max_tokens))
        if self.max_positions:
            room = self.max_positions - len(ids)
            if room <= 0:
                raise LLMError("prompt_too_long", f"{len(ids)} prompt tokens; the model takes {self.max_positions}")
            max_new = min(max_new, room)
        matcher = None
        if request.json_schema is not None:
            import xgrammar as xgr

            try:
                matcher = xgr.GrammarMatcher(self.compiled_grammar(request.json_schema))
            except Exception as exc:  # xgrammar raises RuntimeError/ValueError on bad schemas
                raise LLMError("invalid_json_schema", _xgrammar_message(exc)) from exc
        generator = None
        if request.temperature > 0 and request.seed is not None:
            generator = torch.Generator().manual_seed(int(request.seed))
        return _Row(
            index=index,
            prompt_ids=ids,
            max_new=max_new,
            temperature=float(request.temperature),
            generator=generator,
            matcher=matcher,
            stop_strings=PLAIN_STOP_STRINGS if self.plain_layout and matcher is None else (),
            reserve=closing_reserve(max_new) if matcher is not None else 0,
        )

    def _decode(self, rows: list[_Row], is_cancelled: list[Any], xgr: Any) -> None:
        """Prefill all prompts (left-padded), then decode step by step, dropping finished rows."""
        from transformers import DynamicCache

        torch = self.torch
        width = max(len(row.prompt_ids) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
            attention[i, width - len(row.prompt_ids) :] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        bitmask = xgr.allocate_token_bitmask(len(rows), self.vocab_size)
        batch_matcher = xgr.BatchGrammarMatcher() if hasattr(xgr, "BatchGrammarMatcher") else None
        active = list(rows)
        step_input = input_ids
        while active:
            out = self.model(
                input_ids=step_input,
                attention_mask=attention,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            cache = out.past_key_values
            logits = out.logits[:, -1, :]
            if logits.shape[-1] > self.vocab_size:
                logits = logits[:, : self.vocab_size]
            chosen = self._choose(active, logits, bitmask, batch_matcher, xgr)
            keep = []
            for i, (row, token) in enumerate(zip(active, chosen)):
                self._advance(row, token)
                if row.finish_reason is None and is_cancelled[row.index]():
                    row.finish_reason = "cancelled"
                if row.finish_reason is None:
                    keep.append(i)
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, dtype=torch.long)
                cache.batch_select_indices(index)
                attention = attention[index]
                positions = positions[index]
                active = [active[i] for i in keep]
            step_input = torch.tensor([[row.tokens[-1]] for row in active], dtype=torch.long)
            attention = torch.cat([attention, torch.ones((len(active), 1), dtype=torch.long)], dim=1)
            positions = positions[:, -1:] + 1

    def _choose(self, active: list[_Row], logits: Any, bitmask: Any, batch_matcher: Any, xgr: Any) -> list[int]:
        torch = self.torch
        constrained = [i for i, row in enumerate(active) if row.matcher is not None]
        if constrained:
            matchers = [active[i].matcher for i in constrained]
            if batch_matcher is not None and len(constrained) > 1:
                batch_matcher.batch_fill_next_token_bitmask(matchers, bitmask, indices=constrained)
            else:
                for i, matcher in zip(constrained, matchers):
                    matcher.fill_next_token_bitmask(bitmask, i)
            xgr.apply_token_bitmask_inplace(logits, bitmask[: len(active)], indices=constrained)
            for i in constrained:
                row = active[i]
                if row.max_new - len(row.tokens) <= row.reserve:
                    self._prefer_closers(row, logits[i])
        chosen = []
        for i, row in enumerate(active):
            if row.temperature <= 0:
                chosen.append(int(torch.argmax(logits[i])))
            else:
                probs = torch.softmax(logits[i] / row.temperature, dim=-1)
                chosen.append(int(torch.multinomial(probs, 1, generator=row.generator)))
        return chosen

    def _prefer_closers(self, row: _Row, row_logits: Any) -> None:
        """Near the end of the budget, steer a JSON answer to its shortest finish.

        A small model can loop inside a JSON string until max_tokens and leave unparseable
        JSON. In the last `row.reserve` tokens: text the grammar forces anyway (keys,
        separators) is emitted in as few tokens as the tokenizer allows, and where the
        model still has a choice, a closer (", ], }) is taken when the grammar allows one.
        Cutting content short this way is reported as finish_reason "length" with
        extra["forced_close"].
        """
        torch = self.torch
        forced_text = row.matcher.find_jump_forward_string()
        if forced_text:
            ids = self.tokenizer.encode(forced_text, add_special_tokens=False)
            if ids and ids[0] < row_logits.shape[-1] and bool(torch.isfinite(row_logits[ids[0]])):
                _keep_only(row_logits, torch.tensor(ids[:1]))
                return
        # Inside a string only a quote closes; outside, a quote would open a new string.
        quote_closers, bracket_closers = self._closer_ids
        text = self.tokenizer.decode(row.tokens)
        closers = quote_closers if inside_json_string(text) else bracket_closers
        if closers.numel() == 0:
            return
        allowed = torch.isfinite(row_logits[closers])
        if not bool(allowed.any()):
            return
        free_choice = int(torch.argmax(row_logits))
        _keep_only(row_logits, closers[allowed])
        if int(torch.argmax(row_logits)) != free_choice:
            row.forced_close = True

    def _advance(self, row: _Row, token: int) -> None:
        """Record one generated token and decide whether the row is finished."""
        if token in self.stop_ids:
            row.finish_reason = "stop"
            return
        if row.matcher is not None:
            if not row.matcher.accept_token(token):
                row.finish_reason = "grammar_rejected"
                return
        row.tokens.append(token)
        if row.matcher is not None and row.matcher.is_terminated():
            row.finish_reason = "stop"
        elif row.stop_strings and self._hit_stop_string(row):
            row.finish_reason = "stop"
        elif len(row.tokens) >= row.max_new:
            row.finish_reason = "length"

    def _hit_stop_string(self, row: _Row) -> bool:
        # Each token is at least one character, so the last len(stop) tokens cover any match.
        window = max(len(s) for s in row.stop_strings) + 1
        tail = self.tokenizer.decode(row.tokens[-window:], skip_special_tokens=True)
        return any(s in tail for s in row.stop_strings)

    def _result(self, row: _Row) -> ChatResult:
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        if row.stop_strings:
            text = truncate_at_stop_string(text, row.stop_strings).strip()
        if row.matcher is not None:
            text = escape_control_chars(text)
        finish = row.finish_reason or "length"
        if finish == "grammar_rejected":
            finish = "length"  # cannot happen with a correct mask; keep the contract's values
        extra: dict[str, Any] = {}
        if row.matcher is not None and finish == "stop" and row.forced_close:
            finish = "length"
            extra["forced_close"] = True
        return ChatResult(
            text=text,
            prompt_tokens=len(row.prompt_ids),
            completion_tokens=len(row.tokens),
            finish_reason=finish,
            extra=extra,
        )


# Set to 0 to keep torch's default linear kernel (what `backend.onednn_linears: false` does).
ONEDNN_ENV = "TRACE_BUILD_ONEDNN"


def _onednn_linear(hidden: Any, weight: Any, bias: Any) -> Any:
    import torch

    return torch.ops.mkldnn._linear_pointwise(hidden, weight, bias, "none", [], "")


def use_onednn_linears(model: Any) -> bool:
    """Run the model's float32 Linear layers on oneDNN's kernel; False where it is not available.

    A decode step multiplies a few rows by each weight matrix. For such shapes torch's
    default float32 matmul (MKL) is slow on some CPUs: on the 2-core AMD EPYC dev box,
    gemma's 262k-token output layer took 59 ms for 1 row but 140 and 220 ms for 2 and 3, so
    a batch cost as much as answering its requests one by one; oneDNN took 53, 64 and 64 ms,
    and a whole decode step got 20% faster at batch 1, 2.4x at batch 3. The math is the
    same float32, summed in another order (logits differ by ~1e-4).

    The kernel is a private torch op (`torch.ops.mkldnn._linear_pointwise`), so it is trusted
    only where it is proven: it is checked against F.linear at every weight shape the model
    has, with decode-sized inputs, before any layer uses it; a torch build without it, or where
    it disagrees, keeps F.linear. A layer whose call fails at generation time goes back to
    F.linear for good (one warning), rather than failing the batch. `TRACE_BUILD_ONEDNN=0`
    turns it off.
    """
    import torch

    if os.environ.get(ONEDNN_ENV, "1") == "0":
        return False
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.weight.dtype == torch.float32]
    try:
        linear = torch.ops.mkldnn._linear_pointwise
        if not torch.backends.mkldnn.is_available():
            return False
        seeded = torch.Generator().manual_seed(0)  # leaves the global RNG to the caller
        with torch.inference_mode():
            for out_features, in_features in {tuple(m.weight.shape) for m in layers}:
                x, w = (
                    torch.randn(*shape, generator=seeded)
                    for shape in ((3, 2, in_features), (out_features, in_features))
                )
                b = torch.randn(out_features, generator=seeded)
                if not torch.allclose(linear(x, w, b, "none", [], ""), torch.nn.functional.linear(x, w, b), atol=1e-3):
                    return False
    except Exception:  # noqa: BLE001 - no mkldnn in this build, or another signature: keep the default
        return False

    def forward(module: Any, hidden: Any) -> Any:
        # Reads the weight at call time, so tied weights stay tied.
        try:
            return _onednn_linear(hidden, module.weight, module.bias)
        except RuntimeError as exc:
            log.warning("oneDNN linear failed (%s): this layer goes back to torch's default kernel", str(exc)[:80])
            del module.forward  # the class's own forward again
            return torch.nn.functional.linear(hidden, module.weight, module.bias)

    for module in layers:
        module.forward = forward.__get__(module)
    return True


def _keep_only(row_logits: Any, token_ids: Any) -> None:
    """Set every logit to -inf except those of `token_ids` (in place)."""
    kept = row_logits[token_ids].clone()
    row_logits.fill_(float("-inf"))
    row_logits[token_ids] = kept
