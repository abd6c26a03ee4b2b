"""TRACE-shaped data: plans honoured, rejection sampling, exact quotas at a target size, auditable scores."""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from tests.conftest import write_config
from tests.test_cli import cli
from trace_builder.config import load_config
from trace_builder.pipeline.admission import count_quotas, largest_remainder, play_rounds, seeds_to_meet, yield_curve
from trace_builder.pipeline.filter import quota_split, shaped_quota
from trace_builder.pipeline.runner import run_pipeline
from trace_builder.run.store import manifest_path, read_json, read_parquet_dir
from trace_builder.taxonomy import EVAL_COUNT_HISTOGRAM, TRAIN_COUNT_HISTOGRAM
from trace_builder.testing.devserver import Faults, ScriptedServer
from trace_builder.testing.kills import POINTS, run_and_kill, shards_written
from trace_builder.testing.scripted import ScriptedResponder, respond

ALL = ["seeds", "taxonomy", "expand", "respond", "perturb", "filter"]
SAMPLED = "{temperature: 0.7}"  # sampled answers: a retry can differ


def run(config_path, out, stages=ALL):
    return asyncio.run(run_pipeline(load_config(config_path), out, list(stages)))


def test_largest_remainder_sums_exactly_and_follows_the_histogram():
    quota = largest_remainder(500, [991, 8003, 26421, 34155, 26327, 13858, 5882, 2185, 999, 464, 8, 20, 20, 8, 4])
    assert sum(quota.values()) == 500
    assert quota[4] == 143 and 11 not in quota  # 34155/119345*500 = 143.1; 8/119345*500 rounds away


def _split_one_by_one(total, weights):
    """The rule as written: floor each share, then one more to the largest remainders (lower count first)."""
    exact = [total * w / sum(weights) for w in weights]
    quota = [math.floor(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: (quota[i] - exact[i], i))[: total - sum(quota)]:
        quota[i] += 1
    return {c: q for c, q in enumerate(quota, start=1) if q > 0}


def _shaped_one_size_at_a_time(rows, histogram, available, tolerance):
    """The largest size within the tolerance (or closest + tolerance/4), trying every size in turn."""
    mass, sizes = sum(histogram), []
    for total in range(rows, 0, -1):
        take = {c: min(n, available[c]) for c, n in _split_one_by_one(total, histogram).items()}
        kept = sum(take.values())
        if kept:
            distance = 0.5 * sum(abs(take.get(c, 0) / kept - h / mass) for c, h in enumerate(histogram, start=1))
            sizes.append((distance, take))
    if not sizes:
        return {}
    bound = max(tolerance, min(d for d, _ in sizes) + tolerance / 4)
    return next(take for d, take in sizes if d <= bound + 1e-12)  # within rounding: the larger size


def test_splits_of_every_size_at_once_match_the_rule_applied_one_size_at_a_time():
    rng = random.Random(7)
    histograms = [TRAIN_COUNT_HISTOGRAM, EVAL_COUNT_HISTOGRAM, [1, 1, 1, 1], [3, 0, 2, 5, 0, 1]]
    for _ in range(200):
        histogram = rng.choice(histograms)
        total = rng.randrange(0, 400)
        assert largest_remainder(total, histogram) == _split_one_by_one(total, histogram)
        available = Counter({c: rng.choice([0, rng.randrange(0, 60)]) for c in range(1, len(histogram) + 1)})
        tolerance = rng.choice([0.0, 0.02, 0.1])
        assert shaped_quota(total, histogram, available, tolerance) == _shaped_one_size_at_a_time(
            total, histogram, available, tolerance
        )


def test_yields_follow_a_geometric_curve_where_a_count_has_few_rows_of_its_own():
    admitted = {c: 400 for c in range(1, 9)} | {9: 6, 10: 3}
    usable = {c: round(400 * 0.7**c) for c in range(1, 9)} | {9: 0, 10: 0}  # a few failed rows at 9 and 10
    yields = yield_curve(usable, admitted, range(1, 13))
    for c in range(1, 9):
        assert yields[c] == pytest.approx(0.7**c, rel=0.05)  # its own rows
    for c in (9, 10):  # a few failed rows: neither the run's average nor impossible, below the curve
        assert 0.5 * 0.7**c < yields[c] < 0.7**c
    for c in (11, 12):  # none at all: the curve
        assert yields[c] == pytest.approx(0.7**c, rel=0.1)
    assert yields[9] > yields[10] > yields[11] > yields[12] > 0
    assert yield_curve({}, {}, [1, 2]) == {1: 1.0, 2: 1.0}  # nothing measured yet


def test_the_seeds_said_to_meet_a_target_meet_it_in_nine_runs_of_ten():
    need = {("train", 3): 20, ("eval", 9): 1, ("eval", 12): 1}
    yields = {3: 0.6, 9: 0.05, 12: 0.01}
    more = seeds_to_meet(need, yields, np.random.default_rng(0), Counter({("train", 3): 5}), Counter({3: 10}), 10)
    # Beyond one round's need / yield, which is met only about as often as not.
    assert more > 15 / 0.6 + 1 / 0.05 + 1 / 0.01
    met = 0
    for run in range(300):
        usable, _, seeds = play_rounds(
            need, yields, 10 + more, np.random.default_rng(run + 1), Counter({("train", 3): 5}), Counter({3: 10}), 10
        )
        met += all(usable[key] >= n for key, n in need.items())
    assert 0.85 <= met / 300 <= 0.97


def test_a_split_that_cannot_take_every_row_takes_those_with_both_pairs_first():
    statuses = [("ok", "ok"), ("ok", "failed"), ("failed", "failed"), ("failed", "ok")] * 5
    kept = pd.DataFrame(
        {
            "split": ["train"] * 20 + ["eval"] * 4,
            "constraint_count": [3] * 24,
            "dpo_status": [d for d, _ in statuses] + ["skipped"] * 4,
            "iopo_status": [i for _, i in statuses] + ["skipped"] * 4,
        }
    ).sample(frac=1, random_state=3)
    pairs = (kept["dpo_status"] == "ok").astype(int) + (kept["iopo_status"] == "ok").astype(int)
    for take in (4, 5, 15):
        chosen, short = quota_split(kept, {"train": (take, [0, 0, 1]), "eval": (2, [0, 0, 1])}, seed=1)
        assert not short and len(chosen["train"]) == take and len(chosen["eval"]) == 2
        taken, left = (
            pairs[list(chosen["train"])],
            pairs[kept.index[kept["split"] == "train"].difference(chosen["train"])],
        )
        assert taken.min() >= left.max()  # never a row with fewer pairs while one with more is left
    # Among rows with as many pairs, the seed decides, and decides the same way each time.
    assert quota_split(kept, {"train": (2, [0, 0, 1])}, seed=1) == quota_split(kept, {"train": (2, [0, 0, 1])}, seed=1)
    assert any(
        quota_split(kept, {"train": (2, [0, 0, 1])}, seed=s)[0]
        != quota_split(kept, {"train": (2, [0, 0, 1])}, seed=1)[0]
        for s in range(2, 8)
    )


def test_target_run_reaches_exact_quotas_reusing_seeds(tmp_path):
    target = "{train_rows: 60, eval_rows: 20}"
    with ScriptedServer(ScriptedResponder(mark_rate=0.85)) as server:
        cfg = write_config(tmp_path / "c.yaml", server.base_url, limit=30, target=target, generation=SAMPLED)
        summary = run(cfg, tmp_path / "run")
        shards = read_json(manifest_path(tmp_path / "run", "seeds"))["total_shards"]
        run(cfg, tmp_path / "run")  # the same command on the finished run
    assert shards and read_json(manifest_path(tmp_path / "run", "seeds"))["total_shards"] == shards
    config = load_config(cfg)
    train_quota, eval_quota = count_quotas(config)
    sft = read_parquet_dir(tmp_path / "run" / "final" / "sft")
    evals = read_parquet_dir(tmp_path / "run" / "final" / "eval")
    assert len(sft) == 60 and len(evals) == 20
    assert dict(Counter(sft["constraint_count"])) == train_quota
    assert dict(Counter(evals["constraint_count"])) == eval_quota
    assert not set(sft["id"]) & set(evals["id"])
    assert not set(sft["seed_id"]) & set(evals["seed_id"])  # every seed on one side, reuses included

    seeds = read_parquet_dir(tmp_path / "run" / "seeds")
    assert seeds["seed_id"].nunique() == 30 and (seeds["use"] > 0).any()  # the 30 seeds were reused, with new plans
    assert not seeds[["seed_id", "use"]].duplicated().any()
    manifest = read_json(manifest_path(tmp_path / "run", "seeds"))
    assert manifest["rounds"] and all(
        q["usable"] >= q["need"] for by in manifest["quota"].values() for q in by.values()
    )
    assert (seeds.groupby("seed_id")["split"].nunique() == 1).all()
    filtered = read_json(manifest_path(tmp_path / "run", "filter"))
    assert filtered["seeds_by_side"]["both"] == 0 and filtered["seeds_by_side"]["eval"] > 0
    assert any(note.startswith("quotas met") for note in summary.notes)
    # The eval dataset carries no pairs: its rows were asked for none (no rewrite, no worse answer).
    perturbed = read_parquet_dir(tmp_path / "run" / "perturb")
    eval_rows, train_rows = perturbed[perturbed["split"] == "eval"], perturbed[perturbed["split"] == "train"]
    ok = eval_rows["status"] == "ok"
    assert ok.any() and (eval_rows.loc[ok, ["dpo_status", "iopo_status"]] == "skipped").all().all()
    assert eval_rows["response_2"].isna().all() and eval_rows["rejected"].isna().all()
    assert (train_rows.loc[train_rows["status"] == "ok", "iopo_status"] != "skipped").all()


def test_a_rerun_re_asking_the_failures_of_a_finished_target_run_keeps_its_seed_shards(tmp_path):
    from trace_builder.run.store import StageStore

    out = tmp_path / "run"
    with ScriptedServer(
        ScriptedResponder(mark_rate=0.85), faults=Faults(server_error_every=9, transient_attempts=10**6)
    ) as server:
        cfg = write_config(
            tmp_path / "c.yaml", server.base_url, limit=30, target="{train_rows: 30, eval_rows: 10}", generation=SAMPLED
        )
        text = open(cfg).read().replace("  max_retries: 4", "  max_retries: 0")  # a 500 fails its row at once
        open(cfg, "w").write(text)
        run(cfg, out)
        shards = read_json(manifest_path(out, "seeds"))["total_shards"]
        assert sum(StageStore(out, "respond").manifest["failures"].values()) > 0  # some rows failed on a 500
        server.faults = Faults()  # the server recovers; the same command re-asks those rows
        run(cfg, out)
    assert shards and read_json(manifest_path(out, "seeds"))["total_shards"] == shards
    assert all(
        StageStore(out, s).verified_status() == "done" for s in ("seeds", "expand", "respond", "perturb", "filter")
    )


def test_a_spent_budget_is_a_reported_shortfall(tmp_path):
    target = "{train_rows: 60, eval_rows: 0, max_seeds: 20}"
    with ScriptedServer(respond) as server:
        cfg = write_config(tmp_path / "c.yaml", server.base_url, target=target)
        summary = run(cfg, tmp_path / "run")
    assert len(read_parquet_dir(tmp_path / "run" / "seeds")) == 20
    assert len(read_parquet_dir(tmp_path / "run" / "final" / "sft")) < 60
    assert any("quota shortfall (the seed budget is spent" in note for note in summary.notes)
    assert read_json(manifest_path(tmp_path / "run", "filter"))["shortfall"]
    status = subprocess.run(
        [sys.executable, "-m", "trace_builder", "status", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0 and "quota fill" in status.stdout and "shortfall" in status.stdout


def test_structured_instructions_follow_the_plan(tmp_path, scripted_server):
    cfg = write_config(tmp_path / "c.yaml", scripted_server.base_url, limit=20)
    run(cfg, tmp_path / "run", ALL[:3])
    rows = read_parquet_dir(tmp_path / "run" / "expand")
    ok = rows[rows["status"] == "ok"]
    assert len(ok) > 10
    for _, row in ok.iterrows():
        assert list(row["dimensions"]) == list(row["planned_dimensions"])
        assert row["constraint_count"] == row["planned_count"] == len(row["constraints"])


class _OffPlanFirst:
    """Structure answers that drop the last slot (as a model without a grammar does), on the first
    ask only or on every ask."""

    def __init__(self, always: bool):
        self.always = always
        self.first_seen: set[str] = set()

    def __call__(self, task: str, body: dict) -> str:
        answer = respond(task, body)
        user = body["messages"][-1]["content"]
        if task == "expand.structure" and (self.always or user not in self.first_seen):
            self.first_seen.add(user)
            data = json.loads(answer)
            data["constraints"].pop(str(len(data["constraints"])))
            return json.dumps(data)
        return answer


@pytest.mark.parametrize("always", [False, True])
def test_an_off_plan_structure_is_asked_again_then_fails_uncached(tmp_path, always):
    with ScriptedServer(_OffPlanFirst(always)) as server:
        cfg = write_config(tmp_path / "c.yaml", server.base_url, limit=8)
        run(cfg, tmp_path / "run", ALL[:3])
        asked = server.stats_snapshot()["by_task"]["expand.structure"]
    rows = read_parquet_dir(tmp_path / "run" / "expand")
    if always:
        assert asked == 8 * 3  # generation.answer_attempts answers per row, each reseeded
        assert set(rows["reason"]) == {"schema_mismatch"}
        assert rows["failure_detail"].str.contains("constraints").all()
    else:
        assert asked == 16  # the off-plan answer, then one that fits
        ok = rows[rows["status"] == "ok"]
        assert len(ok) >= 6 and (ok["constraint_count"] == ok["planned_count"]).all()


def test_rejection_sampling_retries_until_full_marks(tmp_path):
    with ScriptedServer(ScriptedResponder(mark_rate=0.8)) as server:
        cfg = write_config(tmp_path / "c.yaml", server.base_url, limit=24, generation=SAMPLED)
        run(cfg, tmp_path / "run", ALL[:4])
    rows = read_parquet_dir(tmp_path / "run" / "respond")
    judged = rows[rows["respond_attempts"].notna()]
    assert (judged["respond_attempts"] > 1).any() and (judged["respond_attempts"] <= 3).all()
    for _, row in rows[rows["status"] == "ok"].iterrows():
        assert all(v["score"] == 10 for v in row["judgement"])  # Parquet structs, one per constraint
    summary = read_json(manifest_path(tmp_path / "run", "respond"))["summary"]
    assert summary["passed on a later attempt"] > 0


def test_strict_groups_need_y2_to_fail_x1(tmp_path, scripted_server):
    cfg = write_config(tmp_path / "c.yaml", scripted_server.base_url, limit=16, perturb="{strict: true}")
    run(cfg, tmp_path / "run")
    rows = read_parquet_dir(tmp_path / "run" / "perturb")
    kept = rows[rows["iopo_status"] == "ok"]
    assert len(kept) > 0 and not kept["x1_y2_passes"].any()
    for attempts in rows["perturb_attempts"].dropna():
        # ADD keeps all of x1 in x2, so y2 (which meets x2) always meets x1: never a strict group
        assert all(a["outcome"] != "ok" for a in attempts if a["op"] == "add")


def test_final_rows_carry_their_scores(tmp_path, scripted_server):
    cfg = write_config(tmp_path / "c.yaml", scripted_server.base_url, limit=16)
    run(cfg, tmp_path / "run")
    final = tmp_path / "run" / "final"
    sft = read_parquet_dir(final / "sft")
    for _, row in sft.iterrows():
        assert len(row["scores"]) == len(row["constraints"]) == len(row["decided_by"])
        assert set(row["scores"]) == {10} and set(row["decided_by"]) <= {"code", "llm"}
    iopo = read_parquet_dir(final / "iopo")
    assert len(iopo) > 0
    for _, row in iopo.iterrows():
        assert set(row["scores_x1_y1"]) == set(row["scores_x2_y2"]) == {10}
        # a constraint left unjudged (a check had already failed y1) is null
        judged = [score for score in row["scores_x2_y1"] if not pd.isna(score)]
        assert min(judged) < 10 and len(row["scores_x2_y1"]) == len(row["constraints_2"])
        assert len(row["scores_x1_y2"]) == len(row["constraints"]) and len(row["decided_by_2"]) == len(
            row["constraints_2"]
        )
    dpo = read_parquet_dir(final / "dpo")
    assert all(min(x for x in s if not pd.isna(x)) < 10 for s in dpo["scores_rejected"])


def test_profiles_follow_the_backend_unless_chosen(tmp_path):
    assert load_config().profile == "demo"
    assert load_config(backend_kind="openai").profile == "trace"
    trace = load_config(backend_kind="openai")
    assert trace.expand.emit_checks and trace.taxonomy.count_histogram[3] == 34155 and trace.respond.attempts == 3
    assert load_config(profile="demo", backend_kind="openai").seeds.limit == 3  # chosen explicitly
    own = tmp_path / "c.yaml"
    own.write_text("backend: {kind: openai, model: m}\nseeds: {limit: 5}\n")
    assert load_config(own).profile == "trace" and load_config(own).seeds.limit == 5


def test_cli_names_the_profile_first_and_records_it(tmp_path, scripted_server):
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "trace_builder",
        "run",
        "--base-url",
        scripted_server.base_url,
        "--model",
        "scripted",
    ]
    done = subprocess.run(
        [*command, "--out", str(out), "--limit", "4", "--stage", "seeds"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.lstrip().startswith("profile trace:")
    assert read_json(out / "run.json")["profile"] == "trace"


def test_a_killed_target_run_resumes_to_the_same_data(tmp_path):
    target = "{train_rows: 40, eval_rows: 8}"
    with ScriptedServer(ScriptedResponder(mark_rate=0.85), latency_s=0.02) as server:
        cfg = write_config(
            tmp_path / "c.yaml",
            server.base_url,
            limit=20,
            shard_size=4,
            concurrency=8,
            target=target,
            generation=SAMPLED,
        )
        killed = tmp_path / "killed"
        args = ["run", "--config", cfg, "--out"]
        assert run_and_kill([*args, str(killed)], killed, shards_written("respond", 4), timeout_s=120), (
            "the run finished before it could be killed"
        )
        clean = tmp_path / "clean"
        for out in (killed, clean):
            assert cli(*args, str(out), timeout=300).returncode == 0
    for name in ("sft", "iopo", "eval"):
        a = read_parquet_dir(killed / "final" / name).sort_values("id").reset_index(drop=True)
        b = read_parquet_dir(clean / "final" / name).sort_values("id").reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b)
    assert len(read_parquet_dir(killed / "final" / "sft")) == 40


@pytest.mark.slow
def test_a_full_histogram_target_run_killed_three_times_resumes_to_the_same_rows(tmp_path):
    """Quotas up to 15 constraints (300 train / 250 eval), a model-like server (yields falling with the
    count, lists one off, numbers out of bounds, refusals); SIGKILL in the chain, after admission round 2
    and in the filter, each resumed with the same command: the same final rows as an uninterrupted run."""
    from trace_builder.run.store import StageStore

    with ScriptedServer(ScriptedResponder.model_like(), latency_s=0.002) as server:
        cfg = write_config(tmp_path / "c.yaml", server.base_url, limit=1000, concurrency=32, generation=SAMPLED)

        def command(out):
            return ["run", "--config", cfg, "--out", str(out), "--train-rows", "300", "--eval-rows", "250"]

        clean = cli(*command(tmp_path / "clean"), timeout=600)
        assert clean.returncode == 0 and "damaged" not in clean.stderr, clean.stderr
        for point, condition in POINTS.items():
            assert run_and_kill(command(tmp_path / "killed"), tmp_path / "killed", condition), point
        resumed = cli(*command(tmp_path / "killed"), timeout=600)
        assert resumed.returncode == 0 and "damaged" not in resumed.stderr, resumed.stderr

    for split in ("sft", "dpo", "iopo", "eval"):
        want = read_parquet_dir(tmp_path / "clean" / "final" / split)
        got = read_parquet_dir(tmp_path / "killed" / "final" / split)
        assert sorted(got["id"]) == sorted(want["id"]), split
    evals = read_parquet_dir(tmp_path / "clean" / "final" / "eval")
    assert {13, 14, 15} <= set(evals["constraint_count"])
    train_seeds = set(read_parquet_dir(tmp_path / "clean" / "final" / "sft")["seed_id"])
    assert not train_seeds & set(evals["seed_id"])
    stages = ("seeds", "taxonomy", "expand", "respond", "perturb", "filter")
    assert all(StageStore(tmp_path / "killed", s).verified_status() == "done" for s in stages)


def test_a_round_cut_short_while_its_shards_were_written_is_planned_again(tmp_path):
    """Killed between two of a round's seed shards: the resumed run drops the written ones and plans the
    same round again (the round is recorded only once all its shards are written)."""
    from trace_builder.pipeline.admission import QuotaAdmission
    from trace_builder.pipeline.context import StageContext
    from trace_builder.run.store import StageStore

    config = load_config(write_config(tmp_path / "c.yaml", "http://127.0.0.1:9/v1", limit=40))
    config.target.train_rows, config.target.eval_rows, config.shard_size = 30, 10, 8
    ctx = StageContext(config, tmp_path, None)

    async def first_round(store: StageStore) -> list[dict]:
        admission = QuotaAdmission(ctx, store, StageStore(tmp_path, "perturb"))
        await admission.prepare()
        shards = admission.shards()
        await anext(shards)  # the round is written and recorded before its first shard is handed out
        await shards.aclose()
        return [
            (r["seed_id"], r["use"], r["split"], r["planned_count"], list(r["planned_dimensions"]))
            for r in store.read().to_dict("records")
        ]

    seeds = StageStore(tmp_path, "seeds")
    whole = asyncio.run(first_round(seeds))
    assert [r["shards"] for r in seeds.manifest["rounds"]] == [[0, 1, 2, 3, 4]]
    # As if killed after shard 1: the round is not recorded, shards 0 and 1 are.
    seeds.manifest["rounds"] = []
    seeds.forget_shards({2, 3, 4})
    again = asyncio.run(first_round(StageStore(tmp_path, "seeds")))
    assert again == whole


def test_a_short_run_keeps_tracess_shape_and_a_larger_budget_tops_it_up(tmp_path):
    from trace_builder.report.fidelity import fidelity_report
    from trace_builder.run.store import StageStore

    with ScriptedServer(ScriptedResponder(mark_rate=0.85)) as server:
        cfg = write_config(tmp_path / "c.yaml", server.base_url, limit=200, generation=SAMPLED)
        args = ["run", "--config", cfg, "--out", str(tmp_path / "run"), "--train-rows", "120", "--eval-rows", "20"]
        short = cli(*args, "--max-seeds", "100")
        assert short.returncode == 0, short.stderr
        assert "more seeds meet it in 90% of runs: rerun with --max-seeds" in " ".join(short.stderr.split())  # wrapped
        filtered = read_parquet_dir(tmp_path / "run" / "filter")
        report = fidelity_report(tmp_path / "run")
        sft_short = len(read_parquet_dir(tmp_path / "run" / "final" / "sft"))
        rounds_short = len(StageStore(tmp_path / "run", "seeds").manifest["rounds"])
        requests_short = server.stats_snapshot()["requests"]
        seeds_before = read_parquet_dir(tmp_path / "run" / "seeds")

        # The same command with the budget it named: never refused, and (in 9 runs of 10) enough.
        named = re.search(r"rerun with --max-seeds (\d+)", " ".join(short.stderr.split())).group(1)
        topped = cli(*args, "--max-seeds", named)
        assert topped.returncode == 0, topped.stderr
    assert 0 < sft_short < 120
    assert report["sft"]["tv_to_trace"] <= 0.05  # trimmed to TRACE's shape, not to what happened to pass
    assert (filtered["filter_status"] == "set_aside").any()  # what the trimming left out is kept, and named
    assert len(read_parquet_dir(tmp_path / "run" / "final" / "sft")) == 120
    assert len(read_parquet_dir(tmp_path / "run" / "final" / "eval")) == 20
    assert len(StageStore(tmp_path / "run", "seeds").manifest["rounds"]) > rounds_short
    seeds_after = read_parquet_dir(tmp_path / "run" / "seeds")
    pd.testing.assert_frame_equal(seeds_after.iloc[: len(seeds_before)], seeds_before)  # nothing redone
    assert requests_short > 0
