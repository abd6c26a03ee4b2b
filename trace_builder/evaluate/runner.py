"""Run an evaluation: the model under test answers every item, the judge scores it; chunked, cached, resumable.

Each item goes generate -> judge on its own (no barrier between the two steps), many
items at once. Results land in chunks of `chunk_size` items, each written atomically as
<out>/predictions/part-XXXXX.parquet and <out>/judgements/part-XXXXX.parquet; a chunk
with both files is never redone. Every LLM answer is cached in <out>/cache.sqlite, so an
interrupted run re-asks nothing that was answered, even inside an unfinished chunk.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from trace_builder.errors import LLMError, UserError
from trace_builder.evaluate.items import EvalItem
from trace_builder.evaluate.metrics import GENERATION_FAILED, JUDGE_FAILED, OK
from trace_builder.evaluate.settings import EvalConfig, eval_fingerprint
from trace_builder.llm.base import ChatRequest
from trace_builder.llm.client import LLMClient
from trace_builder.store import read_json, shard_name, write_json_atomic, write_table_atomic

GENERATE_TAG = "eval.generate"
JUDGE_TAG = "eval.judge"
MANIFEST = "eval.json"

PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("language", pa.string()),
        pa.field("category", pa.string()),
        pa.field("constraint_count", pa.int32()),
        pa.field("system", pa.string()),
        pa.field("prompt", pa.string()),
        pa.field("response", pa.string()),
        pa.field("status", pa.string()),  # ok | generation_failed
        pa.field("reason", pa.string()),
        pa.field("finish_reason", pa.string()),
        pa.field("completion_tokens", pa.int64()),
    ]
)

JUDGEMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("language", pa.string()),
        pa.field("constraint_count", pa.int32()),
        pa.field("constraints", pa.list_(pa.string())),
        pa.field("dimensions", pa.list_(pa.string())),
        pa.field("dimension_labels", pa.list_(pa.string())),
        pa.field("status", pa.string()),  # ok | generation_failed | judge_failed
        pa.field("reason", pa.string()),
        pa.field("scores", pa.list_(pa.int32())),  # null unless status == ok
        pa.field("decided_by", pa.list_(pa.string())),
        pa.field("details", pa.list_(pa.string())),
        pa.field("followed", pa.bool_()),  # null unless status == ok
    ]
)

JudgeFn = Callable[..., Awaitable[Any]]


def items_digest(items: Sequence[EvalItem]) -> str:
    digest = hashlib.sha256()
    for item in items:
        blob = json.dumps([item.id, item.system, item.prompt, item.constraints, item.checks], ensure_ascii=False, default=str)
        digest.update(blob.encode("utf-8"))
    return digest.hexdigest()[:16]


@dataclass
class ItemOutcome:
    """One item's prediction row and judgement row."""

    prediction: dict[str, Any]
    judgement: dict[str, Any]


@dataclass
class EvalRunStats:
    items: int = 0
    skipped_items: int = 0  # in chunks finished by an earlier run
    chunks_written: int = 0
    generation_failed: int = 0
    judge_failed: int = 0
    wall_s: float = 0.0
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return sum(u.get("requests", 0) for u in self.usage.values())

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else 0.0


def _failed_judgement(item: EvalItem, status: str, reason: str) -> dict[str, Any]:
    return _judgement_row(item, status, reason, None, None, None)


def _judgement_row(item, status, reason, scores, decided_by, details) -> dict[str, Any]:
    return {
        "id": item.id,
        "language": item.language,
        "constraint_count": item.constraint_count,
        "constraints": list(item.constraints),
        "dimensions": list(item.dimensions),
        "dimension_labels": list(item.dimension_labels or item.dimensions),
        "status": status,
        "reason": reason,
        "scores": scores,
        "decided_by": decided_by,
        "details": details,
        "followed": None if scores is None else all(s >= 10 for s in scores),
    }


def _prediction_row(item: EvalItem, response: str, status: str, reason: str, finish: str | None, tokens: int) -> dict:
    return {
        "id": item.id,
        "source": item.source,
        "language": item.language,
        "category": item.category,
        "constraint_count": item.constraint_count,
        "system": item.system,
        "prompt": item.prompt,
        "response": response,
        "status": status,
        "reason": reason,
        "finish_reason": finish or "",
        "completion_tokens": tokens,
    }


async def evaluate_item(
    item: EvalItem,
    model: LLMClient,
    judge: LLMClient,
    config: EvalConfig,
    judge_fn: JudgeFn,
) -> ItemOutcome:
    """Answer one item with the model under test, then judge that answer."""
    request = ChatRequest(
        messages=tuple(item.messages()),
        temperature=config.generation.temperature,
        max_tokens=config.generation.max_tokens,
        seed=config.generation.seed,
        task=GENERATE_TAG,
    )
    try:
        result = await model.complete(request, GENERATE_TAG)
    except LLMError as exc:
        return ItemOutcome(
            _prediction_row(item, "", GENERATION_FAILED, exc.reason, None, 0),
            _failed_judgement(item, GENERATION_FAILED, exc.reason),
        )
    response = result.text
    prediction = _prediction_row(item, response, OK, "", result.finish_reason, result.completion_tokens)
    if not response.strip():
        # An empty answer follows no instruction; asking a judge about it would only add noise.
        count = item.constraint_count
        return ItemOutcome(
            prediction,
            _judgement_row(item, OK, "empty_response", [0] * count, ["code"] * count, ["empty response"] * count),
        )
    try:
        judgement = await judge_fn(
            judge,
            language=item.language,
            description=item.description,
            constraints=list(item.constraints),
            input_text=item.input_text,
            response=response,
            checks=list(item.checks) if item.checks else None,
            mode=config.judging.mode,
            tag=JUDGE_TAG,
            temperature=config.judging.temperature,
            tokens_per_constraint=config.judging.tokens_per_constraint,
        )
    except LLMError as exc:
        return ItemOutcome(prediction, _failed_judgement(item, JUDGE_FAILED, exc.reason))
    verdicts = list(judgement.verdicts)
    if len(verdicts) != item.constraint_count:
        return ItemOutcome(prediction, _failed_judgement(item, JUDGE_FAILED, "judge_count_mismatch"))
    return ItemOutcome(
        prediction,
        _judgement_row(
            item,
            OK,
            "",
            [int(v.score) for v in verdicts],
            [str(v.decided_by) for v in verdicts],
            [str(v.detail) for v in verdicts],
        ),
    )


class _RateColumn(ProgressColumn):
    """Items per second since the task started, and the failures so far."""

    def render(self, task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        failed = task.fields.get("failed", 0)
        style = "red" if failed else "dim"
        shown = f"{rate:6.1f}" if rate >= 1 or rate == 0 else f"{rate:6.3f}"  # a local CPU model is slow
        return Text(f"{shown}/s  failed {failed}", style=style)


def _progress(console: Console | None, enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )


def chunk_done(out_dir: Path, index: int) -> bool:
    return (out_dir / "predictions" / shard_name(index)).exists() and (out_dir / "judgements" / shard_name(index)).exists()


def check_resumable(out_dir: Path, fingerprint: str, fresh: bool) -> dict[str, Any]:
    """The manifest to continue from; refuses to mix outputs of different settings."""
    manifest = read_json(out_dir / MANIFEST)
    if manifest is not None and manifest.get("fingerprint") != fingerprint:
        has_chunks = any((out_dir / "judgements").glob("part-*.parquet"))
        if has_chunks and not fresh:
            raise UserError(
                f"{out_dir} holds an eval with other data or settings (model {manifest.get('model', {}).get('model')!r}, "
                f"judge {manifest.get('judge', {}).get('model')!r}): pass a new --out, or --fresh to replace it"
            )
        manifest = None
    if fresh:
        for folder in ("predictions", "judgements"):
            for part in (out_dir / folder).glob("part-*.parquet"):
                part.unlink()
        manifest = None
    return manifest or {}


async def run_eval(
    items: Sequence[EvalItem],
    out_dir: Path,
    model: LLMClient,
    judge: LLMClient,
    config: EvalConfig,
    *,
    judge_fn: JudgeFn | None = None,
    fresh: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
    data_path: str = "",
) -> EvalRunStats:
    """Evaluate every item not already in a finished chunk; returns what this run did."""
    if judge_fn is None:
        from trace_builder.judge import judge_response

        judge_fn = judge_response
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = eval_fingerprint(config, items_digest(items))
    manifest = check_resumable(out_dir, fingerprint, fresh)
    # Chunk files are named by index, so a resumed run keeps the chunk size it started with.
    size = manifest.get("chunk_size") if manifest.get("chunks") else config.chunk_size
    chunks = [list(items[i : i + size]) for i in range(0, len(items), size)]
    pending = [i for i in range(len(chunks)) if not chunk_done(out_dir, i)]
    manifest.update(
        {
            "fingerprint": fingerprint,
            "data": data_path or manifest.get("data", ""),
            "items": len(items),
            "chunk_size": size,
            "chunks_total": len(chunks),
            "model": {"kind": config.model.kind, "model": config.model.model},
            "judge": {"kind": config.judge.kind, "model": config.judge.model},
            "config": config.model_dump(mode="json", exclude={"model": {"api_key"}, "judge": {"api_key"}}),
            "status": "running",
        }
    )
    manifest.setdefault("chunks", {})
    write_json_atomic(out_dir / MANIFEST, manifest)

    stats = EvalRunStats(items=sum(len(chunks[i]) for i in pending))
    stats.skipped_items = len(items) - stats.items
    started = time.perf_counter()
    # Enough items in flight to keep both the model's and the judge's slots busy, few
    # enough that chunks finish roughly in order (so an interruption loses little).
    window = asyncio.Semaphore(max(4, 2 * (config.model.concurrency + config.judge.concurrency)))
    buffers: dict[int, dict[int, ItemOutcome]] = {i: {} for i in pending}

    with _progress(console, show_progress) as progress:
        gen_bar = progress.add_task("generate", total=stats.items, failed=0)
        judge_bar = progress.add_task("judge", total=stats.items, failed=0)

        errors: list[BaseException] = []

        async def one(chunk_index: int, position: int, item: EvalItem) -> None:
            try:
                outcome = await _observed(item, model, judge, config, judge_fn, progress, gen_bar, judge_bar)
            except Exception as exc:
                errors.append(exc)
                raise
            finally:
                window.release()
            buffers[chunk_index][position] = outcome
            if outcome.judgement["status"] == GENERATION_FAILED:
                stats.generation_failed += 1
                progress.update(gen_bar, failed=stats.generation_failed)
            elif outcome.judgement["status"] == JUDGE_FAILED:
                stats.judge_failed += 1
                progress.update(judge_bar, failed=stats.judge_failed)
            if len(buffers[chunk_index]) == len(chunks[chunk_index]):
                _write_chunk(out_dir, chunk_index, buffers.pop(chunk_index), manifest)
                stats.chunks_written += 1

        tasks: list[asyncio.Task] = []
        try:
            for chunk_index in pending:
                for position, item in enumerate(chunks[chunk_index]):
                    await window.acquire()
                    # A UserError (bad key, model not served) or a bug stops the run at
                    # once instead of after every other item has failed the same way.
                    if errors:
                        raise errors[0]
                    tasks.append(asyncio.create_task(one(chunk_index, position, item)))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            stats.wall_s = time.perf_counter() - started
            stats.usage = {tag: model.usage_for(tag) for tag in (GENERATE_TAG,)}
            stats.usage[JUDGE_TAG] = judge.usage_for(JUDGE_TAG)
            manifest["status"] = "done" if all(chunk_done(out_dir, i) for i in range(len(chunks))) else "partial"
            manifest.setdefault("runs", []).append(
                {
                    "finished": time.time(),
                    "items": stats.items,
                    "wall_s": round(stats.wall_s, 3),
                    "requests_per_s": round(stats.requests_per_s, 3),
                    "usage": stats.usage,
                }
            )
            write_json_atomic(out_dir / MANIFEST, manifest)
    return stats


async def _observed(item, model, judge, config, judge_fn, progress: Progress, gen_bar, judge_bar) -> ItemOutcome:
    """evaluate_item, with the bars advanced as each step ends: 'generate' when the answer
    exists, 'judge' when the item is finished."""
    answered = False

    async def judge_after_answer(*args, **kwargs):
        nonlocal answered
        answered = True
        progress.advance(gen_bar)
        return await judge_fn(*args, **kwargs)

    outcome = await evaluate_item(item, model, judge, config, judge_after_answer)
    if not answered:  # generation failed, or an empty answer that needs no judge
        progress.advance(gen_bar)
    progress.advance(judge_bar)
    return outcome


def _write_chunk(out_dir: Path, index: int, outcomes: dict[int, ItemOutcome], manifest: dict[str, Any]) -> None:
    ordered = [outcomes[i] for i in sorted(outcomes)]
    predictions = pa.Table.from_pylist([o.prediction for o in ordered], schema=PREDICTION_SCHEMA)
    judgements = pa.Table.from_pylist([o.judgement for o in ordered], schema=JUDGEMENT_SCHEMA)
    # Predictions first: a chunk counts as done only once its judgements exist too.
    write_table_atomic(out_dir / "predictions" / shard_name(index), predictions)
    write_table_atomic(out_dir / "judgements" / shard_name(index), judgements)
    manifest["chunks"][str(index)] = {
        "rows": len(ordered),
        "judged": sum(1 for o in ordered if o.judgement["status"] == OK),
    }
    write_json_atomic(out_dir / MANIFEST, manifest)


@dataclass
class EvalOutcome:
    stats: EvalRunStats
    metrics: dict[str, Any]


async def evaluate_path(
    data: Path | str,
    out_dir: Path | str,
    config: EvalConfig,
    *,
    fresh: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
    judge_fn: JudgeFn | None = None,
) -> EvalOutcome:
    """The whole eval: load the items, open both backends, run, then metrics.json and the reports."""
    from trace_builder.evaluate.loading import load_items
    from trace_builder.evaluate.results import finalize
    from trace_builder.llm.cache import RequestCache
    from trace_builder.llm.factory import make_backend, preflight

    out_dir = Path(out_dir)
    items = load_items(data, limit=config.limit, sample=config.sample)
    # Settings are checked before any backend loads a model: a wrong --out fails in a second.
    if not fresh and read_json(out_dir / MANIFEST) is not None:
        check_resumable(out_dir, eval_fingerprint(config, items_digest(items)), fresh=False)
    model_backend = make_backend(config.model)
    same = config.judge == config.model
    judge_backend = model_backend if same else make_backend(config.judge)
    cache = RequestCache(out_dir / "cache.sqlite")
    try:
        await preflight(model_backend)
        if not same:
            try:
                await preflight(judge_backend)
            except UserError as exc:
                # The backend's advice names --model/--base-url; for the judge they are --judge-*.
                advice = str(exc).replace("--model", "--judge-model").replace("--base-url", "--judge-base-url")
                raise UserError(f"judge: {advice}") from None
        model = LLMClient(model_backend, cache, concurrency=config.model.concurrency)
        # One server, one limit: a judge on the same backend shares the model's client.
        judge = model if same else LLMClient(judge_backend, cache, concurrency=config.judge.concurrency)
        stats = await run_eval(
            items,
            out_dir,
            model,
            judge,
            config,
            judge_fn=judge_fn,
            fresh=fresh,
            show_progress=show_progress,
            console=console,
            data_path=str(data),
        )
    finally:
        await model_backend.aclose()
        if not same:
            await judge_backend.aclose()
        cache.close()
    boot = config.bootstrap
    metrics = finalize(out_dir, resamples=boot.resamples, seed=boot.seed, confidence=boot.confidence)
    return EvalOutcome(stats, metrics)
