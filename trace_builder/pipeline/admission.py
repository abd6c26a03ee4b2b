"""Where a row chain's input comes from: stored shards, or seeds admitted round by round until quotas are met.

A target-size run (`--train-rows N --eval-rows M`) does not know up front how many seeds it
needs: attrition grows with the constraint count and differs by dimension. `QuotaAdmission`
admits seeds in rounds. Each round's plans (constraint count and dimensions per seed) are
sized from the yields measured on every earlier round, and the round is written as seed
shards before its rows run, so a resumed run continues exactly where it stopped; a round
starts only when the rows of the previous one have passed the last stage that can fail them
(`Stage.fails_rows`: respond), which keeps every decision a function of what is on disk while
those rows go on through perturb.

Every seed belongs to one side, train or eval, for good (`seed_side`): its rows, reuses
included, fill only that side's quotas, so no seed reaches both splits.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence

import numpy as np

from trace_builder.pipeline.context import StageContext
from trace_builder.pipeline.seeds_stage import seed_pool, seed_row, synthesize_seeds, write_seed_shards
from trace_builder.run.store import StageStore
from trace_builder.seeds import Seed, normalise, select_seeds
from trace_builder.taxonomy import DIMENSION_IDS, sample_constraint_plan

# Pseudo-counts that pull a count's (or dimension's) measured yield towards the run's overall
# yield while it has few rows of its own.
_PRIOR_ROWS = 5
_FIRST_ROUND_YIELD = 1.0
# The least yield a constraint count is planned with (usable rows per admitted row): a count that has
# not yielded yet still gets a finite number of seeds. The overall yield has a higher floor.
MIN_YIELD = 0.02
_MIN_OVERALL_YIELD = 0.05


def largest_remainder(total: int, weights: Sequence[float]) -> dict[int, int]:
    """`total` split over constraint counts 1..len(weights) in proportion to `weights`, summing exactly."""
    return {count: int(q) for count, q in enumerate(largest_remainders([total], weights)[0], start=1) if q > 0}


def largest_remainders(totals: Sequence[int], weights: Sequence[float]) -> np.ndarray:
    """`largest_remainder` of each of `totals` at once: one row per total, one column per count.

    Each total's exact shares are floored, and the units left go to the largest remainders
    (ties to the lower count).
    """
    totals = np.asarray(totals, dtype=np.int64)
    exact = totals[:, None] * np.asarray(weights, dtype=float) / sum(weights)
    quota = np.floor(exact).astype(np.int64)
    order = np.argsort(quota - exact, axis=1, kind="stable")  # largest remainder first, then lower count
    place = np.argsort(order, axis=1, kind="stable")  # each count's position in that order
    return quota + (place < (totals - quota.sum(axis=1))[:, None])


def side_targets(config) -> dict[str, tuple[int, list[float]]]:
    """Rows wanted per side, and the constraint-count histogram they follow (TRACE's by default)."""
    target, tax = config.target, config.taxonomy
    return {
        "train": (target.train_rows or 0, tax.count_histogram),
        "eval": (target.eval_rows, tax.eval_count_histogram),
    }


def rows_needed(config) -> dict[tuple[str, int], int]:
    """Rows to admit for per (side, count): the quota, above it by the margin the filter may drop
    (rounded: a ceiling would double the many quotas of 1 that a small eval split has)."""
    margin = 1 + config.target.margin
    return {
        (side, c): max(n, round(n * margin))
        for side, (rows, histogram) in side_targets(config).items()
        for c, n in largest_remainder(rows, histogram).items()
    }


def count_quotas(config) -> tuple[dict[int, int], dict[int, int]]:
    """Rows wanted per constraint count, for train and for eval."""
    return tuple(largest_remainder(rows, histogram) for rows, histogram in side_targets(config).values())


SIDES = ("train", "eval")


def _hash_unit(*parts: object) -> float:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def seed_sides(seed_ids: Sequence[str], recorded: dict[str, str], eval_share: float, run_seed: int) -> dict[str, str]:
    """The side (train or eval) of every seed: the one its rows already have, else eval for a hash of
    the seed id below `eval_share` (so a growing pool and a resumed run decide alike), with at least
    one seed on each side that wants rows while two or more have no side yet."""
    draws = {s: _hash_unit(run_seed, "side", s) for s in seed_ids if s not in recorded}
    sides = dict(recorded)
    sides.update({s: "eval" if u < eval_share else "train" for s, u in draws.items()})
    for side, wanted in (("eval", eval_share > 0), ("train", eval_share < 1)):
        if wanted and side not in sides.values() and len(draws) >= 2:
            sides[min(draws, key=draws.get) if side == "eval" else max(draws, key=draws.get)] = side
    return {s: sides[s] for s in seed_ids}


class RowSource:
    """A row chain's input: shards of `store`, yielded as they may be processed.

    This base serves an input stage that is complete: its shards, in order.
    """

    def __init__(self, store: StageStore):
        self.store = store
        self.total_shards = store.manifest.get("total_shards") or 0
        self.total_rows = store.rows_written()
        self.on_growth: Callable[[int], None] = lambda rows: None  # more rows admitted (progress bars)

    async def prepare(self) -> None:
        """Work before the first shard (loading a seed pool)."""

    async def shards(self) -> AsyncIterator[int]:
        for index in range(self.total_shards):
            yield index

    def shard_done(self, index: int) -> None:
        """The last stage of the chain has written shard `index`."""

    def finish(self) -> list[str]:
        """Close the source; lines for the run summary."""
        return []


class QuotaAdmission(RowSource):
    """Admit seeds with plans for the (side, constraint count) quotas still short."""

    def __init__(self, ctx: StageContext, seeds: StageStore, last: StageStore):
        super().__init__(seeds)
        self.ctx, self.last = ctx, last
        self.need = rows_needed(ctx.config)
        target = ctx.config.target
        self.eval_share = target.eval_rows / ((target.train_rows or 0) + target.eval_rows)
        self.pool: list[Seed] = []
        self.dropped: Counter = Counter()  # seeds overlapping a known eval set, per set
        self._pending: set[int] = set()
        self._idle: asyncio.Event | None = None

    async def prepare(self) -> None:
        cfg = self.ctx.config
        pool = await seed_pool(self.ctx, self.dropped, synthesize_to=cfg.seeds.synthesize_to)
        # The pool (at most seeds.limit) in a balanced order: languages and domains take turns.
        self.pool = select_seeds(pool, cfg.seeds.limit or len(pool), rng_seed=cfg.seed)
        rounds = self.store.manifest.get("rounds", [])
        committed = {i for r in rounds for i in r.get("shards", [])}
        if all("shards" in r for r in rounds):  # (rounds of older runs did not list their shards)
            if orphans := self.store.done_shards() - committed:
                self.store.forget_shards(orphans)  # of a round whose writing was cut short
        self.total_shards = len(self.store.done_shards())
        self.total_rows = self.store.rows_written()
        # What rounds are already written, also when this run admits none (a rerun re-asking failures).
        self.store.manifest["total_shards"] = self.total_shards

    # -- the engine's side -------------------------------------------------------------
    async def shards(self) -> AsyncIterator[int]:
        self._idle = asyncio.Event()
        # Rounds written by an earlier, interrupted run go first.
        for index in sorted(self.store.done_shards()):
            self._pending.add(index)
            yield index
        while True:
            await self._wait_idle()
            batch = await self.next_round()
            if not batch:
                return
            first = max(self.store.done_shards(), default=-1) + 1
            indices = write_seed_shards(self.store, batch, self.ctx.config.shard_size, first)
            # The round counts once all its shards are written: a run killed halfway through writing
            # them drops the written ones when it resumes (`prepare`) and plans the same round again.
            by_count = Counter(row["planned_count"] for row in batch)
            self.store.manifest.setdefault("rounds", []).append(
                {
                    "admitted": len(batch),
                    "by_count": {str(c): n for c, n in sorted(by_count.items())},
                    "shards": indices,
                }
            )
            self.total_shards += len(indices)
            self.total_rows += len(batch)
            self.store.manifest["total_shards"] = self.total_shards
            self.store.save()
            self.on_growth(len(batch))
            for index in indices:
                self._pending.add(index)
                yield index

    def shard_done(self, index: int) -> None:
        self._pending.discard(index)
        if not self._pending and self._idle is not None:
            self._idle.set()

    async def _wait_idle(self) -> None:
        while self._pending:
            self._idle.clear()
            await self._idle.wait()

    # -- measuring and planning ----------------------------------------------------------
    def measure(self) -> dict:
        return measure_yields(self.store, self.last)

    async def next_round(self) -> list[dict]:
        cfg = self.ctx.config
        state = self.measure()
        short = self._short(state)
        self._record(state)
        left = cfg.target.seed_budget - state["seeds"]
        if not short or left <= 0:
            return []
        wanted = scale_to(seeds_wanted(short, state["usable"], state["admitted"], state["seeds"]), left)
        items = [key for key, n in sorted(wanted.items()) for _ in range(n)]
        rng = random.Random(f"{cfg.seed}-round-{len(self.store.manifest.get('rounds', []))}")
        rng.shuffle(items)
        taken = await self._take_seeds(Counter(side for side, _ in items), state)
        weights = self._dimension_weights(state, overall_yield(state["usable"], state["seeds"]))
        rows = []
        for side, count in items:
            if not taken[side]:
                continue  # this side has no seed left to take (the pool ran out under `stop`)
            seed, use = taken[side].pop()
            histogram = [0.0] * (count - 1) + [1.0]
            plan = sample_constraint_plan(
                random.Random(f"{cfg.seed}-{seed.id}-{use}"), histogram, weights, cfg.taxonomy.max_per_dimension
            )
            rows.append(seed_row(seed, use, (plan.count, list(plan.dimensions)), split=side))
        return rows

    def _dimension_weights(self, state: dict, overall: float) -> dict[str, float]:
        """Sampling weights that steer the kept constraints towards the configured dimension shares."""
        base = {d: float(self.ctx.config.taxonomy.weights.get(d, 1.0)) for d in DIMENSION_IDS}
        mass = sum(base.values())
        total = sum(c * n for (_, c), n in self.need.items())
        weights = {}
        for dim, weight in base.items():
            deficit = weight / mass * total - state["usable_dims"][dim]
            dim_yield = _smoothed(state["usable_dims"][dim], state["admitted_dims"][dim], overall)
            # A small floor keeps every dimension drawable: a 15-constraint plan needs many of them.
            weights[dim] = max(deficit, 0.0) / dim_yield + 1e-3 * weight / mass * total
        return weights

    async def _take_seeds(self, wanted: Counter, state: dict) -> dict[str, list[tuple[Seed, int]]]:
        """The next (seed, use) pairs per side, last to be taken first: unused seeds of that side
        first, then synthesis or reuse as configured.

        A reused seed gets a new plan and its own `use` number, so its rows have new ids.
        """
        policy = self.ctx.config.target.when_seeds_run_out
        used = {(seed_id, use) for seed_id, use in state["uses"]}
        short = sum(max(0, n - self._fresh_count(side, used, state)) for side, n in wanted.items())
        if short and policy == "synthesize" and self.ctx.client is not None:
            known = {s.id for s in self.pool}
            grown = await synthesize_seeds(self.ctx, self.pool, len(self.pool) + short, self.dropped)
            self.pool += [s for s in grown if s.id not in known]
        sides = self._sides(state)
        taken: dict[str, list[tuple[Seed, int]]] = {}
        for side in SIDES:
            mine = [s for s in self.pool if sides[s.id] == side]
            n = wanted.get(side, 0)
            picks = [(s, 0) for s in mine if (s.id, 0) not in used][:n]
            use = 1
            while len(picks) < n and policy != "stop" and mine:
                picks += [(s, use) for s in mine if (s.id, use) not in used][: n - len(picks)]
                use += 1
            taken[side] = picks[::-1]
        return taken

    def _sides(self, state: dict) -> dict[str, str]:
        return seed_sides([s.id for s in self.pool], state["sides"], self.eval_share, self.ctx.config.seed)

    def _fresh_count(self, side: str, used: set, state: dict) -> int:
        sides = self._sides(state)
        return sum(1 for s in self.pool if sides[s.id] == side and (s.id, 0) not in used)

    def seeds_to_meet(self, state: dict) -> int:
        """Seeds still to admit for every quota to be met (in MEET_ODDS of runs), at the yields the rows so
        far show (`yield_curve`)."""
        yields = yield_curve(state["usable_by_count"], state["admitted"], {c for _, c in self.need})
        rng = np.random.default_rng(self.ctx.config.seed)
        return seeds_to_meet(self.need, yields, rng, state["usable"], state["admitted"], state["seeds"])

    def wants_more(self) -> bool:
        """Quotas unmet and budget left: a finished run given a larger target or budget goes on admitting."""
        state = self.measure()
        return bool(self._short(state)) and state["seeds"] < self.ctx.config.target.seed_budget

    def _short(self, state: dict) -> dict[tuple[str, int], int]:
        """Usable rows still missing per (side, count)."""
        return {
            key: need - state["usable"][key] for key, need in sorted(self.need.items()) if state["usable"][key] < need
        }

    def _record(self, state: dict) -> None:
        quota: dict[str, dict] = {}
        for (side, c), need in sorted(self.need.items()):
            quota.setdefault(side, {})[str(c)] = {"need": need, "usable": state["usable"][side, c]}
        self.store.manifest["quota"] = quota
        self.store.manifest["admitted"] = state["seeds"]
        self.store.manifest["seeds_by_side"] = dict(Counter(state["sides"].values()))
        self.store.manifest["decontaminated"] = dict(self.dropped)
        self.store.save()

    def finish(self) -> list[str]:
        state = self.measure()
        self._record(state)
        short = self._short(state)
        budget = self.ctx.config.target.seed_budget
        if short:
            why = "the seed budget is spent" if state["seeds"] >= budget else "the seeds ran out"
            more = self.seeds_to_meet(state)
            note = (
                f"quota shortfall ({why}: {state['seeds']} of {budget} seeds admitted): "
                + ", ".join(f"{side} {c} constraints {n}/{self.need[side, c]} short" for (side, c), n in short.items())
                + f"; {more} more seeds meet it in {MEET_ODDS:.0%} of runs: rerun with --max-seeds {state['seeds'] + more}"
                + " (a ceiling: admission stops once the quotas are met)"
            )
            self.store.manifest["seeds_to_meet_target"] = more
        else:
            note = f"quotas met: {state['seeds']} seeds admitted in {len(self.store.manifest.get('rounds', []))} rounds (budget {budget})"
        self.store.manifest["notes"] = [note]
        client = self.ctx.client
        usage, by_task = (client.usage_for("seeds"), client.usage_by_task("seeds")) if client else ({}, {})
        self.store.finish("done", usage, 0.0, usage_by_task=by_task)
        return [note]


def measure_yields(seeds_store: StageStore, last: StageStore) -> dict:
    """Admitted rows per count and dimension, usable rows (ok at the chain's end, prompt not a repeat)
    per (side, count), per count and per dimension, and each admitted seed's side, from the shards on
    disk."""
    seeds = seeds_store.read(["seed_id", "use", "split", "planned_count", "planned_dimensions"])
    done = last.read(["status", "prompt", "split", "constraint_count", "dimensions"])
    admitted = Counter(seeds["planned_count"].astype(int)) if len(seeds) else Counter()
    admitted_dims: Counter = Counter()
    for dims in seeds.get("planned_dimensions", []):
        admitted_dims.update(list(dims))
    usable: Counter = Counter()
    usable_dims: Counter = Counter()
    if len(done):
        ok = done[done["status"] == "ok"]
        ok = ok[~ok["prompt"].map(normalise).duplicated()]
        usable.update(zip(ok["split"], ok["constraint_count"].astype(int)))
        for dims in ok["dimensions"]:
            usable_dims.update(list(dims))
    usable_by_count: Counter = Counter()
    for (_, count), n in usable.items():
        usable_by_count[count] += n
    return {
        "admitted": admitted,
        "usable": usable,
        "usable_by_count": usable_by_count,
        "admitted_dims": admitted_dims,
        "usable_dims": usable_dims,
        "seeds": len(seeds),
        "uses": seeds[["seed_id", "use"]].values.tolist() if len(seeds) else [],
        "sides": dict(zip(seeds["seed_id"], seeds["split"])) if len(seeds) else {},
    }


def overall_yield(usable: Counter, seeds: int) -> float:
    """Usable rows per admitted seed so far (a first round takes every row to be usable), floored."""
    return max(sum(usable.values()) / seeds if seeds else _FIRST_ROUND_YIELD, _MIN_OVERALL_YIELD)


def seeds_wanted(short: dict[tuple[str, int], int], usable: Counter, admitted: Counter, seeds: int) -> dict:
    """Admission's round rule: seeds to admit per (side, count) for the rows still `short`, at the
    yield each count has shown so far (`usable` per (side, count), `admitted` per count, `seeds` in
    all), pulled towards the overall yield while a count has few rows. `trace-build plan` forecasts a
    run by playing this rule forward."""
    overall = overall_yield(usable, seeds)
    return {
        key: math.ceil(n / _smoothed(sum(usable[side, key[1]] for side in SIDES), admitted[key[1]], overall))
        for key, n in short.items()
    }


def _smoothed(usable: int, admitted: int, overall: float) -> float:
    return max((usable + _PRIOR_ROWS * overall) / (admitted + _PRIOR_ROWS), MIN_YIELD)


# A played-forward run stops after this many rounds, met or not (a real run stops at its budget).
MAX_PLAYED_ROUNDS = 100


def play_rounds(
    need: dict[tuple[str, int], int],
    yields: dict[int, float],
    budget: float,
    rng: np.random.Generator,
    usable: Counter | None = None,
    admitted: Counter | None = None,
    seeds: int = 0,
) -> tuple[Counter, Counter, int]:
    """One run of admission's round rule (`seeds_wanted`) played forward from a state (`usable` per
    (side, count), `admitted` per count, `seeds` in all; a fresh run by default): each round's usable
    rows drawn at `yields` per count, until every quota in `need` is met or `budget` seeds are in.
    Returns the usable rows and the seeds this play admitted, per (side, count), and the seeds in all."""
    usable, admitted, added = Counter(usable), Counter(admitted), Counter()
    for _ in range(MAX_PLAYED_ROUNDS):
        short = {key: n - usable[key] for key, n in need.items() if usable[key] < n}
        if not short or seeds >= budget:
            break
        for key, n in scale_to(seeds_wanted(short, usable, admitted, seeds), budget - seeds).items():
            usable[key] += int(rng.binomial(n, yields[key[1]]))
            admitted[key[1]] += n
            added[key] += n
            seeds += n
    return usable, added, seeds


# How many rows of its own a count needs to weigh as much as the run's yield curve (`yield_curve`).
_CURVE_ROWS = 20
# How sure "N more seeds meet the target" is: the N that met it in this share of played-forward runs.
MEET_ODDS = 0.9
_MEET_RUNS = 200


def seeds_to_meet(
    need: dict[tuple[str, int], int],
    yields: dict[int, float],
    rng: np.random.Generator,
    usable: Counter | None = None,
    admitted: Counter | None = None,
    seeds: int = 0,
) -> int:
    """Seeds to admit beyond `seeds` for every quota to be met in MEET_ODDS of runs: admission's
    rounds played forward from the state at `yields`, budget aside. One round's need / yield is met
    only about as often as not, and a short count of one row at a low yield far less often."""
    added = sorted(
        play_rounds(need, yields, math.inf, rng, usable, admitted, seeds)[2] - seeds for _ in range(_MEET_RUNS)
    )
    return added[min(math.ceil(MEET_ODDS * _MEET_RUNS), _MEET_RUNS) - 1]


def yield_curve(usable: Mapping[int, int], admitted: Mapping[int, int], counts: Iterable[int]) -> dict[int, float]:
    """Each count's yield (usable rows per admitted row, both given per count), read off its own rows
    where it has many and off the run's curve where it has few.

    The curve is log-linear in the count (a constraint met with some chance each: yields fall about
    geometrically), fitted over every count weighted by its rows (a count with no usable row counts
    half of one); a count's own rows then weigh against _CURVE_ROWS rows at the curve. A high count
    with a few failed rows of its own is neither planned at the run's average nor taken as impossible."""
    points = [(c, math.log(max(usable.get(c, 0), 0.5) / n), n) for c, n in admitted.items() if n]
    mass = sum(w for _, _, w in points)
    if not mass:
        return dict.fromkeys(counts, _FIRST_ROUND_YIELD)
    mc, my = sum(c * w for c, _, w in points) / mass, sum(y * w for _, y, w in points) / mass
    spread = sum(w * (c - mc) ** 2 for c, _, w in points)
    slope = min(sum(w * (c - mc) * (y - my) for c, y, w in points) / spread, 0.0) if spread > 1e-12 else 0.0
    curve = {c: min(math.exp(my + slope * (c - mc)), 1.0) for c in counts}
    return {c: (usable.get(c, 0) + _CURVE_ROWS * y) / (admitted.get(c, 0) + _CURVE_ROWS) for c, y in curve.items()}


def scale_to(wanted: dict, budget: int) -> dict:
    """`wanted` scaled down to `budget` in all, in proportion (largest remainder)."""
    total = sum(wanted.values())
    if total <= budget:
        return wanted
    keys = sorted(wanted)
    shares = largest_remainder(budget, [wanted[k] for k in keys])
    return {keys[i - 1]: n for i, n in shares.items()}
