"""Where a row chain's input comes from: stored shards, or seeds admitted round by round until quotas are met.

A target-size run (`--train-rows N --eval-rows M`) does not know up front how many seeds it
needs: attrition grows with the constraint count and differs by dimension. `QuotaAdmission`
admits seeds in rounds. Each round's plans (constraint count and dimensions per seed) are
sized from the yields measured on every earlier round, and the round is written as seed
shards before its rows run, so a resumed run continues exactly where it stopped; a round
starts only when the rows of the previous one are done, which keeps every decision a
function of what is on disk.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence

from trace_builder.pipeline.context import StageContext
from trace_builder.pipeline.seeds_stage import seed_pool, seed_row, synthesize_seeds, write_seed_shards
from trace_builder.seeds import Seed, normalise, select_seeds
from trace_builder.store import StageStore
from trace_builder.taxonomy import DIMENSION_IDS, sample_constraint_plan

# Pseudo-counts that pull a count's (or dimension's) measured yield towards the run's overall
# yield while it has few rows of its own.
_PRIOR_ROWS = 5
_FIRST_ROUND_YIELD = 1.0


def largest_remainder(total: int, weights: Sequence[float]) -> dict[int, int]:
    """`total` split over constraint counts 1..len(weights) in proportion to `weights`, summing exactly."""
    mass = sum(weights)
    exact = [total * w / mass for w in weights]
    quota = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - quota[i]), i))
    for i in order[: total - sum(quota)]:
        quota[i] += 1
    return {count: q for count, q in enumerate(quota, start=1) if q > 0}


def count_quotas(config) -> tuple[dict[int, int], dict[int, int]]:
    """Rows wanted per constraint count, for train and for eval (TRACE's histograms by default)."""
    target, tax = config.target, config.taxonomy
    return largest_remainder(target.train_rows or 0, tax.count_histogram), largest_remainder(
        target.eval_rows, tax.eval_count_histogram
    )


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
    """Admit seeds with plans for the constraint counts (and dimensions) still short."""

    def __init__(self, ctx: StageContext, seeds: StageStore, last: StageStore):
        super().__init__(seeds)
        self.ctx, self.last = ctx, last
        self.train_quota, self.eval_quota = count_quotas(ctx.config)
        margin = 1 + ctx.config.target.margin
        self.need = {
            c: math.ceil((self.train_quota.get(c, 0) + self.eval_quota.get(c, 0)) * margin) for c in self._counts()
        }
        self.pool: list[Seed] = []
        self._pending: set[int] = set()
        self._idle: asyncio.Event | None = None

    def _counts(self) -> list[int]:
        return sorted(set(self.train_quota) | set(self.eval_quota))

    async def prepare(self) -> None:
        cfg = self.ctx.config
        pool = await seed_pool(self.ctx, synthesize_to=cfg.seeds.synthesize_to)
        # The pool (at most seeds.limit) in a balanced order: languages and domains take turns.
        self.pool = select_seeds(pool, cfg.seeds.limit or len(pool), rng_seed=cfg.seed)
        self.total_shards = len(self.store.done_shards())
        self.total_rows = self.store.rows_written()

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
        """Admitted and usable rows per count and per dimension, from the shards on disk."""
        seeds = self.store.read(["seed_id", "use", "planned_count", "planned_dimensions"])
        done = self.last.read(["status", "prompt", "constraint_count", "dimensions"])
        admitted = Counter(seeds["planned_count"].astype(int)) if len(seeds) else Counter()
        admitted_dims: Counter = Counter()
        for dims in seeds.get("planned_dimensions", []):
            admitted_dims.update(list(dims))
        usable: Counter = Counter()
        usable_dims: Counter = Counter()
        if len(done):
            ok = done[done["status"] == "ok"]
            ok = ok[~ok["prompt"].map(normalise).duplicated()]
            usable.update(ok["constraint_count"].astype(int))
            for dims in ok["dimensions"]:
                usable_dims.update(list(dims))
        return {
            "admitted": admitted,
            "usable": usable,
            "admitted_dims": admitted_dims,
            "usable_dims": usable_dims,
            "seeds": len(seeds),
            "uses": seeds[["seed_id", "use"]].values.tolist() if len(seeds) else [],
        }

    async def next_round(self) -> list[dict]:
        cfg = self.ctx.config
        state = self.measure()
        short = self._short(state)
        self._record(state)
        left = cfg.target.seed_budget - state["seeds"]
        if not short or left <= 0:
            return []
        overall = sum(state["usable"].values()) / state["seeds"] if state["seeds"] else _FIRST_ROUND_YIELD
        overall = max(overall, 0.05)
        wanted = {
            c: math.ceil(n / _smoothed(state["usable"][c], state["admitted"][c], overall)) for c, n in short.items()
        }
        wanted = _scale_to(wanted, left)
        counts = [c for c, n in sorted(wanted.items()) for _ in range(n)]
        rng = random.Random(f"{cfg.seed}-round-{len(self.store.manifest.get('rounds', []))}")
        rng.shuffle(counts)
        seeds = await self._take_seeds(len(counts), state)
        weights = self._dimension_weights(state, overall)
        rows = []
        for (seed, use), count in zip(seeds, counts):
            histogram = [0.0] * (count - 1) + [1.0]
            plan = sample_constraint_plan(
                random.Random(f"{cfg.seed}-{seed.id}-{use}"), histogram, weights, cfg.taxonomy.max_per_dimension
            )
            rows.append(seed_row(seed, use, (plan.count, list(plan.dimensions))))
        rounds = self.store.manifest.setdefault("rounds", [])
        rounds.append({"admitted": len(rows), "by_count": dict(Counter(counts))})
        return rows

    def _dimension_weights(self, state: dict, overall: float) -> dict[str, float]:
        """Sampling weights that steer the kept constraints towards the configured dimension shares."""
        base = {d: float(self.ctx.config.taxonomy.weights.get(d, 1.0)) for d in DIMENSION_IDS}
        mass = sum(base.values())
        total = sum(c * n for c, n in self.need.items())
        weights = {}
        for dim, weight in base.items():
            deficit = weight / mass * total - state["usable_dims"][dim]
            dim_yield = _smoothed(state["usable_dims"][dim], state["admitted_dims"][dim], overall)
            # A small floor keeps every dimension drawable: a 15-constraint plan needs many of them.
            weights[dim] = max(deficit, 0.0) / dim_yield + 1e-3 * weight / mass * total
        return weights

    async def _take_seeds(self, n: int, state: dict) -> list[tuple[Seed, int]]:
        """The next `n` (seed, use) pairs: unused seeds first, then synthesis or reuse as configured.

        A reused seed gets a new plan and its own `use` number, so its rows have new ids.
        """
        policy = self.ctx.config.target.when_seeds_run_out
        used = {(seed_id, use) for seed_id, use in state["uses"]}
        fresh = [(s, 0) for s in self.pool if (s.id, 0) not in used]
        if len(fresh) < n and policy == "synthesize" and self.ctx.client is not None:
            known = {s.id for s in self.pool}
            grown = await synthesize_seeds(self.ctx, self.pool, len(self.pool) + n - len(fresh))
            new = [s for s in grown if s.id not in known]
            self.pool += new
            fresh += [(s, 0) for s in new]
        taken = fresh[:n]
        use = 1
        while len(taken) < n and policy != "stop" and self.pool:
            taken += [(s, use) for s in self.pool if (s.id, use) not in used][: n - len(taken)]
            use += 1
        return taken

    def _short(self, state: dict) -> dict[int, int]:
        """Usable rows still missing per constraint count."""
        return {c: self.need[c] - state["usable"][c] for c in self._counts() if state["usable"][c] < self.need[c]}

    def _record(self, state: dict) -> None:
        self.store.manifest["quota"] = {
            str(c): {"need": self.need[c], "usable": state["usable"][c], "admitted": state["admitted"][c]}
            for c in self._counts()
        }
        self.store.manifest["admitted"] = state["seeds"]
        self.store.save()

    def finish(self) -> list[str]:
        state = self.measure()
        self._record(state)
        short = self._short(state)
        budget = self.ctx.config.target.seed_budget
        if short:
            why = "the seed budget is spent" if state["seeds"] >= budget else "the seeds ran out"
            note = f"quota shortfall ({why}: {state['seeds']} of {budget} seeds admitted): " + ", ".join(
                f"{c} constraints {self.need[c] - n}/{self.need[c]} short" for c, n in sorted(short.items())
            )
        else:
            note = f"quotas met: {state['seeds']} seeds admitted in {len(self.store.manifest.get('rounds', []))} rounds (budget {budget})"
        self.store.manifest["notes"] = [note]
        self.store.finish("done", self.ctx.client.usage_for("seeds") if self.ctx.client else {}, 0.0)
        return [note]


def _smoothed(usable: int, admitted: int, overall: float) -> float:
    return max((usable + _PRIOR_ROWS * overall) / (admitted + _PRIOR_ROWS), 0.02)


def _scale_to(wanted: dict[int, int], budget: int) -> dict[int, int]:
    total = sum(wanted.values())
    if total <= budget:
        return wanted
    return {c: n for c, n in largest_remainder(budget, [wanted.get(c, 0) for c in range(1, max(wanted) + 1)]).items()}
