"""A SQLite (WAL) cache of LLM answers, so a rerun never asks twice for what was answered."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path

from trace_builder.llm.base import ChatRequest, ChatResult


def request_key(model: str, request: ChatRequest) -> str:
    """hash(model, messages, params): the same question to the same model has the same key."""
    blob = json.dumps(
        {"model": model, "messages": request.messages, "params": request.params()},
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class RequestCache:
    """Maps request keys to answers. Every put is committed at once: a SIGKILL loses nothing answered."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the event loop and the local backend's worker thread.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against a killed process (only a power cut can lose the last commits).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers ("
            " key TEXT PRIMARY KEY, model TEXT, text TEXT, prompt_tokens INTEGER,"
            " completion_tokens INTEGER, finish_reason TEXT, created REAL DEFAULT (julianday('now')))"
        )

    def get(self, key: str) -> ChatResult | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, prompt_tokens, completion_tokens, finish_reason FROM answers WHERE key = ?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        return ChatResult(text=row[0], prompt_tokens=row[1], completion_tokens=row[2], finish_reason=row[3])

    def put(self, key: str, model: str, result: ChatResult) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO answers (key, model, text, prompt_tokens, completion_tokens, finish_reason)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key, model, result.text, result.prompt_tokens, result.completion_tokens, result.finish_reason),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
