"""Shared helpers for the eval tests (no tests here): official-layout rows and a scripted model + judge."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from trace_builder.evaluate.settings import EvalConfig

# The released file lives in the workspace's shared/ folder beside the checkout; users bring their copy.
OFFICIAL = os.environ.get(
    "TRACE_OFFICIAL_JSONL", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "trace_eval_official.jsonl")
)

_GRADED = re.compile(r"^(\d+)\. .*?\[s=(\d+)\]", re.MULTILINE)


def official_row(
    item_id: str, description: str, constraints: list[str], labels: list[str], input_text: str = "NULL"
) -> dict:
    """A row laid out like the released TRACE file."""
    splits = [f"{i}. {c}" for i, c in enumerate(constraints, start=1)]
    joined = "\n".join(splits)
    user = description + "\n" + joined + "\n" + ("# Inputs:\n" + input_text + "\n" if input_text != "NULL" else "")
    return {
        "id": item_id,
        "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": user}],
        "type": "trace",
        "description": description,
        "constraints": joined,
        "input": input_text,
        "constraints_num": len(constraints),
        "constraints_splits": splits,
        "levels2": labels,
        "category": "test",
    }


def write_jsonl(path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def known_rows() -> list[dict]:
    """Seven items whose judgements the scripted judge reads off the constraint texts ([s=N])."""
    return [
        official_row("A", "Describe the sea.", ["Stay on the topic of tides [s=10]"], ["主题约束"]),
        official_row("B", "Describe a cat.", ["Use exactly 50 words [s=8]"], ["数值约束"]),
        official_row(
            "C",
            "Write a recipe.",
            ["Mention basil [s=10]", "Use 3 steps [s=10]", "Answer in JSON [s=10]"],
            ["包含约束", "数值约束", "输出格式约束"],
            input_text="tomatoes, basil",
        ),
        official_row(
            "D", "Write a poem.", ["Mention the moon [s=10]", "Use a formal tone [s=5]"], ["包含约束", "语气风格约束"]
        ),
        official_row(
            "E",
            "Summarise [judge-fail] the text.",
            ["Keep it short [s=10]", "Be polite [s=10]"],
            ["数值约束", "语气风格约束"],
        ),
        official_row("F", "Say nothing [empty].", ["Stay on the topic of silence [s=10]"], ["主题约束"]),
        official_row("G", "Crash [gen-fail] now.", ["Be brief [s=10]", "Be kind [s=10]"], ["数值约束", "情感情绪约束"]),
    ]


def scripted(task: str, body: dict) -> str:
    """Model under test: echoes, answers '' for [empty], breaks the connection for [gen-fail].
    Judge: the score written in each constraint, or no JSON at all for [judge-fail]."""
    user = body["messages"][-1]["content"]
    if task == "eval.generate":
        if "[gen-fail]" in user:
            raise ConnectionResetError("scripted generation failure")
        if "[empty]" in user:
            return ""
        return "My answer to: " + user.splitlines()[0]
    if task == "eval.judge":
        if "[judge-fail]" in user:
            return "I cannot grade this."
        section = user.split("<<<", 1)[0]
        scores = [{"index": int(i), "reason": "scripted", "score": int(s)} for i, s in _GRADED.findall(section)]
        return json.dumps({"scores": scores})
    raise ValueError(f"no script for task {task!r}")


def scripted_config(model_url: str, judge_url: str, concurrency: int = 8, chunk_size: int = 3, **extra) -> EvalConfig:
    """The model under test at `model_url` (serves 'scripted'), the judge at `judge_url` (serves 'scripted-judge')."""
    backend = {"kind": "openai", "concurrency": concurrency, "max_retries": 0, "timeout_s": 20}
    return EvalConfig.model_validate(
        {
            "model": dict(backend, model="scripted", base_urls=[model_url]),
            "judge": dict(backend, model="scripted-judge", base_urls=[judge_url]),
            "chunk_size": chunk_size,
            **extra,
        }
    )
