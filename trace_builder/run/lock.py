"""One run at a time per run directory: an advisory lock naming its holder (pid, host, start time).

The lock is `fcntl.flock` on `<run>/run.lock`. The kernel releases it when the holder's
process ends, however it ends (SIGKILL, a crash, a reboot), so a lock left by a killed run is
simply free: the next run takes it over, and two runs racing for a free lock cannot both win.
The file's content (who holds it) is for messages and `status` only, never for deciding.
A lock on a network filesystem is only as good as that filesystem's flock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from trace_builder.errors import UserError

LOCK_NAME = "run.lock"


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    started: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}, started {when}"


def read_holder(run_dir: Path) -> Holder | None:
    """Who the lock file names (whether or not it is still held); None if nobody or unreadable."""
    try:
        data = json.loads((Path(run_dir) / LOCK_NAME).read_text(encoding="utf-8"))
        return Holder(int(data["pid"]), str(data["host"]), float(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_held(run_dir: Path) -> bool:
    """Whether a live process holds the lock (probed without taking it for more than an instant)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken just now
    return False


class RunLock:
    """`with RunLock(run_dir):` holds the run directory, or raises a UserError naming the holder."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self.path.parent)
            who = holder.describe() if holder else "a run that is starting"
            raise UserError(
                f"{self.path.parent} is in use by another run ({who}): wait for it, stop it, or choose another --out"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # Ours now; whatever a killed holder wrote is replaced.
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode("utf-8"), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        # The file stays (deleting it would let a newcomer lock a file another is about to open);
        # emptying it tells `status` nobody holds it.
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        os.close(self._fd)  # releases the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
