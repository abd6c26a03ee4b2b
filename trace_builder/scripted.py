"""Scripted answers for every pipeline task: the LLM side of the test double (see devserver).

The script is consistent in the way a good model would be, so the whole pipeline logic is
exercised: an answer carries a mark for each constraint of the instruction it answers,
the judge gives 10 exactly for the marks it finds, a worse answer drops one mark, and a
perturbation that adds or revises a constraint leaves y1 without that constraint's mark.
Inclusion constraints also carry a real keyword check, so code decides them.
"""

from __future__ import annotations

import hashlib
import json
import re

_NUMBERED = re.compile(r"^\s*(\d+)\.\s+(?:\[(\w+)\]\s+)?(.*)$")
_PLANNED = re.compile(r"(?:The dimensions intended for this instruction were:|本指令预定的约束维度为：)\s*(.*)")
_OPERATION = re.compile(r"(?:Operation:|操作：)\s*(ADD|DELETE|REVISE)")


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def mark(constraint: str) -> str:
    return f"<ok:{short_hash(constraint.strip())}>"


def keyword_for(constraint: str) -> str | None:
    found = re.search(r"keyword '(kw[0-9a-f]+)'", constraint)
    return found.group(1) if found else None


def _user(body: dict) -> str:
    return next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")


def _numbered_lines(text: str) -> list[tuple[str | None, str]]:
    out = []
    for line in text.splitlines():
        found = _NUMBERED.match(line)
        if found:
            out.append((found.group(2), found.group(3).strip()))
    return out


def _constraint(dimension: str, salt: str) -> dict:
    tag = short_hash(dimension + salt)
    if dimension == "inclusion":
        keyword = "kw" + tag
        return {
            "text": f"Mention the keyword '{keyword}' at least once.",
            "dimension": dimension,
            "check": {"kind": "keyword_include", "params": {"keywords": [keyword]}},
        }
    if dimension == "exclusion":
        return {
            "text": f"Never use the word 'banned{tag}'.",
            "dimension": dimension,
            "check": {"kind": "keyword_exclude", "params": {"keywords": [f"banned{tag}"]}},
        }
    if dimension == "numerical":
        return {
            "text": f"Keep the answer under 300 words (rule #{tag}).",
            "dimension": dimension,
            "check": {"kind": "word_count", "params": {"max": 300}},
        }
    return {"text": f"Follow the {dimension} rule #{tag}.", "dimension": dimension, "check": None}


def answer(prompt: str) -> str:
    """A response that meets every constraint of a TRACE-layout prompt (by mark and keyword)."""
    lines = prompt.split("# Inputs:")[0].splitlines()
    constraints = [text for _, text in _numbered_lines("\n".join(lines[1:]))]
    parts = [f"Here is my answer to: {lines[0][:60]}"]
    for text in constraints:
        keyword = keyword_for(text)
        parts.append(mark(text) + (f" {keyword}" if keyword else ""))
    return "\n".join(parts)


def respond(task: str, body: dict) -> str:
    user = _user(body)
    if task == "respond.answer" or task == "perturb.answer" or task.endswith(".answer"):
        return answer(user)
    if task == "expand.rewrite":
        planned = re.findall(r"\((\w+)\):", user)
        seed = user.split("Instruction:")[-1].split("指令：")[-1].strip().splitlines()[0]
        return f"{seed} (with {len(planned)} constraints: {', '.join(planned)})"
    if task == "expand.structure":
        planned = _PLANNED.search(user).group(1).strip().rstrip("。.").split(", ")
        first = user.split("Instruction:")[-1].split("指令：")[-1].strip().splitlines()[0]
        description = first.split(" (with ")[0]
        salt = short_hash(description)
        return json.dumps(
            {"description": description, "constraints": [_constraint(d, salt + str(i)) for i, d in enumerate(planned)], "input": "NULL"}
        )
    if task == "expand.quality":
        verdict = "reject" if int(short_hash(user), 16) % 11 == 0 else "pass"
        problems = [{"kind": "contradictory", "constraint": 1, "explanation": "scripted rejection"}] if verdict == "reject" else []
        return json.dumps({"problems": problems, "verdict": verdict, "repaired_constraints": []})
    if task.startswith("respond.judge") or task.startswith("perturb.judge") or task.endswith("judge"):
        return judge(user)
    if task == "respond.worse":
        # Drop the first constraint's mark, use every banned word, and run long: a worse
        # answer that fails the LLM's view and the code checks alike.
        good = user.split("<<<", 1)[1].rsplit(">>>", 1)[0].strip()
        kept = good.splitlines()
        banned = " ".join(re.findall(r"'(banned[0-9a-f]+)'", user))
        return "\n".join(kept[:1] + kept[2:] + [banned, "filler " * 320])
    if task == "perturb.rewrite":
        operation = _OPERATION.search(user).group(1).lower()
        current = [{"text": t, "dimension": d or "theme", "check": None} for d, t in _numbered_lines(user.split("<<<")[0])]
        for item in current:
            keyword = keyword_for(item["text"])
            if keyword:
                item["check"] = {"kind": "keyword_include", "params": {"keywords": [keyword]}}
        if operation == "add":
            current.append(_constraint("inclusion", short_hash(user)))
        elif operation == "delete":
            current = current[:-1]
        else:
            current[0] = dict(current[0], text=current[0]["text"] + " Revised.", check=None)
        return json.dumps({"constraints": current, "explanation": f"scripted {operation}"})
    if task == "seeds.synthesize":
        salt = short_hash(user)
        return json.dumps({"instructions": [f"Write a note about topic {salt}-{i}." for i in range(10)]})
    raise ValueError(f"scripted responder has no script for task {task!r}")


def lenient_respond(task: str, body: dict) -> str:
    """The same script with a judge that gives 10 to everything: what code checks must overrule."""
    if "judge" in task:
        section = re.split(r"Constraints to grade:|待评分的约束：", _user(body).split("<<<", 1)[0])[-1]
        count = len(_numbered_lines(section))
        return json.dumps({"scores": [{"index": i, "reason": "looks fine", "score": 10} for i in range(1, count + 1)]})
    return respond(task, body)


def judge(user: str) -> str:
    """10 for every listed constraint whose mark is in the response, else 2."""
    response = user.split("<<<", 1)[1].rsplit(">>>", 1)[0] if "<<<" in user else ""
    section = re.split(r"Constraints to grade:|待评分的约束：", user.split("<<<", 1)[0])[-1]
    scores = []
    for index, (_, text) in enumerate(_numbered_lines(section), start=1):
        ok = mark(text) in response
        scores.append({"index": index, "reason": "mark found" if ok else "mark missing", "score": 10 if ok else 2})
    return json.dumps({"scores": scores})
