"""The scripted server's Batch API: files, batches and their status transitions, output and error files,
expiry and cancel, each line answered as the server answers a direct request.

A batch moves one status per retrieve: validating -> in_progress -> finalizing -> completed
(or expired, or cancelling -> cancelled). Its lines are answered when it leaves in_progress,
through the server's own chat handler (same responder, same faults, same counts), the task
read from the custom_id (llm/batch.py). `hold` keeps batches in_progress (a batch pending for
days); `expire` makes the next that many batches expire with only their first half answered.
`submitted` counts each custom_id every time a batch holds it: a line submitted twice shows.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

Chat = Callable[[dict, dict], Awaitable[tuple[int, dict, dict]]]
Reply = tuple[int, Any, dict]


def _task_of(line_id: str) -> str:
    return line_id.rpartition(":")[0]


def multipart_fields(content_type: str, body: bytes) -> dict[str, bytes]:
    """The fields of a multipart/form-data body (what files.create uploads)."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in message.iter_parts()
    }


class BatchAPI:
    """The Batch API's routes, over a chat handler `chat(headers, body) -> (status, payload, headers)`."""

    def __init__(self, chat: Chat):
        self._chat = chat
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.submitted: Counter[str] = Counter()
        self.hold = False
        self.expire = 0
        self._ids = itertools.count(1)

    @property
    def repeated(self) -> dict[str, int]:
        """custom_ids that went out in more than one batch."""
        return {line_id: n for line_id, n in self.submitted.items() if n > 1}

    async def route(self, method: str, path: str, headers: dict, body: bytes) -> Reply | None:
        """The reply to a Batch API request; None for any other path."""
        parts = path.split("?")[0].rstrip("/").split("/")
        if method == "POST" and parts[-1] == "files":
            return self._upload(headers.get("content-type", ""), body)
        if method == "GET" and parts[-1] == "content" and parts[-3] == "files":
            content = self.files.get(parts[-2])
            return (200, content, {}) if content is not None else _missing(f"file {parts[-2]}")
        if method == "POST" and parts[-1] == "batches":
            return self._create(json.loads(body))
        if parts[-2] == "batches" and method == "GET":
            return await self._retrieve(parts[-1])
        if parts[-3:-2] == ["batches"] and parts[-1] == "cancel" and method == "POST":
            return self._cancel(parts[-2])
        return None

    def _upload(self, content_type: str, body: bytes) -> Reply:
        fields = multipart_fields(content_type, body)
        if fields.get("purpose") != b"batch" or "file" not in fields:
            return (
                400,
                {"error": {"message": "purpose must be batch, with a file", "type": "invalid_request_error"}},
                {},
            )
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = fields["file"]
        return 200, _file(file_id, len(fields["file"])), {}

    def _create(self, spec: dict) -> Reply:
        content = self.files.get(spec.get("input_file_id", ""))
        if content is None or spec.get("endpoint") != "/v1/chat/completions" or spec.get("completion_window") != "24h":
            return 400, {"error": {"message": "bad batch request", "type": "invalid_request_error"}}, {}
        lines = [json.loads(raw) for raw in content.splitlines() if raw.strip()]
        self.submitted.update(line["custom_id"] for line in lines)
        batch_id = f"batch_{next(self._ids)}"
        expires = self.expire > 0
        self.expire -= expires
        self.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": spec["endpoint"],
            "input_file_id": spec["input_file_id"],
            "completion_window": "24h",
            "status": "validating",
            "created_at": 0,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "_lines": lines,
            "_expires": expires,
        }
        return 200, _public(self.batches[batch_id]), {}

    async def _retrieve(self, batch_id: str) -> Reply:
        batch = self.batches.get(batch_id)
        if batch is None:
            return _missing(f"batch {batch_id}")
        status = batch["status"]
        if status == "validating":
            batch["status"] = "in_progress"
        elif status == "in_progress" and not self.hold:
            await self._answer(batch)
            batch["status"] = "finalizing"
        elif status == "finalizing":
            batch["status"] = "expired" if batch["_expires"] else "completed"
        elif status == "cancelling":
            batch["status"] = "cancelled"
        return 200, _public(batch), {}

    def _cancel(self, batch_id: str) -> Reply:
        batch = self.batches.get(batch_id)
        if batch is None:
            return _missing(f"batch {batch_id}")
        if batch["status"] in ("validating", "in_progress"):
            batch["status"] = "cancelling"
        return 200, _public(batch), {}

    async def _answer(self, batch: dict) -> None:
        """Each line through the chat handler; an expiring batch answers only its first half."""
        lines = batch["_lines"]
        answered = lines[: len(lines) // 2] if batch["_expires"] else lines
        output, errors = [], []
        for line in answered:
            headers = {"x-trace-build-task": _task_of(line["custom_id"])}
            status, payload, _ = await self._chat(headers, line["body"])
            record = {"id": f"req_{next(self._ids)}", "custom_id": line["custom_id"], "error": None}
            record["response"] = {"status_code": status, "request_id": record["id"], "body": payload}
            (output if status == 200 else errors).append(record)
        for line in lines[len(answered) :]:
            error = {"code": "batch_expired", "message": "This request could not be executed before the batch expired."}
            errors.append(
                {"id": f"req_{next(self._ids)}", "custom_id": line["custom_id"], "response": None, "error": error}
            )
        counts = batch["request_counts"]
        counts["completed"], counts["failed"] = len(output), len(errors)
        for key, records in (("output_file_id", output), ("error_file_id", errors)):
            if records:
                file_id = f"file-{next(self._ids)}"
                self.files[file_id] = b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode() for r in records)
                batch[key] = file_id


def _public(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def _file(file_id: str, size: int) -> dict:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": 0,
        "filename": "wave.jsonl",
        "purpose": "batch",
        "status": "processed",
    }


def _missing(what: str) -> Reply:
    return 404, {"error": {"message": f"no such {what}", "type": "invalid_request_error"}}, {}
