"""Batch mode against the scripted server's Batch API double: whole runs, a run stopped while a batch is
pending and resumed, expiry, cancel, waves below min_wave, the limits, the discount and the plan."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_config
from trace_builder.config import BatchConfig, PricesConfig, load_config
from trace_builder.errors import LLMError, UserError
from trace_builder.llm.batch import line_outcome, split_wave
from trace_builder.pipeline.registry import STAGE_NAMES
from trace_builder.pipeline.runner import run_pipeline
from trace_builder.report.status import batch_lines, role_lines
from trace_builder.run.batches import pending_batches
from trace_builder.run.store import StageStore, read_parquet_dir
from trace_builder.testing.devserver import ScriptedServer
from trace_builder.testing.scripted import respond

# Tiny waits: the double moves a batch one status per poll.
FAST = "batch:\n  wave_size: 1000\n  min_wave: 1\n  quiet_s: 0.05\n  poll_start_s: 0.01\n  poll_max_s: 0.05\n"
SPLITS = ("sft", "dpo", "iopo", "eval")


def batch_config(tmp_path, base_url: str, batch: bool = True, extra: str = FAST, **overrides) -> str:
    path = write_config(tmp_path / f"c-{batch}.yaml", base_url, **overrides)
    text = Path(path).read_text()
    if batch:
        text = text.replace("  max_retries: 4\n", "  max_retries: 4\n  batch: true\n") + extra
    Path(path).write_text(text)
    return path


def run(config_path, out) -> None:
    asyncio.run(run_pipeline(load_config(config_path), out, list(STAGE_NAMES)))


def final_ids(out: Path) -> dict[str, list[str]]:
    return {split: sorted(read_parquet_dir(out / "final" / split)["id"]) for split in SPLITS}


def run_usage(out: Path) -> dict[str, int]:
    total: dict[str, int] = {}
    for name in STAGE_NAMES:
        for key, value in (StageStore(out, name).manifest.get("usage") or {}).items():
            total[key] = total.get(key, 0) + value
    return total


@pytest.fixture
def direct_run(tmp_path_factory):
    """The same small run, asked directly: what every batch run must build."""
    tmp = tmp_path_factory.mktemp("direct")
    with ScriptedServer(respond) as server:
        run(batch_config(tmp, server.base_url, batch=False), tmp / "run")
        return tmp / "run", server.stats_snapshot()


def test_a_batch_run_builds_what_a_direct_run_builds(tmp_path, direct_run):
    direct_out, direct_stats = direct_run
    with ScriptedServer(respond) as server:
        out = tmp_path / "run"
        run(batch_config(tmp_path, server.base_url), out)
        stats = server.stats_snapshot()
    assert final_ids(out) == final_ids(direct_out)
    for split in SPLITS:  # same columns, same rows
        assert list(read_parquet_dir(out / "final" / split).columns) == list(
            read_parquet_dir(direct_out / "final" / split).columns
        )
    usage = run_usage(out)
    assert usage["requests"] == direct_stats["requests"] == stats["batch_lines"]
    assert usage["batched"] == usage["requests"]  # min_wave 1: every request through a batch
    assert usage["batched_prompt_tokens"] == usage["prompt_tokens"]
    assert stats["batch_lines_repeated"] == {}
    assert all(len(line_id) <= 64 for line_id in server.batches.submitted)  # some providers allow no more
    assert 5 <= stats["batches"] < usage["requests"] / 5  # waves, not one batch per request
    assert not pending_batches(out)
    assert "through batches" in role_lines(out)[0]


def test_waves_below_min_wave_go_out_directly(tmp_path):
    extra = FAST.replace("min_wave: 1", "min_wave: 10")
    with ScriptedServer(respond) as server:
        out = tmp_path / "run"
        run(batch_config(tmp_path, server.base_url, extra=extra, limit=12), out)
        stats = server.stats_snapshot()
    usage = run_usage(out)
    # the first waves carry a request of each of the 12 rows; the last rows' few requests go direct
    assert 0 < usage["batched"] < usage["requests"]
    assert stats["requests"] == usage["requests"]
    assert sum(len(final_ids(out)[s]) for s in SPLITS) > 0


def test_an_expired_batch_is_resubmitted_for_its_unanswered_lines(tmp_path, direct_run):
    with ScriptedServer(respond) as server:
        server.batches.expire = 1  # the first batch expires with half of its lines answered
        out = tmp_path / "run"
        run(batch_config(tmp_path, server.base_url), out)
        first = next(iter(server.batches.batches.values()))["_lines"]
        submitted = dict(server.batches.submitted)
    assert final_ids(out) == final_ids(direct_run[0])
    answered, unanswered = first[: len(first) // 2], first[len(first) // 2 :]
    assert unanswered and all(submitted[line["custom_id"]] == 2 for line in unanswered)
    assert all(submitted[line["custom_id"]] == 1 for line in answered)
    assert sum(submitted.values()) == len(submitted) + len(unanswered)


def _command(config_path: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "trace_builder", "run", "--config", config_path, "--out", str(out), *extra]


def _start(config_path: str, out: Path) -> subprocess.Popen:
    return subprocess.Popen(_command(config_path, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _rerun(config_path: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """The same command, later (a session of its own, as a user runs it)."""
    done = subprocess.run(_command(config_path, out, *extra), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _wait_for_pending(proc: subprocess.Popen, out: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pending_batches(out):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no batch was recorded: {proc.communicate()[1][-2000:]}")
        time.sleep(0.05)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_a_run_stopped_while_a_batch_is_pending_collects_it_and_submits_nothing_twice(tmp_path, direct_run, how):
    with ScriptedServer(respond) as server:
        server.batches.hold = True  # batches stay in_progress: pending for days
        config_path, out = batch_config(tmp_path, server.base_url), tmp_path / "run"
        proc = _start(config_path, out)
        _wait_for_pending(proc, out)
        time.sleep(0.3)  # polling: the run waits on the batch
        proc.send_signal(how)
        _, stderr = proc.communicate(timeout=60)
        # The first wave, a request of every row (in one batch, or two when rows came slower than quiet_s).
        pending = pending_batches(out)
        assert sum(entry["requests"] for entry in pending) == 24
        if how == signal.SIGINT:
            assert proc.returncode == 130
            assert "left pending at the provider: rerun the same command to collect them" in " ".join(stderr.split())
        assert batch_lines(out)[0].startswith(f"pending batches: {len(pending)} (24 requests)")
        server.batches.hold = False
        _rerun(config_path, out)
        assert server.batches.repeated == {}
    assert final_ids(out) == final_ids(direct_run[0])
    assert not pending_batches(out) and not batch_lines(out)


def test_cancel_batches_cancels_the_pending_ones_and_the_next_run_submits_their_lines_again(tmp_path, direct_run):
    with ScriptedServer(respond) as server:
        server.batches.hold = True
        config_path, out = batch_config(tmp_path, server.base_url), tmp_path / "run"
        proc = _start(config_path, out)
        _wait_for_pending(proc, out)
        proc.kill()
        proc.communicate(timeout=60)
        pending = {entry["id"]: entry["requests"] for entry in pending_batches(out)}
        cancel = " ".join(_rerun(config_path, out, "--cancel-batches").stderr.split())
        for batch_id, requests in pending.items():
            assert f"batch {batch_id} ({requests} requests): cancelling" in cancel
            assert server.batches.batches[batch_id]["status"] == "cancelling"
        server.batches.hold = False
        _rerun(config_path, out)
        for batch_id in pending:
            assert server.batches.batches[batch_id]["status"] == "cancelled"
            lines = server.batches.batches[batch_id]["_lines"]
            assert all(server.batches.submitted[line["custom_id"]] == 2 for line in lines)
    assert final_ids(out) == final_ids(direct_run[0])


def test_plan_projects_waves_and_the_discounted_cost(tmp_path):
    from trace_builder.pipeline.plan import make_plan

    prices = "{input_per_million: 1.0, output_per_million: 2.0}"
    with ScriptedServer(respond) as server:
        direct = load_config(batch_config(tmp_path, server.base_url, batch=False, prices=prices))
        plans = {}
        for name, batch in (("direct", False), ("batch", True)):
            config = direct.model_copy(deep=True)
            config.backend.batch = batch
            plans[name] = asyncio.run(make_plan(config, tmp_path / name, pilot=6))
    assert plans["direct"]["batch"] is None
    waves = plans["batch"]["batch"]
    assert waves["waves"] == waves["depth"] >= 5  # 24 rows, fewer than a wave: the chain's depth
    assert plans["batch"]["requests"] == plans["direct"]["requests"]
    assert plans["batch"]["cost_usd"] == pytest.approx(plans["direct"]["cost_usd"] * 0.5, rel=0.01)
    assert plans["batch"]["wall_seconds"] is None


def test_batch_mode_needs_the_openai_backend(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("backend:\n  kind: local\n  batch: true\n")
    with pytest.raises(UserError, match="backend.batch asks the OpenAI Batch API, which only the openai backend"):
        load_config(path)


def test_the_discount_prices_batched_tokens_only():
    prices = PricesConfig(input_per_million=2.0, output_per_million=8.0)
    assert prices.cost(1e6, 1e6) == 10.0
    assert prices.cost(1e6, 1e6, 1e6, 1e6) == 5.0
    assert prices.cost(1e6, 1e6, 5e5, 0) == 9.5
    assert PricesConfig(input_per_million=2.0, batch_discount=0.4).cost(1e6, 0, 1e6, 0) == 0.8


def test_waves_split_at_the_api_limits():
    lines = [b"x" * 10 for _ in range(7)]
    assert split_wave(lines, max_requests=3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert split_wave(lines, max_requests=50, max_bytes=25) == [[0, 1], [2, 3], [4, 5], [6]]
    assert split_wave([], 3) == []
    assert BatchConfig().wave_size <= 50_000


def test_a_line_outcome_is_an_answer_a_failure_or_no_answer():
    body = {"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 3}}
    answer = line_outcome({"custom_id": "a", "response": {"status_code": 200, "body": body}})
    assert answer.text == "hi" and answer.batched and answer.prompt_tokens == 3
    refused = line_outcome(
        {"custom_id": "a", "response": {"status_code": 400, "body": {"error": {"message": "content filter"}}}}
    )
    assert isinstance(refused, LLMError) and refused.reason == "http_400"
    assert line_outcome({"custom_id": "a", "response": {"status_code": 429, "body": {}}}).reason == "rate_limited"
    assert line_outcome({"custom_id": "a", "response": None, "error": {"code": "batch_expired"}}) is None
    assert line_outcome({"custom_id": "a", "response": {"status_code": 200, "body": {"choices": []}}}).reason == (
        "no_choices"
    )
