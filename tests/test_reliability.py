"""Runs that survive signals, faults and misuse (docs/reliability.md): one line, a meaningful exit, nothing lost."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from collections import Counter

import pandas as pd
import pytest
from pydantic import BaseModel

from trace_builder.errors import LLMError
from trace_builder.llm.base import ChatRequest, ChatResult
from trace_builder.llm.cache import RequestCache
from trace_builder.llm.client import LLMClient
from trace_builder.llm.reasons import is_transient
from trace_builder.llm.storm import StormWatch
from trace_builder.pipeline.retry import retryable_by_shard
from trace_builder.run.redact import redact_text
from trace_builder.run.store import StageStore, read_parquet_dir
from trace_builder.seeds import load_seed_file
from trace_builder.testing.devserver import Faults, ScriptedServer
from trace_builder.testing.scripted import respond

STAGES = ("taxonomy", "expand", "respond", "perturb", "filter")


def _config(path, base_url: str, *, limit=16, shard_size=4, max_retries=0, storm_after_s=600, extra="") -> str:
    path.write_text(
        f"""
seed: 7
shard_size: {shard_size}
backend:
  kind: openai
  model: scripted
  base_urls: ["{base_url}"]
  concurrency: 8
  timeout_s: 30
  max_retries: {max_retries}
  storm_after_s: {storm_after_s}
generation:
  temperature: 0.0
seeds:
  source: builtin
  limit: {limit}
filter:
  eval_size: 2
  train_size: null
{extra}"""
    )
    return str(path)


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "trace_builder", *map(str, args)]


def _run(config, out, *extra, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run(
        _cli("run", "--config", config, "--out", out, *extra), capture_output=True, text=True, timeout=timeout
    )


def _assert_intact(out) -> None:
    """Every shard a manifest records verifies; no temp file is left; no lock is held."""
    from trace_builder.run.lock import is_held

    for stage in STAGES:
        store = StageStore(out, stage)
        assert store.done_shards() == {int(k) for k in store.manifest["shards"]}, stage
    assert not list(out.rglob("*.tmp"))
    assert not is_held(out)


def _one_line(stderr: str, needle: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert sum(needle in line for line in stderr.splitlines()) == 1, stderr


# -- signals -------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigint_and_sigterm_stop_cleanly_and_the_rerun_resumes(tmp_path):
    with ScriptedServer(respond, latency_s=0.05) as server:
        config = _config(tmp_path / "c.yaml", server.base_url, limit=40, shard_size=2)
        out = tmp_path / "run"
        for sig, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
            proc = subprocess.Popen(
                _cli("run", "--config", config, "--out", out),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 120
            before = len(StageStore(out, "respond").manifest["shards"])
            while (
                len(StageStore(out, "respond").manifest["shards"]) <= before
                and proc.poll() is None
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)
            assert proc.poll() is None, "the run ended before the signal: make it longer"
            os.kill(proc.pid, sig)
            _, stderr = proc.communicate(timeout=60)
            assert proc.returncode == status, stderr
            _one_line(stderr, "interrupted; rerun the same command to resume")
            _assert_intact(out)
        done = _run(config, out)
        assert done.returncode == 0, done.stderr
        _assert_intact(out)
        assert len(read_parquet_dir(out / "perturb")) == 40


# -- only validated answers are cached; a retry after a rejection is reseeded ---------------
class _SeedSensitive:
    """A seeded server whose answers to the original seed never validate: not JSON, or (with a
    schema asking for exactly two scores) one score, as a model without a strict grammar gives."""

    name, model = "fake", "fake"

    def __init__(self, bad: str = "not json"):
        self.bad = bad
        self.requests: list[ChatRequest] = []

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.requests]

    async def complete(self, request: ChatRequest) -> ChatResult:
        self.requests.append(request)
        return ChatResult(text=self.bad if request.seed == 5 else '{"scores": [1, 2]}')

    async def aclose(self) -> None:
        pass


class _Scores(BaseModel):
    scores: list[int]


_TWO_SCORES = {
    "type": "object",
    "properties": {"scores": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}},
    "required": ["scores"],
    "additionalProperties": False,
}


def _ask(tmp_path, backend, attempts: int) -> _Scores:
    async def ask() -> _Scores:
        client = LLMClient(backend, RequestCache(tmp_path / "cache.sqlite"), concurrency=2, answer_attempts=attempts)
        try:
            messages = [{"role": "user", "content": "q"}]
            return await client.chat_json(messages, _Scores, tag="t", seed=5, json_schema=_TWO_SCORES)
        finally:
            client.cache.close()

    return asyncio.run(ask())


@pytest.mark.parametrize(("bad", "reason"), [("not json", "invalid_json"), ('{"scores": [7]}', "schema_mismatch")])
def test_a_rejected_answer_is_not_cached_and_the_retry_changes_the_seed(tmp_path, bad, reason):
    backend = _SeedSensitive(bad)
    with pytest.raises(LLMError, match=reason):
        _ask(tmp_path, backend, attempts=1)
    assert len(RequestCache(tmp_path / "cache.sqlite")) == 0  # the failure is not replayed
    assert _ask(tmp_path, backend, attempts=1).scores == [1, 2]  # a rerun asks again, with another seed
    assert backend.seeds[0] == 5 and backend.seeds[1] != 5
    # a greedy question asked again samples: the same seed-free answer would only repeat
    assert backend.requests[0].temperature == 0 and backend.requests[1].temperature > 0
    assert _ask(tmp_path, backend, attempts=1).scores == [1, 2] and len(backend.seeds) == 2  # now cached


def test_an_answer_off_its_schema_is_asked_again_within_the_step(tmp_path):
    backend = _SeedSensitive('{"scores": [2071464869609590]}')
    assert _ask(tmp_path, backend, attempts=3).scores == [1, 2]
    assert len(backend.seeds) == 2 and len(RequestCache(tmp_path / "cache.sqlite")) == 1


# -- transient failures are re-asked by a plain rerun ------------------------------------------
@pytest.mark.slow
def test_rows_failed_for_a_transient_reason_are_re_asked_by_a_plain_rerun(tmp_path):
    faults = Faults(server_error_every=6, transient_attempts=10**6)  # these requests always get a 500
    with ScriptedServer(respond, faults=faults) as server:
        config = _config(tmp_path / "c.yaml", server.base_url)
        out = tmp_path / "run"
        first = _run(config, out)
    assert first.returncode == 0, first.stderr
    retryable = {s: sum(retryable_by_shard(StageStore(out, s)).values()) for s in STAGES}
    assert sum(retryable.values()) > 0
    status = subprocess.run(_cli("status", "--out", out), capture_output=True, text=True, timeout=60)
    assert f"retryable: {sum(retryable.values())} rows" in status.stdout

    with ScriptedServer(respond) as server:  # the server is back
        config = _config(tmp_path / "c.yaml", server.base_url)
        second = _run(config, out)
        assert second.returncode == 0, second.stderr
        assert "re-asking" in second.stderr
        clean = tmp_path / "clean"
        assert _run(config, clean).returncode == 0
    _assert_intact(out)
    for stage in ("expand", "respond", "perturb"):
        rows = read_parquet_dir(out / stage)
        assert not any(is_transient(r) for r in rows["reason"]), stage
    # a transient failure re-asked gets the very answer a run without the fault got
    for name in ("sft", "dpo", "iopo", "eval"):
        got = read_parquet_dir(out / "final" / name).sort_values("id").reset_index(drop=True)
        want = read_parquet_dir(clean / "final" / name).sort_values("id").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want)


def test_content_failures_are_not_retryable():
    assert is_transient("connection_error") and is_transient("http_503") and is_transient("invalid_json")
    assert not is_transient("judge_below_10") and not is_transient("quality_rejected") and not is_transient("")


# -- an error storm stops the run early --------------------------------------------------------
def test_a_storm_of_server_errors_stops_the_run_with_one_line(tmp_path):
    faults = Faults(server_error_every=1, transient_attempts=10**6)  # every chat request: 500
    with ScriptedServer(respond, faults=faults) as server:
        config = _config(tmp_path / "c.yaml", server.base_url, max_retries=6, storm_after_s=2)
        out = tmp_path / "run"
        started = time.monotonic()
        result = _run(config, out)
        took = time.monotonic() - started
    assert result.returncode == 2 and took < 60, (took, result.stderr)
    _one_line(result.stderr, f"the server at {server.base_url} keeps failing (http_500")
    _assert_intact(out)
    assert not (out / "final").exists()


def test_storm_watch_needs_a_lasting_majority_of_one_reason():
    now = [0.0]
    watch = StormWatch(after_s=10, window=10, min_failures=4, clock=lambda: now[0])
    for _ in range(10):
        assert watch.record("connection_error") is None
    now[0] = 11.0
    assert watch.record("connection_error")[0] == "connection_error"
    for _ in range(3):
        watch.record(None)  # answers again: under 90% failing, the storm is over
    now[0] = 30.0
    assert watch.record("connection_error") is None


# -- write errors ---------------------------------------------------------------------------------
def test_a_full_disk_mid_run_is_one_line_and_what_was_written_stays_valid(tmp_path, monkeypatch, capsys):
    import pyarrow.parquet as pq

    from trace_builder import cli

    real = pq.write_table
    written = Counter()

    def filling(table, where, **kwargs):
        written["n"] += 1
        if written["n"] > 12:
            raise OSError(28, "No space left on device", str(where))
        return real(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", filling)
    with ScriptedServer(respond) as server:
        config = _config(tmp_path / "c.yaml", server.base_url)
        out = tmp_path / "run"
        monkeypatch.setattr(sys, "argv", ["trace-build", "run", "--config", config, "--out", str(out)])
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        assert exit_info.value.code == 1
        stderr = capsys.readouterr().err
        _one_line(stderr, "No space left on device (ENOSPC)")
        assert "cannot write " in stderr
        _assert_intact(out)
        monkeypatch.setattr(pq, "write_table", real)
        assert _run(config, out).returncode == 0


def test_out_naming_a_file_or_a_read_only_place_is_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = subprocess.run(
        _cli("run", "--out", afile, "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    _one_line(result.stderr, f"--out {afile} is a file, not a run folder")
    nested = subprocess.run(
        _cli("run", "--out", afile / "run", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nested.returncode == 1
    _one_line(nested.stderr, "(ENOTDIR)")


# -- damage ---------------------------------------------------------------------------------------
def test_a_damaged_cache_is_set_aside_and_rebuilt(tmp_path, caplog):
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    cache = RequestCache(path)
    assert len(cache) == 0
    cache.close()
    assert "is damaged" in caplog.text
    assert [p.name for p in tmp_path.glob("cache.sqlite.damaged-*")]
    sqlite3.connect(path).execute("select count(*) from answers").fetchone()


def test_a_damaged_shard_is_redone_with_a_warning(tmp_path):
    with ScriptedServer(respond) as server:
        config = _config(tmp_path / "c.yaml", server.base_url)
        out = tmp_path / "run"
        assert _run(config, out).returncode == 0
        reference = read_parquet_dir(out / "respond")
        shard = out / "respond" / "part-00001.parquet"
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
        again = _run(config, out)
    assert again.returncode == 0, again.stderr
    _one_line(again.stderr, "part-00001.parquet is damaged")
    pd.testing.assert_frame_equal(read_parquet_dir(out / "respond"), reference)


# -- credentials, long seeds, --fresh, status ----------------------------------------------------
def test_credentials_in_a_url_are_written_nowhere(tmp_path):
    with ScriptedServer(respond) as server:
        url = server.base_url.replace("http://", "http://alice:sekret-key@")
        config = _config(tmp_path / "c.yaml", url, limit=4)
        out = tmp_path / "run"
        result = _run(config, out)
    assert result.returncode == 0, result.stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert b"sekret-key" not in path.read_bytes(), path
    assert "sekret-key" not in result.stderr + result.stdout
    assert "***@127.0.0.1" in (out / "run.json").read_text()
    down = _run(_config(tmp_path / "d.yaml", "http://bob:hunter2@127.0.0.1:9/v1"), tmp_path / "down")
    assert down.returncode == 2 and "hunter2" not in down.stderr and "***@127.0.0.1:9" in down.stderr
    assert (
        redact_text("see https://u:p@h.example/v1 and http://h2/v1") == "see https://***@h.example/v1 and http://h2/v1"
    )


def test_a_seed_over_the_limit_is_skipped_and_counted_in_little_memory(tmp_path):
    path = tmp_path / "seeds.jsonl"
    with path.open("w") as handle:
        handle.write(json.dumps({"text": "Write a haiku about rain."}) + "\n")
        handle.write('{"text": "' + "x" * 50_000_000 + '"}\n')
        handle.write(json.dumps({"text": "y" * 20_001}) + "\n")
        handle.write(json.dumps({"text": "Summarise the news."}) + "\n")
    skipped: Counter = Counter()
    tracemalloc.start()
    seeds = load_seed_file(path, max_chars=20_000, skipped=skipped)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [s.text for s in seeds] == ["Write a haiku about rain.", "Summarise the news."]
    assert skipped["too_long"] == 2
    assert peak < 8 * 2**20, peak  # the 50 MB line was never held whole


def test_fresh_deletes_nothing_until_the_server_answers(tmp_path):
    with ScriptedServer(respond) as server:
        config = _config(tmp_path / "c.yaml", server.base_url, limit=4)
        out = tmp_path / "run"
        assert _run(config, out).returncode == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*.parquet"))
    down = _config(tmp_path / "d.yaml", "http://127.0.0.1:9/v1", limit=4)
    result = _run(down, out, "--fresh")
    assert result.returncode == 2 and "cannot reach" in result.stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*.parquet")) == before


def test_status_says_what_a_path_is(tmp_path):
    afile = tmp_path / "x.parquet"
    afile.write_bytes(b"PAR1")
    other = tmp_path / "folder"
    other.mkdir()
    for path, words in (
        (afile, "is a Parquet file, not a run folder"),
        (other, "is a folder but not a run"),
        (tmp_path / "nope", "does not exist"),
    ):
        result = subprocess.run(_cli("status", "--out", path), capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        _one_line(result.stderr, words)


def test_reopening_follows_the_chain_and_stops_at_the_cap(tmp_path):
    import pyarrow as pa

    from trace_builder.pipeline.retry import reopen_retryable

    rows = [
        {"status": "failed", "reason": "connection_error", "failed_stage": "expand"},
        {"status": "failed", "reason": "quality_rejected", "failed_stage": "expand"},
    ]
    content = [{"status": "failed", "reason": "quality_rejected", "failed_stage": "expand"}]
    for name in ("expand", "respond"):
        store = StageStore(tmp_path, name)
        store.write_shard(0, pa.Table.from_pylist(rows))
        store.write_shard(1, pa.Table.from_pylist(content))
        store.finish("done", {}, 0.0)
    StageStore(tmp_path, "filter").write_shard(0, pa.Table.from_pylist(rows))
    assert reopen_retryable(tmp_path, ["expand", "respond"], ["filter"], cap=1) == 1
    for name in ("expand", "respond"):
        store = StageStore(tmp_path, name)
        assert store.done_shards() == {1} and store.status == "partial"
        store.write_shard(0, pa.Table.from_pylist(rows))  # redone, failed again
    assert StageStore(tmp_path, "filter").manifest["shards"] == {}
    assert reopen_retryable(tmp_path, ["expand", "respond"], ["filter"], cap=1) == 0  # the cap is reached


@pytest.mark.parametrize(
    ("code", "words"),
    [(28, "(ENOSPC): free some disk space"), (30, "(EROFS): choose an --out on a writable"), (13, "(EACCES)")],
)
def test_a_write_error_is_one_line_naming_path_and_cause(code, words):
    from trace_builder.run.exits import os_error_line

    line = os_error_line(OSError(code, os.strerror(code), "/runs/x/part-00001.parquet"))
    assert line.startswith("cannot write /runs/x/part-00001.parquet: ") and words in line and "\n" not in line


def test_a_damaged_run_json_is_one_line_with_the_fix(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"trace_build": "0.1", "config": {')
    result = subprocess.run(_cli("status", "--out", out), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    _one_line(result.stderr, "run.json is damaged")
    assert "move it aside" in result.stderr
