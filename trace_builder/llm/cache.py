"""A SQLite (WAL) cache of LLM answers, so a rerun never asks twice for what was answered well.

Only answers that passed validation are stored (llm/client.py). A damaged cache file is set
aside (renamed `cache.sqlite.damaged-<time>`) and a new one started: answers are asked again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from trace_builder.llm.base import ChatRequest, ChatResult

log = logging.getLogger("trace_builder")


def request_key(model: str, request: ChatRequest) -> str:
    """hash(model, messages, params): the same question to the same model has the same key."""
    blob = json.dumps(
        {"model": model, "messages": request.messages, "params": request.params()},
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


QUICK_CHECK_MAX_BYTES = 1 << 30


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against a killed process (only a power cut can lose the last commits).
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS answers ("
            " key TEXT PRIMARY KEY, model TEXT, text TEXT, prompt_tokens INTEGER,"
            " completion_tokens INTEGER, finish_reason TEXT, created REAL DEFAULT (julianday('now')))"
        )
        # Questions whose answer failed validation, and how often: the next ask goes out reseeded.
        db.execute("CREATE TABLE IF NOT EXISTS rejected (key TEXT PRIMARY KEY, times INTEGER NOT NULL)")
        # Reads every page's structure: a torn or overwritten file fails here. Measured about
        # 4 s per GB, so a very large cache is trusted on its header and schema alone.
        if path.stat().st_size <= QUICK_CHECK_MAX_BYTES:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {verdict[:80]}")
    except BaseException:
        db.close()
        raise
    return db


def _is_damage(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or "corrupt" in text


def set_aside(path: Path) -> Path:
    """Move a damaged cache (and its WAL files) out of the way; returns where it went."""
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, f"{aside}{suffix}")
    return aside


class RequestCache:
    """Maps request keys to answers. Every put is committed at once: a SIGKILL loses nothing answered."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the event loop and the local backend's worker thread.
        self._lock = threading.Lock()
        try:
            self._db = _open(self.path)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and not _is_damage(exc):
                raise  # a full disk or a read-only folder: the CLI says so in one line
            aside = set_aside(self.path)
            log.warning("%s is damaged (%s): moved to %s; answers will be asked again", self.path, exc, aside.name)
            self._db = _open(self.path)

    def get(self, key: str) -> ChatResult | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, prompt_tokens, completion_tokens, finish_reason,"
                " (created - 2440587.5) * 86400.0 FROM answers WHERE key = ?",  # julian days -> epoch seconds
                (key,),
            ).fetchone()
        if row is None:
            return None
        return ChatResult(
            text=row[0], prompt_tokens=row[1], completion_tokens=row[2], finish_reason=row[3], cached_at=row[4]
        )

    def put(self, key: str, model: str, result: ChatResult) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO answers (key, model, text, prompt_tokens, completion_tokens, finish_reason)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key, model, result.text, result.prompt_tokens, result.completion_tokens, result.finish_reason),
            )

    def rejections(self, key: str) -> int:
        """How many answers to this question failed validation so far."""
        with self._lock:
            row = self._db.execute("SELECT times FROM rejected WHERE key = ?", (key,)).fetchone()
        return row[0] if row else 0

    def reject(self, key: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO rejected (key, times) VALUES (?, 1) ON CONFLICT(key) DO UPDATE SET times = times + 1",
                (key,),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
