"""How the command line ends: on a signal, a full disk or a fault, one line and a meaningful exit status."""

from __future__ import annotations

import errno
import logging
import signal
import sqlite3
import time
from pathlib import Path

from trace_builder.run.redact import redact_text

INTERRUPTED = "interrupted; rerun the same command to resume"
EXIT_SIGINT = 130  # 128 + SIGINT, as shells report it
EXIT_SIGTERM = 143  # 128 + SIGTERM
EXIT_IO = 1
EXIT_MODEL = 1

_received: list[int] = []


def watch_signals() -> None:
    """SIGTERM stops a run the way Ctrl-C does (a clean cancel at the next await, no half files).

    The SIGTERM handler hands over to whatever handles SIGINT at that moment: asyncio.run's own
    (which cancels the main task, so stages stop at an await and finished shards stay), or
    Python's default (KeyboardInterrupt).
    """

    def on_sigterm(signum, frame):
        _received.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    # SIGINT keeps Python's default handler: asyncio.run installs its gentle one only over that.
    signal.signal(signal.SIGTERM, on_sigterm)


def interrupted_status() -> int:
    return EXIT_SIGTERM if signal.SIGTERM in _received else EXIT_SIGINT


def os_error_line(exc: BaseException) -> str:
    """One line naming the path and the cause of a failed write (or read)."""
    if isinstance(exc, sqlite3.Error):
        text = str(exc)
        if "malformed" in text or "not a database" in text:
            return f"the LLM cache is damaged ({text}): rerun the same command; it is set aside and rebuilt"
        return f"the LLM cache could not be written ({text}): free disk space or make the run folder writable"
    assert isinstance(exc, OSError)
    path = exc.filename or "a file"
    cause = exc.strerror or str(exc)
    code = errno.errorcode.get(exc.errno or 0, "")
    hint = {
        errno.ENOSPC: "free some disk space, then rerun the same command to resume",
        errno.EDQUOT: "free some of your disk quota, then rerun the same command to resume",
        errno.EROFS: "choose an --out on a writable filesystem",
        errno.EACCES: "make it writable or choose another --out",
        errno.EPERM: "make it writable or choose another --out",
        errno.ENOTDIR: "a path component is a file, not a folder: choose another --out",
        errno.EEXIST: "a file stands where a folder must be: choose another --out",
        errno.EISDIR: "a folder stands where a file must be",
    }.get(exc.errno or 0, "what was already written is kept; rerun the same command to resume")
    return redact_text(f"cannot write {path}: {cause}{f' ({code})' if code else ''}: {hint}")


def model_load_line(exc) -> str:
    """One line for a model that did not load, naming the log file that holds the whole traceback."""
    from trace_builder.llm.model_files import model_cache_root

    logs = model_cache_root().parent / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        log_file: Path | None = logs / f"model-load-{time.strftime('%Y%m%d-%H%M%S')}.log"
        log_file.write_text(exc.details, encoding="utf-8")
    except OSError:
        log_file = None  # an unwritable cache folder must not hide the error itself
    where = f" (traceback: {log_file})" if log_file else ""
    return redact_text(f"{exc}{where}")


class _OneLine(logging.Handler):
    def __init__(self, console):
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(
            f"[yellow]warning:[/yellow] {redact_text(record.getMessage())}", highlight=False, soft_wrap=True
        )


def show_warnings(console) -> None:
    """trace_builder's warnings (a damaged shard redone, a cache set aside) as one line each."""
    logger = logging.getLogger("trace_builder")
    if not any(isinstance(h, _OneLine) for h in logger.handlers):
        logger.addHandler(_OneLine(console))  # with it, Python's last-resort stderr print stays silent
