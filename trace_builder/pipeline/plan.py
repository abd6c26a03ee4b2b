"""`trace-build plan`: run a pilot of K seeds through every stage, measure it per row, project the whole run.

The pilot's rows are the run's own first rows (the first seeds a plain run takes, or the
first seeds of a target-size run's first admission round, with the plans that round gives
them), and its answers go to the run's cache: the run asks none of them again, and the
projection covers the whole run, pilot included. The pilot grows until the projection is as
precise as asked (`grown_pilot`).

Per row and stage, what a fresh run would ask is counted (`Meter`): every answer the backend
gives, and every answer an earlier session had left in the cache; an answer repeated inside
the pilot is not (the run gets it from the cache too). Costs are fitted as a straight line in
the constraint count (more constraints: more answers until full marks, longer judgements), and
yields read as admission reads a run's (`yield_curve`: falling about geometrically), then
summed over the rows the run will have: a plain run's known plans, or the seeds a target-size
run's admission rounds take (`forecast_admission`).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy
from rich.console import Console

from trace_builder.config import DEFAULT_PILOT, MAX_PILOT, PILOT_PRECISION, RunConfig
from trace_builder.errors import UserError
from trace_builder.llm.base import ChatRequest, ChatResult
from trace_builder.llm.cache import RequestCache
from trace_builder.llm.client import ROW_PROGRESS
from trace_builder.llm.factory import make_backend
from trace_builder.llm.roles import ROLES, cost_of, open_role_clients, role_of
from trace_builder.pipeline.admission import (
    MEET_ODDS,
    SIDES,
    QuotaAdmission,
    measure_yields,
    play_rounds,
    rows_needed,
    seeds_to_meet,
    side_targets,
    yield_curve,
)
from trace_builder.pipeline.context import StageContext
from trace_builder.pipeline.filter import side_quota
from trace_builder.pipeline.registry import STAGES, stage_fingerprints
from trace_builder.pipeline.seeds_stage import plain_run_seeds, seed_row, write_seed_shards
from trace_builder.prompts import prompts_digest
from trace_builder.run.folder import plan_dir, plan_path
from trace_builder.run.progress import format_duration
from trace_builder.run.store import StageStore, read_json, write_json_atomic
from trace_builder.taxonomy import plan_for_seed

MAX_PILOT_PASSES = 4
# Simulated runs behind a target-size run's forecast of its admission rounds.
FORECAST_RUNS = 200
FORECAST_SAMPLES = 20  # of them trimmed to TRACE's shape as the filter trims a short split
METRICS = ("requests", "prompt_tokens", "completion_tokens")
# The row-wise stages in chain order: `RowProgress.stage` is an index into this list.
ROW_STAGES = tuple(s.name for s in STAGES if s.row_wise)
# A target-size run admits in rounds and each round drains before the next: about this many
# sequential row chains on top of the throughput-bound part (bench_fidelity: 3 rounds).
TARGET_RUN_ROUNDS = 3


# -- measuring ----------------------------------------------------------------------------


class Meter:
    """What a fresh run would ask, per (row, stage): every answer the backend gave, and every
    answer an earlier session had already cached (a repeat inside the pilot is a cache hit in
    the run too, so it is not counted)."""

    def __init__(self) -> None:
        self.costs: dict[tuple[int | None, str], dict[str, int]] = {}
        self.latencies: list[float] = []
        self.reused = 0  # answers found in the cache from an earlier session
        self.cached_here: set[str] = set()  # keys this pilot put in the cache
        self.measured = 0  # rows an earlier pass of a growing pilot measured: not counted again
        self.started = time.perf_counter()

    def count(self, result: ChatResult, sign: int = 1) -> None:
        progress = ROW_PROGRESS.get()
        if progress is not None and progress.order < self.measured:
            return  # (a request the earlier pass counted, asked again because no answer was cached)
        where = (progress.order, ROW_STAGES[progress.stage]) if progress is not None else (None, "seeds")
        cost = self.costs.setdefault(where, dict.fromkeys(METRICS, 0))
        cost["requests"] += sign
        cost["prompt_tokens"] += sign * result.prompt_tokens
        cost["completion_tokens"] += sign * result.completion_tokens


class MeteredCache:
    """The run's answer cache, telling the meter about answers an earlier session left there."""

    def __init__(self, inner: RequestCache, meter: Meter):
        self.inner, self.meter, self.path = inner, meter, inner.path
        self._reused: dict[str, ChatResult] = {}

    def __getattr__(self, name: str) -> Any:  # the rest of the cache's interface, unmetered
        return getattr(self.inner, name)

    def get(self, key: str) -> ChatResult | None:
        result = self.inner.get(key)
        if result is not None and key not in self.meter.cached_here:
            self.meter.cached_here.add(key)
            self.meter.reused += 1
            self.meter.count(result)
            self._reused[key] = result
        return result

    def reject(self, key: str) -> None:
        """The client found a cached answer invalid and asks again: that answer was not reused after all."""
        self.inner.reject(key)
        result = self._reused.pop(key, None)
        if result is not None:  # called in the asking row's task, like the get before it
            self.meter.reused -= 1
            self.meter.count(result, sign=-1)
            self.meter.cached_here.discard(key)

    def put(self, key: str, model: str, result: ChatResult) -> None:
        self.inner.put(key, model, result)
        self.meter.cached_here.add(key)

    def __len__(self) -> int:
        return len(self.inner)


class MeteredBackend:
    """A backend that tells the meter about each answer (rejected ones cost a request too) and its latency."""

    def __init__(self, inner, meter: Meter):
        self.inner, self.meter = inner, meter

    def __getattr__(self, name: str) -> Any:  # model, name, preflight, start: the backend's own
        return getattr(self.inner, name)

    async def complete(self, request: ChatRequest) -> ChatResult:
        started = time.perf_counter()
        result = await self.inner.complete(request)
        self.meter.latencies.append(time.perf_counter() - started)
        self.meter.count(result)
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()


# -- the pilot ----------------------------------------------------------------------------


def pilot_config(config: RunConfig) -> RunConfig:
    """The run's settings for the pilot's own folder: rows come from its seeds shards, not from quotas."""
    pilot = direct_config(config)
    pilot.target.train_rows = None
    pilot.seeds.limit = None
    return pilot


def direct_config(config: RunConfig) -> RunConfig:
    """The run's settings with every role asking directly: the pilot measures (answer times among
    them), and a batch may take a day. Its answers are cached as a batch's would be."""
    direct = config.model_copy(deep=True)
    direct.backend.batch = False
    direct.roles = {role: {k: v for k, v in spec.items() if k != "batch"} for role, spec in config.roles.items()}
    return direct


def batched(config: RunConfig) -> bool:
    return any(config.backend_for(role).batch for role in ROLES)


async def first_rows(ctx: StageContext, scratch: Path) -> tuple[list[dict], list[str] | None]:
    """The seed rows the run itself will process first, in order (a target-size run's first admission
    round, with its plans), and the ids of all the seeds a plain run will take (None for a target-size
    run: it admits as it goes)."""
    config = ctx.config
    if config.target.enabled:
        # The run's first admission round, exactly as QuotaAdmission sizes it from an empty run.
        seeds = StageStore(scratch, "seeds")
        seeds.clear()
        admission = QuotaAdmission(ctx, seeds, StageStore(scratch, "perturb"))
        await admission.prepare()
        return await admission.next_round(), None
    chosen = await plain_run_seeds(ctx, Counter())
    return [seed_row(s) for s in chosen], [s.id for s in chosen]


async def run_pilot(config: RunConfig, run_dir: Path, k: int, console: Console, meter: Meter) -> dict[str, Any]:
    """Run the run's first `k` rows through every stage (answers cached in the run's cache); the
    measurements. A growing pilot passes the same `meter` again: rows it measured before are answered
    from the cache and not counted twice."""
    from trace_builder.pipeline.runner import run_pipeline

    run_dir = Path(run_dir)
    folder = plan_dir(run_dir) / "pilot"
    cache = MeteredCache(RequestCache(run_dir / "cache.sqlite"), meter)
    pilot = pilot_config(config)
    client = await open_role_clients(pilot, cache, lambda settings: MeteredBackend(make_backend(settings), meter))
    ctx = StageContext(config, folder, client)
    try:
        available, run_seed_ids = await first_rows(ctx, plan_dir(run_dir) / "scratch")
        rows = available[:k]
        if not rows:
            raise UserError("the run has no seeds to pilot: check --seeds, --limit and seeds.languages")
        what = (
            f"{len(rows) - meter.measured} more of the run's seeds ({len(rows)} in all)"
            if meter.measured
            else f"the run's first {len(rows)} seeds"
        )
        console.print(f"[bold]pilot:[/bold] {what} through every stage", highlight=False)
        seeds = StageStore(folder, "seeds")
        seeds.clear()
        seeds.begin(stage_fingerprints(pilot, prompts_digest())["seeds"], -(-len(rows) // pilot.shard_size))
        write_seed_shards(seeds, rows, pilot.shard_size)
        seeds.finish("done", {}, 0.0)
        names = [s.name for s in STAGES if s.name != "seeds"]
        await run_pipeline(pilot, folder, names, fresh=True, console=console, client=client, card=False)
    finally:
        await client.aclose()
        cache.close()
    meter.measured = len(rows)
    taxonomy = StageStore(folder, "taxonomy").read(["planned_count", "split"])
    by_task = {stage: StageStore(folder, stage).manifest.get("usage_by_task") or {} for stage in ROW_STAGES}
    done = StageStore(folder, "perturb").read(["status", "split", "constraint_count", "dpo_status", "iopo_status"])
    ok = done[(done["status"] == "ok") & (done["split"] != "eval")]  # eval rows are given no pairs
    # Per constraint count: (rows that also made the pair, rows) of the usable train rows.
    pairs = {
        side: {int(c): [int((g[f"{side}_status"] == "ok").sum()), len(g)] for c, g in ok.groupby("constraint_count")}
        for side in ("dpo", "iopo")
    }
    # Usable as admission counts it (ok at the chain's end, prompt not a repeat), per planned count.
    measured = measure_yields(StageStore(folder, "taxonomy"), StageStore(folder, "perturb"))
    return {
        "rows": len(rows),
        "available": len(available),  # rows the pilot could grow to
        "run_seed_ids": run_seed_ids,
        "counts": [int(c) for c in taxonomy["planned_count"]],
        "sides": [str(side) for side in taxonomy["split"]],
        "costs": meter.costs,
        "admitted_by_count": dict(measured["admitted"]),
        "usable_by_count": dict(measured["usable_by_count"]),  # whatever side (a plain run's have none)
        "reused": meter.reused,
        "latencies": meter.latencies,
        "wall_seconds": time.perf_counter() - meter.started,
        "usage_by_task": by_task,
        "pairs_by_count": pairs,
    }


# -- projecting ---------------------------------------------------------------------------


def fit_line(points: list[tuple[float, float, float]]) -> tuple[float, float]:
    """Weighted least squares y = a + b x over (x, y, weight); a flat line when x does not vary."""
    mass = sum(w for _, _, w in points)
    if mass <= 0:
        return 0.0, 0.0
    mx = sum(x * w for x, _, w in points) / mass
    my = sum(y * w for _, y, w in points) / mass
    var = sum(w * (x - mx) ** 2 for x, _, w in points)
    if var <= 1e-12:
        return my, 0.0
    slope = sum(w * (x - mx) * (y - my) for x, y, w in points) / var
    return my - slope * mx, slope


def per_row_costs(measures: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """stage -> metric -> the pilot's cost of each row (rows in admission order)."""
    n = measures["rows"]
    out = {s: {m: [0.0] * n for m in METRICS} for s in ROW_STAGES}
    for (order, stage), cost in measures["costs"].items():
        if order is not None and order < n and stage in out:
            for metric in METRICS:
                out[stage][metric][order] += cost[metric]
    return out


def fixed_costs(measures: dict[str, Any]) -> dict[str, int]:
    """What no row asked (seed synthesis): asked once per run, not per row."""
    total = dict.fromkeys(METRICS, 0)
    for (order, _), cost in measures["costs"].items():
        if order is None:
            for metric in METRICS:
                total[metric] += cost[metric]
    return total


def yield_by_count(measures: dict[str, Any], counts: list[int]) -> dict[int, float]:
    """Usable rows per admitted row, per constraint count: the pilot's rows read as admission reads a
    run's (`yield_curve`)."""
    return yield_curve(measures["usable_by_count"], measures["admitted_by_count"], counts)


def forecast_admission(config: RunConfig, measures: dict[str, Any], budget: float) -> dict[str, dict]:
    """What a target-size run admits within `budget`, and the usable rows it gets, per (side, count):
    admission's round rule played forward (`play_rounds`), usable rows drawn at the pilot's yields
    (`yield_by_count`), averaged over FORECAST_RUNS runs. Rounds sized on partial yields overshoot
    (small quotas the most), and the forecast keeps that overshoot where need / yield would not."""
    need = rows_needed(config)
    yields = yield_by_count(measures, sorted({c for _, c in need}))
    rng = numpy.random.default_rng(config.seed)
    admitted_total: Counter = Counter()
    usable_total: Counter = Counter()
    samples: list[Counter] = []
    for _ in range(FORECAST_RUNS):
        usable, admitted, _ = play_rounds(need, yields, budget, rng)
        admitted_total.update(admitted)
        usable_total.update(usable)
        if len(samples) < FORECAST_SAMPLES:
            samples.append(usable)
    return {
        "admitted": {key: n / FORECAST_RUNS for key, n in admitted_total.items()},
        "usable": {key: n / FORECAST_RUNS for key, n in usable_total.items()},
        "usable_samples": samples,  # the first runs' usable rows, each as it fell
    }


def forecast(config: RunConfig, measures: dict[str, Any], budget: float = math.inf) -> dict[str, dict]:
    """`forecast_admission`, made once per budget and kept in `measures`."""
    forecasts = measures.setdefault("forecasts", {})
    if budget not in forecasts:
        forecasts[budget] = forecast_admission(config, measures, budget)
    return forecasts[budget]


def by_count(per_key: dict[tuple[str, int], float], sides: tuple[str, ...] = SIDES) -> dict[int, float]:
    """(side, count) -> n summed per count over `sides`."""
    rows: dict[int, float] = {}
    for (side, count), n in per_key.items():
        if side in sides:
            rows[count] = rows.get(count, 0) + n
    return rows


def run_rows_by_count(config: RunConfig, measures: dict[str, Any], sides: tuple[str, ...] = SIDES) -> dict[int, float]:
    """How many rows of each constraint count the run will process (seeds admitted for `sides`, in a
    target-size run)."""
    if not config.target.enabled:
        tax = config.taxonomy
        rows: dict[int, float] = {}
        for seed_id in measures["run_seed_ids"]:  # a plain run's plans are known in advance: one per seed
            c = plan_for_seed(
                seed_id, config.seed, tax.count_histogram, tax.weights or None, tax.max_per_dimension
            ).count
            rows[c] = rows.get(c, 0) + 1
        return rows
    return by_count(forecast(config, measures, config.target.seed_budget)["admitted"], sides)


def seeds_needed(config: RunConfig, measures: dict[str, Any]) -> int:
    """Seeds a target-size run admits to meet every quota in MEET_ODDS of runs, budget aside: the
    budget to pass. (The forecast's mean is met only about as often as not.)"""
    need = rows_needed(config)
    yields = yield_by_count(measures, sorted({c for _, c in need}))
    return seeds_to_meet(need, yields, numpy.random.default_rng(config.seed))


def projected_rows(config: RunConfig, measures: dict[str, Any], run_rows: dict[int, float]) -> dict[str, int]:
    """The final rows per dataset the run will build: a target-size run's sides as the filter takes them
    from the usable rows its admission gets within the budget (each quota met, or a short side trimmed
    to TRACE's shape), or a plain run's usable rows split as the filter splits them. dpo and iopo: the
    pilot's shares of usable rows that also made them, and a split that takes only some of its
    usable rows takes those with pairs first (`filter.pairs_first`)."""
    rates = {side: pair_rate(measures, side) for side in ("dpo", "iopo")}
    if config.target.enabled:
        taken = final_rows_by_run(config, measures)
        usable = forecast(config, measures, config.target.seed_budget)["usable_samples"]
        runs = len(taken["train"])
        sft = round(sum(sum(quota.values()) for quota in taken["train"]) / runs)
        evals = round(sum(sum(quota.values()) for quota in taken["eval"]) / len(taken["eval"]))
        pairs = {
            side: round(
                sum(
                    min(n, usable[run].get(("train", c), 0) * rate(c))
                    for run, quota in enumerate(taken["train"])
                    for c, n in quota.items()
                )
                / runs
            )
            for side, rate in rates.items()
        }
    else:
        yields = yield_by_count(measures, list(run_rows))
        mix = {c: n * yields[c] for c, n in run_rows.items()}
        kept = sum(mix.values())
        evals = round(min(config.filter.eval_size, config.filter.eval_max_share * kept))
        train = kept - evals
        sft = round(min(train, config.filter.train_size if config.filter.train_size is not None else train))
        share = {side: sum(n * rate(c) for c, n in mix.items()) / kept if kept else 0.0 for side, rate in rates.items()}
        pairs = {side: round(min(sft, train * share[side])) for side in rates}
    return {"sft": sft, **pairs, "eval": evals}


def final_rows_by_run(config: RunConfig, measures: dict[str, Any]) -> dict[str, list[dict[int, int]]]:
    """Per side, the rows per count the filter takes in each of the forecast's first runs (within the
    budget): trimmed run by run, since a short side's size hangs on its scarcest count, and the mean
    of those minima is below the minimum of the means."""
    tolerance = config.target.shortfall_tolerance
    # Kept with the forecast, per tolerance: a short side's trim scans every size.
    made = forecast(config, measures, config.target.seed_budget)
    kept = made.setdefault("final_rows", {})
    if tolerance not in kept:
        taken: dict[str, list[dict[int, int]]] = {side: [] for side in SIDES}
        for usable in made["usable_samples"]:
            for side, (rows, histogram) in side_targets(config).items():
                available = Counter({c: n for (s, c), n in usable.items() if s == side})
                taken[side].append(side_quota(rows, histogram, available, tolerance))
        kept[tolerance] = taken
    return kept[tolerance]


def short_ranges(config: RunConfig, measures: dict[str, Any]) -> dict[str, list[int]]:
    """A target-size run whose budget leaves a split short: the least and most final rows of that split
    (sft, eval) across the forecast's runs; empty when every run meets the target."""
    names = {"train": "sft", "eval": "eval"}
    ranges = {}
    for side, quotas in final_rows_by_run(config, measures).items():
        sizes = [sum(q.values()) for q in quotas]
        if min(sizes) < side_targets(config)[side][0]:
            ranges[names[side]] = [min(sizes), max(sizes)]
    return ranges


def pair_rate(measures: dict[str, Any], side: str) -> Callable[[int], float]:
    """The share of usable train rows that also make `side` (dpo or iopo) at a constraint count: the
    pilot's shares per count, fitted as a line in the count."""
    pairs = measures["pairs_by_count"][side]
    a, b = fit_line([(c, made / n, n) for c, (made, n) in pairs.items() if n])
    return lambda count: min(max(a + b * count, 0.0), 1.0)


def project(
    config: RunConfig,
    measures: dict[str, Any],
    run_rows: dict[int, float],
    latency_s: float | None = None,
) -> dict[str, Any]:
    """The whole run from the pilot: seeds, requests, tokens, wall time, cost, per stage."""
    costs = per_row_costs(measures)
    counts = measures["counts"]
    n_pilot = len(counts)
    # A plain run's pilot rows are its first rows: measured exactly, the rest fitted.
    exact = not config.target.enabled
    rest = dict(run_rows)
    if exact:
        for c in counts:
            rest[c] = max(rest.get(c, 0) - 1, 0)
    # A target run's eval rows get no pairs, and eval quotas take a share of the later rounds the pilot
    # does not show: perturb's cost is fitted on the pilot's train rows and spent on the run's.
    sides = measures.get("sides") or [None] * n_pilot
    pairs_only_train = config.target.enabled and "train" in sides
    stages: dict[str, dict[str, Any]] = {}
    for stage in ROW_STAGES:
        pilot_rows, rows = range(n_pilot), rest
        if stage == "perturb" and pairs_only_train:
            pilot_rows = [i for i in range(n_pilot) if sides[i] != "eval"]
            rows = run_rows_by_count(config, measures, ("train",))
        projected = {}
        for metric in METRICS:
            values = costs[stage][metric]
            a, b = fit_line([(counts[i], values[i], 1.0) for i in pilot_rows])
            fitted = sum(max(a + b * c, 0.0) * n for c, n in rows.items())
            projected[metric] = round(fitted + (sum(values) if exact else 0))
        projected["requests_per_seed"] = round(sum(costs[stage]["requests"]) / max(n_pilot, 1), 2)
        stages[stage] = projected
    fixed = fixed_costs(measures)
    if fixed["requests"]:
        stages["seeds"] = {**fixed, "requests_per_seed": None}
    totals = {m: sum(s[m] for s in stages.values()) for m in METRICS}
    seeds = round(sum(run_rows.values()))
    wall = None
    if latency_s is not None and not batched(config):  # batch mode: waves x the provider's turnaround
        per_row = totals["requests"] / max(seeds, 1)  # sequential requests of one row
        rounds = TARGET_RUN_ROUNDS if config.target.enabled else 1
        wall = round(totals["requests"] * latency_s / config.backend.concurrency + rounds * per_row * latency_s, 1)
    return {
        "seeds": seeds,
        **totals,
        "batch": projected_waves(config, costs, totals["requests"], seeds),
        "wall_seconds": wall,
        "cost_usd": projected_cost(config, measures, stages),
        "concurrency": config.backend.concurrency,
        "relative_sd": relative_sd(config, measures, costs, seeds),
        "rows_by_count": {c: round(n, 1) for c, n in sorted(run_rows.items())},
        "stages": stages,
    }


def projected_waves(config: RunConfig, costs: dict, requests: int, seeds: int) -> dict[str, int] | None:
    """Batch mode: the waves the run takes. Each wave carries one request of every row in flight (a
    wave's worth of rows) and a row's requests are sequential, so: the full waves its requests make,
    then `depth` more (the pilot's most requests of one row: perturb's two sides counted one after the
    other, an over-count) for the last rows; a run of fewer rows than a wave takes `depth` waves."""
    if not batched(config):
        return None
    n = len(next(iter(costs.values()))["requests"]) if costs else 0
    depth = round(max((sum(costs[stage]["requests"][i] for stage in ROW_STAGES) for i in range(n)), default=0))
    size = config.batch.wave_size
    waves = depth if seeds <= size else math.ceil(requests / size) + depth - 1
    return {"waves": waves, "wave_size": size, "depth": depth, "requests_per_wave": round(requests / max(waves, 1))}


def projected_cost(config: RunConfig, measures: dict[str, Any], stages: dict[str, dict[str, Any]]) -> float | None:
    """Dollars for the projected tokens at each role's prices: a stage's tokens are split over the
    tasks (so the roles) in the shares its pilot used (all the generator's when the pilot asked nothing)."""
    usage: dict[str, dict[str, float]] = {}
    for stage, projected in stages.items():
        measured = measures.get("usage_by_task", {}).get(stage) or {}
        for metric in ("prompt_tokens", "completion_tokens"):
            total = sum(u.get(metric, 0) for u in measured.values())
            shares = {tag: u.get(metric, 0) / total for tag, u in measured.items()} if total else {f"{stage}.x": 1.0}
            for tag, share in shares.items():
                usage.setdefault(tag, {}).setdefault(metric, 0.0)
                usage[tag][metric] += projected[metric] * share
    for tag, tokens in usage.items():  # batch mode: every request through a batch (waves below min_wave aside)
        if config.backend_for(role_of(tag)).batch:
            tokens["batched_prompt_tokens"] = tokens.get("prompt_tokens", 0.0)
            tokens["batched_completion_tokens"] = tokens.get("completion_tokens", 0.0)
    return cost_of(usage, config)


def relative_sd(config: RunConfig, measures: dict[str, Any], costs: dict, seeds: int) -> float | None:
    """One standard deviation of the projected requests, relative: the spread of the pilot's
    per-row requests and, in a target-size run, of its yield (seeds needed go as 1 / yield)."""
    n = measures["rows"]
    per_row = [sum(costs[stage]["requests"][i] for stage in ROW_STAGES) for i in range(n)]
    if n < 2 or not sum(per_row):
        return None
    mean = sum(per_row) / n
    sd = math.sqrt(sum((r - mean) ** 2 for r in per_row) / (n - 1))
    cost_rel = sd / mean / math.sqrt(n)
    if not config.target.enabled:  # the pilot's rows are part of the run: only the rest is uncertain
        return round(cost_rel * math.sqrt(max(0.0, 1 - n / max(seeds, 1))), 3)
    admitted, usable = sum(measures["admitted_by_count"].values()), sum(measures["usable_by_count"].values())
    y = usable / admitted if admitted else 0.0
    yield_rel = math.sqrt((1 - y) / (y * admitted)) if 0 < y < 1 else 0.0
    return round(math.sqrt(cost_rel**2 + yield_rel**2), 3)


def _latency(measures: dict[str, Any], run_dir: Path) -> float | None:
    """The pilot's mean answer time; an earlier plan's when the pilot was answered from the cache."""
    latencies = measures["latencies"]
    if len(latencies) >= 5:
        return sum(latencies) / len(latencies)
    return (read_json(plan_path(run_dir)) or {}).get("pilot", {}).get("latency_s")


def grown_pilot(rows: int, spread: float | None, precision: float, available: int) -> int:
    """The pilot size at which one sd of the projection (`spread` at `rows`, shrinking as one over the
    square root of the rows) comes within `precision`; at least half as large again, within what the
    run has and MAX_PILOT."""
    if spread is None or spread <= precision:
        return rows
    wanted = max(math.ceil(rows * (spread / precision) ** 2), math.ceil(rows * 1.5)) if precision > 0 else available
    return max(rows, min(wanted, available, MAX_PILOT))


async def make_plan(
    config: RunConfig,
    run_dir: Path,
    *,
    pilot: int = DEFAULT_PILOT,
    precision: float = PILOT_PRECISION,
    console: Console | None = None,
) -> dict[str, Any]:
    """Pilot, project, and keep the result beside the run (`<run>/plan/plan.json`, read by progress and
    status). The pilot starts at `pilot` seeds and grows while the projection is less precise than
    `precision` (one sd of the projected requests, relative)."""
    console = console or Console(stderr=True)
    run_dir = Path(run_dir)
    meter, size = Meter(), pilot
    for _ in range(MAX_PILOT_PASSES):
        measures = await run_pilot(config, run_dir, size, console, meter)
        latency = _latency(measures, run_dir)
        run_rows = run_rows_by_count(config, measures)
        plan = project(config, measures, run_rows, latency)
        size = grown_pilot(measures["rows"], plan["relative_sd"], precision, measures["available"])
        if size <= measures["rows"]:
            break
        console.print(
            f"pilot: {measures['rows']} seeds project requests ±{plan['relative_sd']:.1%} (one sd), wider than "
            f"--precision {precision:.0%}: growing it to {size} seeds",
            highlight=False,
        )
    plan["projected"] = projected_rows(config, measures, run_rows)
    if config.target.enabled:
        plan["seeds_needed"] = seeds_needed(config, measures)
        plan["short_ranges"] = short_ranges(config, measures)
        plan["seed_budget"] = config.target.seed_budget
    done = {m: sum(c[m] for c in measures["costs"].values()) for m in METRICS}
    usable = sum(measures["usable_by_count"].values())
    plan["pilot"] = {
        "seeds": measures["rows"],
        **done,
        "answers_from_earlier_sessions": measures["reused"],
        "usable_rows": usable,
        "yield": round(usable / max(measures["rows"], 1), 3),
        "latency_s": None if latency is None else round(latency, 4),
        "wall_seconds": round(measures["wall_seconds"], 1),
    }
    plan["prices_per_million"] = {role: config.prices_for(role).model_dump() for role in ROLES}
    plan["settings"] = config.describe()
    plan["created"] = time.time()
    write_json_atomic(plan_path(run_dir), plan)
    return plan


def plan_table_rows(plan: dict[str, Any]) -> list[list[str]]:
    """stage, requests, prompt tokens, completion tokens: one line per stage and the total."""
    rows = [[name] + [f"{s[m]:,}" for m in METRICS] for name, s in plan["stages"].items()]
    return rows + [["total"] + [f"{plan[m]:,}" for m in METRICS]]


def plan_summary_lines(plan: dict[str, Any]) -> list[str]:
    """The pilot's figures and the run's seeds, wall time and cost, in two lines."""
    pilot = plan["pilot"]
    wall = "unknown (no answer was timed)" if plan["wall_seconds"] is None else format_duration(plan["wall_seconds"])
    if plan.get("batch") is not None:
        wall = f"{plan['batch']['waves']:,} x the provider's batch turnaround (up to 24 h each)"
    cost = "no prices given (--price-in/--price-out)" if plan["cost_usd"] is None else f"${plan['cost_usd']:,.2f}"
    projected = ", ".join(f"{name} {n:,}" for name, n in plan["projected"].items())
    lines = [
        f"pilot: {pilot['seeds']} seeds, {pilot['requests']} requests, {pilot['yield']:.0%} usable rows per seed, "
        f"{pilot['latency_s'] or '?'} s per answer ({pilot['answers_from_earlier_sessions']} answers already cached)",
        f"run: {plan['seeds']:,} seeds, wall {wall} at concurrency {plan['concurrency']}, cost {cost}"
        + ("" if plan["relative_sd"] is None else f"; requests and cost ±{plan['relative_sd']:.0%} (one sd)"),
        f"builds: {projected}",
    ]
    if ranges := plan.get("short_ranges"):
        spread = ", ".join(f"{name} {low:,} to {high:,}" for name, (low, high) in ranges.items())
        lines[-1] += f" (short of the target, they vary from run to run: {spread} across the forecast's runs)"
    if (batch := plan.get("batch")) is not None:
        lines.append(
            f"batch mode: about {batch['waves']:,} waves of up to {batch['wave_size']:,} requests "
            f"({batch['requests_per_wave']:,} on average; a row's {batch['depth']} requests at most are sequential), "
            "each answered within 24 h; cost at the batch discount (docs/batch.md)"
        )
    if plan.get("seeds_needed", 0) > plan.get("seed_budget", math.inf):
        lines.append(
            f"warning: the target needs {plan['seeds_needed']:,} seeds (met in {MEET_ODDS:.0%} of runs) and the "
            f"budget is {plan['seed_budget']:,}: pass --max-seeds {plan['seeds_needed']:,} to meet it "
            "(the numbers above are what the budget buys)"
        )
    return lines
