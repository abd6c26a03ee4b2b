"""One run per run directory: a held lock refuses a second run at once, a killed holder's lock is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from trace_builder.errors import UserError
from trace_builder.run.lock import RunLock, is_held, read_holder

HOLD = """
import sys, time
from trace_builder.run.lock import RunLock
lock = RunLock(sys.argv[1])
try:
    lock.acquire()
except Exception as exc:
    print("refused", exc, flush=True)
    sys.exit(3)
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _holder(run_dir, seconds: float = 30.0) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_held_directory_refuses_a_second_run_naming_the_holder(tmp_path):
    proc = _holder(tmp_path)
    try:
        assert is_held(tmp_path) and read_holder(tmp_path).pid == proc.pid
        with pytest.raises(UserError, match=rf"in use by another run \(pid {proc.pid} on "):
            RunLock(tmp_path).acquire()
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    proc = _holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert read_holder(tmp_path).pid == proc.pid  # the file still names the dead holder
    assert not is_held(tmp_path)
    with RunLock(tmp_path):
        assert read_holder(tmp_path).pid == os.getpid()
        assert is_held(tmp_path)
    assert not is_held(tmp_path) and read_holder(tmp_path) is None


def test_of_runs_racing_for_a_free_lock_exactly_one_wins(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "3"], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    firsts = [p.stdout.readline().strip() for p in procs]
    for p in procs:
        p.wait(timeout=30)
    assert firsts.count("holding") == 1, firsts
    assert sorted(p.returncode for p in procs) == [0, 3, 3, 3]


def test_the_cli_refuses_a_second_run_at_once_and_status_still_works(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text("{}")
    proc = _holder(out)
    try:
        started = time.monotonic()
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "trace_builder",
                "run",
                "--out",
                str(out),
                "--backend",
                "openai",
                "--base-url",
                "http://127.0.0.1:9/v1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2 and time.monotonic() - started < 30
        assert f"in use by another run (pid {proc.pid}" in second.stderr and "Traceback" not in second.stderr
        status = subprocess.run(
            [sys.executable, "-m", "trace_builder", "status", "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert f"running now: pid {proc.pid}" in status.stdout
    finally:
        proc.kill()
        proc.wait()
