"""Scripted answers for every pipeline task: the LLM side of the test double (see devserver).

Contract. An answer depends only on the task tag (the X-Trace-Build-Task header, `task`),
the request's JSON schema (`response_format.json_schema.schema`), the request `seed`, and
two structural delimiters of the last user message: numbered lines `N. text` (or
`N. [dimension] text`) and the `<<<` ... `>>>` block holding a response. It never reads a
prompt template's wording, so rewording a template cannot break a test.

- `*.answer` (and `eval.generate`): the user message is a TRACE-layout instruction (first
  line the description, then `N. text` lines, then an optional `# Inputs:` block); the answer
  carries a mark `<ok:hash>` per constraint, plus the keyword of a keyword constraint.
- `expand.rewrite`: a text derived from a hash of the user message.
- `expand.structure`: the schema's `constraints` is an object of slots "1".."N", each pinning
  its dimension with a one-value enum; one scripted constraint per slot (inclusion, exclusion
  and numerical ones carry a keyword_include / keyword_exclude / word_count check); the
  description is derived from a hash of the user message.
- `expand.quality`: rejects about 1 request in 11 (by hash), passes the rest; its
  `repaired_constraints` is null where the schema allows it, else the slots filled with the
  numbered constraints as they are (or [] for an array).
- `*judge*`: the graded constraints are the last block of numbered lines before the first
  `<<<` (what the prompt lists, as a model reads it); the response is inside `<<<` ... `>>>`;
  a score is 10 when the constraint's mark is in the response, else 2.
- `perturb.worse`: the response inside `<<< >>>` without its first mark, plus every
  `banned...` word in the message, running long.
- `perturb.rewrite`: the current constraints are the numbered lines before `<<<`; the
  operation is the one the prompt names on its `Operation: X` line (as a model reads it; a
  prompt naming none is a REVISE): ADD one inclusion constraint; DELETE the last and revise the
  first; REVISE the first. A revised constraint gets " Revised." appended and no check, so the
  old response lacks its mark.
- `seeds.synthesize`: ten instructions derived from a hash of the user message.

`respond` is consistent the way a good model is: every answer meets every constraint.
`ScriptedResponder(mark_rate=p)` answers with each constraint's mark (and keyword) present
with probability p, decided by a hash of (constraint text, request seed): the same request
always gets the same answer, and a request re-asked with another seed may succeed where the
first failed. `lenient_respond` has a judge that gives 10 to everything.

Model-like behaviour, off by default and on in `ScriptedResponder.model_like()`: what real
servers do that the pipeline must survive. Each is decided by a hash of what the model sees
(the messages, the seed), so it is deterministic per request and another seed may differ:
- `count_penalty`: longer constraint lists are met less often (each constraint with
  probability mark_rate ** (1 + count_penalty * (n - 1)));
- `miscount_rate`: a list the answer must size (scores, slots, constraints) is one item off;
- `out_of_bounds_rate`: a bounded integer (a score, an index) is far outside its bounds, as
  grammar engines that ignore number bounds give (llama.cpp);
- `refuse_rate`: a free-text request (an answer, a rewrite) is refused with HTTP 400 every
  time it is asked, as a provider's content filter does;
- `off_check_rate`: an answer carries a constraint's mark (the LLM judge is satisfied) but
  breaks its deterministic check (keyword missing, banned word used, too long).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

_NUMBERED = re.compile(r"^\s*(\d+)\.\s+(?:\[([\w-]+)\]\s+)?(.*)$")
_OPERATION = re.compile(r"^\s*(?:Operation|操作)\s*[:：]\s*(ADD|DELETE|REVISE)\b", re.MULTILINE)
_KEYWORD = re.compile(r"\b(kw[0-9a-f]{8})\b")
_BANNED = re.compile(r"\b(banned[0-9a-f]{8})\b")
_WORD_LIMIT = re.compile(r"under (\d+) words")
_MARK_LINE = re.compile(r"<ok:[0-9a-f]+>")

_FORMS = ["note", "letter", "story", "summary", "speech", "guide", "review", "poem", "report", "dialogue"]
_TOPICS = [
    "tides",
    "bees",
    "trains",
    "bread",
    "glaciers",
    "markets",
    "owls",
    "bridges",
    "tea",
    "comets",
    "gardens",
    "rivers",
    "clocks",
    "maps",
    "volcanoes",
    "libraries",
    "bicycles",
    "coral",
    "salt",
    "lanterns",
]
_AUDIENCES = ["children", "students", "engineers", "tourists", "farmers", "nurses", "investors", "neighbours"]


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def mark(constraint: str) -> str:
    return f"<ok:{short_hash(constraint.strip())}>"


def keyword_for(constraint: str) -> str | None:
    found = _KEYWORD.search(constraint)
    return found.group(1) if found else None


# -- reading a request -----------------------------------------------------------------
def _user(body: dict) -> str:
    return next((m["content"] for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")


def _schema(body: dict) -> dict:
    """The JSON Schema a request asks its answer to fit, in whichever dialect it was sent: OpenAI's
    `json_schema`, llama.cpp's `json_object` + `schema`, vLLM's body fields, or written in the
    prompt (the last line of the user message that is a JSON object)."""
    response_format = body.get("response_format") or {}
    found = (response_format.get("json_schema") or {}).get("schema") or response_format.get("schema")
    found = found or (body.get("structured_outputs") or {}).get("json") or body.get("guided_json")
    if found:
        return found
    for line in reversed(_user(body).splitlines()):
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except ValueError:
                return {}
    return {}


def dialect_of(body: dict) -> str | None:
    """How a request asks for structure: json_schema, json_object, vllm, prompt, or None (free text)."""
    kind = (body.get("response_format") or {}).get("type")
    if kind in ("json_schema", "json_object"):
        return kind
    if body.get("structured_outputs") or body.get("guided_json"):
        return "vllm"
    return "prompt" if _schema(body) else None


def instance(schema: Any, root: dict | None = None) -> Any:
    """A small value that fits `schema`: what a grammar-constrained model gives a question it cannot read."""
    root = root if root is not None else schema
    node = _deref(schema, root)
    if not isinstance(node, dict):
        return None
    if "const" in node:
        return node["const"]
    if node.get("enum"):
        return node["enum"][0]
    options = node.get("anyOf") or node.get("oneOf")
    if options:
        return instance(options[0], root)
    kind = node.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object" or "properties" in node:
        return {key: instance(value, root) for key, value in node.get("properties", {}).items()}
    if kind == "array":
        return [instance(node.get("items"), root) for _ in range(node.get("minItems", 0))]
    if kind in ("integer", "number"):
        return node.get("minimum", 0)
    if kind == "boolean":
        return False
    return "x" * node.get("minLength", 1) if kind == "string" else None


def _deref(node: Any, root: dict) -> Any:
    """Follow local `$ref`s (and single-item `allOf` wrappers) to the schema they name."""
    for _ in range(32):
        if not isinstance(node, dict):
            return node
        if "$ref" in node and node["$ref"].startswith("#/"):
            target: Any = root
            for part in node["$ref"][2:].split("/"):
                target = target[part]
            node = target
        elif "allOf" in node and len(node["allOf"]) == 1 and "properties" not in node:
            node = node["allOf"][0]
        else:
            return node
    return node


def _variants(node: Any, root: dict) -> list[dict]:
    node = _deref(node, root)
    if not isinstance(node, dict):
        return []
    options = node.get("anyOf") or node.get("oneOf")
    return [_deref(v, root) for v in options] if options else [node]


def _is_type(node: dict, name: str) -> bool:
    kind = node.get("type")
    return kind == name or (isinstance(kind, list) and name in kind)


def _object_variant(node: Any, root: dict) -> dict | None:
    return next((v for v in _variants(node, root) if _is_type(v, "object") or "properties" in v), None)


def _accepts_null(node: Any, root: dict) -> bool:
    return any(_is_type(v, "null") for v in _variants(node, root))


def _property(node: Any, name: str, root: dict) -> Any:
    found = _object_variant(node, root)
    return _deref((found or {}).get("properties", {}).get(name), root)


def _fit(value: dict, node: Any, root: dict) -> dict:
    """`value` without the keys a closed object schema does not list."""
    found = _object_variant(node, root) if node else None
    if not found or found.get("additionalProperties") is not False or "properties" not in found:
        return value
    return {k: v for k, v in value.items() if k in found["properties"]}


def _pinned_value(node: Any, root: dict) -> str | None:
    node = _deref(node, root)
    if not isinstance(node, dict):
        return None
    if "const" in node:
        return node["const"]
    enum = node.get("enum") or []
    return enum[0] if len(enum) == 1 else None


def _numbered_lines(text: str) -> list[tuple[str | None, str]]:
    out = []
    for line in text.splitlines():
        found = _NUMBERED.match(line)
        if found:
            out.append((found.group(2), found.group(3).strip()))
    return out


def _before_response(user: str) -> str:
    return user.split("<<<", 1)[0]


def _last_numbered_block(text: str) -> list[tuple[str | None, str]]:
    """The last run of consecutive numbered lines (blank lines aside): a prompt's constraint list."""
    block: list[tuple[str | None, str]] = []
    ended = False
    for line in text.splitlines():
        found = _NUMBERED.match(line)
        if found:
            if ended:
                block, ended = [], False
            block.append((found.group(2), found.group(3).strip()))
        elif line.strip() and block:
            ended = True
    return block


def _response_block(user: str) -> str:
    return user.split("<<<", 1)[1].rsplit(">>>", 1)[0].strip() if "<<<" in user else ""


# -- building answers ----------------------------------------------------------------------
def _constraint(dimension: str, salt: str) -> dict:
    tag = short_hash(dimension + salt)
    if dimension == "inclusion":
        keyword = "kw" + tag
        return {
            "dimension": dimension,
            "text": f"Mention the keyword '{keyword}' at least once.",
            "check": {"kind": "keyword_include", "params": {"keywords": [keyword]}},
        }
    if dimension == "exclusion":
        return {
            "dimension": dimension,
            "text": f"Never use the word 'banned{tag}'.",
            "check": {"kind": "keyword_exclude", "params": {"keywords": [f"banned{tag}"]}},
        }
    if dimension == "numerical":
        return {
            "dimension": dimension,
            "text": f"Keep the answer under 300 words (rule #{tag}).",
            "check": {"kind": "word_count", "params": {"max": 300}},
        }
    return {"dimension": dimension, "text": f"Follow the {dimension} rule #{tag}.", "check": None}


def _check_of(text: str) -> dict | None:
    """The check a scripted constraint text carries (keyword, banned word, word limit), if any."""
    if keyword := keyword_for(text):
        return {"kind": "keyword_include", "params": {"keywords": [keyword]}}
    if banned := _BANNED.search(text):
        return {"kind": "keyword_exclude", "params": {"keywords": [banned.group(1)]}}
    if limit := _WORD_LIMIT.search(text):
        return {"kind": "word_count", "params": {"max": int(limit.group(1))}}
    return None


def _allowed_kinds(check_schema: Any, root: dict) -> set[str] | None:
    """Check kinds the schema allows (None: any; empty: the check must be null)."""
    if check_schema is None:
        return None
    spec = _object_variant(check_schema, root)
    if spec is None:
        return set()
    kind = _deref(spec.get("properties", {}).get("kind"), root) or {}
    return set(kind["enum"]) if "enum" in kind else None


def _shape(item: dict, item_schema: Any, root: dict) -> dict:
    """A constraint dict fitted to its schema: a check the schema cannot hold becomes null."""
    kinds = _allowed_kinds(_property(item_schema, "check", root), root) if item_schema else None
    check = item.get("check")
    if check is not None and kinds is not None and check["kind"] not in kinds:
        item = dict(item, check=None)
    return _fit(item, item_schema, root)


def _slots(node: Any, root: dict) -> list[tuple[str, Any]] | None:
    """The slots "1".."N" of a slot-object constraints schema, in order; None for another shape."""
    found = _object_variant(node, root)
    if found is None or not found.get("properties"):
        return None
    keys = list(found["properties"])
    if all(k.isdigit() for k in keys):
        keys.sort(key=int)
    return [(k, _deref(found["properties"][k], root)) for k in keys]


def _slot_dimension(slot: Any, root: dict) -> str:
    return _pinned_value(_property(slot, "dimension", root), root) or "theme"


def _dimension_in(wanted: str | None, item_schema: Any, root: dict) -> str:
    node = _property(item_schema, "dimension", root) if item_schema else None
    allowed = (node or {}).get("enum") if isinstance(node, dict) else None
    if not allowed:
        return wanted or "theme"
    if wanted in allowed:
        return wanted
    return "theme" if "theme" in allowed else allowed[0]


def _description(user: str) -> str:
    h = int(short_hash(user, 12), 16)
    form = _FORMS[h % len(_FORMS)]
    topic = _TOPICS[(h // 16) % len(_TOPICS)]
    audience = _AUDIENCES[(h // 512) % len(_AUDIENCES)]
    return f"Write a {form} about {topic} for {audience} (variant {short_hash(user, 6)})."


def _breaking(constraint: str) -> str:
    """What an answer adds beside a constraint's mark to break its check while the mark stays."""
    if banned := _BANNED.search(constraint):
        return f" {banned.group(1)}"
    if limit := _WORD_LIMIT.search(constraint):
        return " " + "padding " * (int(limit.group(1)) + 20)
    return ""  # an inclusion constraint: its keyword left out


def _miscount(data: dict, longer: bool) -> None:
    """One item more or fewer in the answer's sized list (scores, constraint slots or list)."""
    for name in ("scores", "constraints", "repaired_constraints"):
        value = data.get(name)
        if isinstance(value, list) and value:
            value.append(dict(value[-1])) if longer else value.pop()
            return
        if isinstance(value, dict) and value:
            last = max(value, key=lambda k: (len(k), k))
            if longer:
                value[str(len(value) + 1)] = dict(value[last])
            else:
                value.pop(last)
            return


BROKEN_TAG = "broken-"


def _tag_free_text(data: dict, tag: str) -> None:
    """Put `tag` into the first free-text field of an answer (a reason, an explanation, a description)."""
    holders = [*(data.get("scores") or [])[:1], *(data.get("problems") or [])[:1], data]
    for holder in holders:
        for name in ("reason", "explanation", "description"):
            if isinstance(holder.get(name), str):
                holder[name] = f"{holder[name]} {tag}"
                return
    for slots in (data.get("repaired_constraints"), data.get("constraints")):
        items = list(slots.values()) if isinstance(slots, dict) else slots or []
        if items and isinstance(items[0], dict):
            items[0]["text"] = f"{items[0].get('text', '')} {tag}"
            return


def _break_bounds(data: dict) -> None:
    """A bounded integer far outside its bounds, as a grammar engine that ignores bounds lets through."""
    for item in data.get("scores") or []:
        item["score"] = 2071464869609590
        return
    for item in data.get("problems") or []:
        item["constraint"] = 0
        return


def _scores(count: int, score_of) -> str:
    scores = []
    for index in range(1, count + 1):
        score = score_of(index)
        scores.append({"index": index, "reason": "mark found" if score == 10 else "mark missing", "score": score})
    return json.dumps({"scores": scores})


class Refused(Exception):
    """The scripted model refuses a prompt: the server answers HTTP 400 with this message."""


# Tasks whose answer is free text: the ones a content filter refuses.
_FREE_TEXT = ("expand.rewrite", "perturb.worse", "eval.generate")


def _draw(*parts: Any) -> float:
    """A number in [0, 1) decided by `parts`: the same request always draws the same."""
    return int(short_hash("\x1f".join(str(p) for p in parts), 12), 16) / 16**12


@dataclass(frozen=True)
class ScriptedResponder:
    """The scripted LLM, `responder(task, body) -> str`; see the module docstring for the contract.

    mark_rate: the chance that an answer meets each constraint (its mark and keyword are
    present), decided by hash(constraint text, request seed). reject_every: expand.quality
    rejects a request when hash(user message) % reject_every == 0 (0: never). lenient_judge:
    the judge gives 10 to everything (what code checks must overrule). The model-like knobs
    (count_penalty ... off_check_rate) are described in the module docstring.
    """

    mark_rate: float = 1.0
    reject_every: int = 11
    lenient_judge: bool = False
    count_penalty: float = 0.0
    miscount_rate: float = 0.0
    out_of_bounds_rate: float = 0.0
    refuse_rate: float = 0.0
    off_check_rate: float = 0.0
    # Tags of the answers broken on purpose (each such answer carries its tag, BROKEN_TAG + a hash, in a
    # free-text field): a client must cache none of them.
    broken: set[str] = field(default_factory=set, compare=False, repr=False)

    @classmethod
    def model_like(cls, **overrides: Any) -> ScriptedResponder:
        """A weak model behind a lax server: low yields that fall with the count, lists one off,
        numbers out of bounds, refusals, prose that the checks fail."""
        traits = dict(
            mark_rate=0.9,
            count_penalty=0.15,
            miscount_rate=0.08,
            out_of_bounds_rate=0.04,
            refuse_rate=0.02,
            off_check_rate=0.05,
        )
        return cls(**{**traits, **overrides})

    def __call__(self, task: str, body: dict) -> str:
        user = _user(body)
        seed = body.get("seed")
        if self.refuse_rate and (task.endswith(".answer") or task in _FREE_TEXT):
            if _draw("refuse", user) < self.refuse_rate:  # the content, not the seed: refused every time
                raise Refused("The response was filtered due to the prompt triggering the content management policy.")
        if task.endswith(".answer") or task == "eval.generate":
            return self.answer(user, seed)
        if "judge" in task:
            return self._structured(self.judge(user, _schema(body)), task, body)
        if task == "expand.rewrite":
            return f"Scripted rewrite {short_hash(user)}: the task with its planned constraints."
        if task == "expand.structure":
            return self._structured(self.structure(user, _schema(body)), task, body)
        if task == "expand.quality":
            return self._structured(self.quality(user, _schema(body)), task, body)
        if task == "perturb.worse":
            return self.worse(user)
        if task == "perturb.rewrite":
            return self._structured(self.perturb(user, _schema(body)), task, body)
        if task == "probe":
            return json.dumps(instance(_schema(body)))
        if task == "seeds.synthesize":
            node = _property(_schema(body), "instructions", _schema(body)) or {}
            count = min(10, node.get("maxItems", 10))
            salt = short_hash(user)
            return json.dumps({"instructions": [f"Write a note about topic {salt}-{i}." for i in range(count)]})
        raise ValueError(f"scripted responder has no script for task {task!r}")

    # -- answers ----------------------------------------------------------------------
    def meets(self, constraint: str, seed: Any, count: int = 1) -> bool:
        """Whether an answer to `count` constraints, asked with `seed`, meets `constraint`."""
        rate = self.mark_rate ** (1 + self.count_penalty * (count - 1))
        if rate >= 1:
            return True
        if rate <= 0:
            return False
        return _draw(constraint.strip(), seed) < rate

    def answer(self, prompt: str, seed: Any = None) -> str:
        """An answer to a TRACE-layout prompt: a mark (and keyword) per constraint it meets."""
        lines = prompt.split("# Inputs:")[0].splitlines()
        head = lines[0] if lines else ""
        parts = [f"Here is my answer to: {head[:60]}"]
        listed = _numbered_lines("\n".join(lines[1:]))
        for _, text in listed:
            if not self.meets(text, seed, len(listed)):
                continue
            keyword = keyword_for(text)
            if self.off_check_rate and _draw("off-check", text, seed) < self.off_check_rate:
                parts.append(mark(text) + _breaking(text))  # the judge sees the mark; the check fails
            else:
                parts.append(mark(text) + (f" {keyword}" if keyword else ""))
        return "\n".join(parts)

    def judge(self, user: str, schema: dict) -> str:
        """10 for every listed constraint whose mark is in the response, else 2."""
        graded = [text for _, text in _last_numbered_block(_before_response(user))]
        if self.lenient_judge:
            return _scores(len(graded), lambda _: 10)
        response = _response_block(user)
        return _scores(len(graded), lambda i: 10 if mark(graded[i - 1]) in response else 2)

    def _structured(self, answer: str, task: str, body: dict) -> str:
        """A structured answer as a model without a strict grammar may give it: a list one item
        off (miscount_rate), a bounded number out of its bounds (out_of_bounds_rate). An answer
        that then breaks the request's schema is remembered in `broken`."""
        if not (self.miscount_rate or self.out_of_bounds_rate):
            return answer
        data = json.loads(answer)
        user, seed = _user(body), body.get("seed")
        if _draw("miscount", task, user, seed) < self.miscount_rate:
            _miscount(data, longer=_draw("longer", task, user, seed) < 0.5)
        if _draw("bounds", task, user, seed) < self.out_of_bounds_rate:
            _break_bounds(data)
        if not Draft202012Validator(_schema(body)).is_valid(data):
            tag = f"{BROKEN_TAG}{short_hash(json.dumps(data) + user + str(seed), 12)}"
            _tag_free_text(data, tag)
            self.broken.add(tag)
        return json.dumps(data, ensure_ascii=False)

    def worse(self, user: str) -> str:
        # Drop the first mark, use every banned word, and run long: a worse answer that
        # fails the LLM's view and the code checks alike.
        kept = _response_block(user).splitlines()
        first = next((i for i, line in enumerate(kept) if _MARK_LINE.search(line)), None)
        if first is not None:
            kept = kept[:first] + kept[first + 1 :]
        banned = " ".join(dict.fromkeys(_BANNED.findall(user)))
        return "\n".join(kept + [banned, "filler " * 320])

    # -- structured answers -------------------------------------------------------------
    def structure(self, user: str, schema: dict) -> str:
        slots = _slots(_property(schema, "constraints", schema), schema)
        if not slots:
            raise ValueError("expand.structure: the schema's 'constraints' must be an object of slots '1'..'N'")
        description = _description(user)
        salt = short_hash(description)
        constraints = {
            key: _shape(_constraint(_slot_dimension(slot, schema), salt + key), slot, schema) for key, slot in slots
        }
        answer = {"description": description, "constraints": constraints, "input": "NULL"}
        return json.dumps(_fit(answer, schema, schema))

    def quality(self, user: str, schema: dict) -> str:
        reject = bool(self.reject_every) and int(short_hash(user), 16) % self.reject_every == 0
        problems = [{"kind": "contradictory", "constraint": 1, "explanation": "scripted rejection"}] if reject else []
        answer = {
            "problems": problems,
            "verdict": "reject" if reject else "pass",
            "repaired_constraints": self._unrepaired(user, schema),
        }
        return json.dumps(_fit(answer, schema, schema))

    def _unrepaired(self, user: str, schema: dict) -> Any:
        """What repaired_constraints holds when nothing is repaired: null, [] or the constraints as they are."""
        node = _property(schema, "repaired_constraints", schema)
        if node is None or _accepts_null(node, schema):
            return None if node is not None else []
        slots = _slots(node, schema)
        if slots is None:
            return []
        listed = _numbered_lines(_before_response(user))
        repaired = {}
        for i, (key, slot) in enumerate(slots):
            dimension = _slot_dimension(slot, schema)
            if i < len(listed):
                item = {"dimension": dimension, "text": listed[i][1], "check": _check_of(listed[i][1])}
            else:
                item = _constraint(dimension, short_hash(user) + key)
            repaired[key] = _shape(item, slot, schema)
        return repaired

    def perturb(self, user: str, schema: dict) -> str:
        node = _property(schema, "constraints", schema) or {}
        item_schema = _deref(node.get("items"), schema)
        current = [
            {"dimension": _dimension_in(d, item_schema, schema), "text": t, "check": _check_of(t)}
            for d, t in _last_numbered_block(_before_response(user))
        ]
        named = _OPERATION.search(user)
        operation = named.group(1).lower() if named else "revise"
        if operation == "add":
            current.append(_constraint("inclusion", short_hash(user) + str(len(current))))
        elif operation == "delete" and len(current) > 1:
            current.pop()
        if operation in ("delete", "revise") and current:
            current[0] = dict(current[0], text=current[0]["text"] + " Revised.", check=None)
        answer = {
            "constraints": [_shape(item, item_schema, schema) for item in current],
            "explanation": f"scripted {operation}",
        }
        return json.dumps(_fit(answer, schema, schema))


_CONSISTENT = ScriptedResponder()
_LENIENT = ScriptedResponder(lenient_judge=True)


def respond(task: str, body: dict) -> str:
    """The consistent script: every answer meets every constraint."""
    return _CONSISTENT(task, body)


def lenient_respond(task: str, body: dict) -> str:
    """The same script with a judge that gives 10 to everything: what code checks must overrule."""
    return _LENIENT(task, body)


def answer(prompt: str) -> str:
    """A response that meets every constraint of a TRACE-layout prompt (by mark and keyword)."""
    return _CONSISTENT.answer(prompt)


def judge(user: str, schema: dict | None = None) -> str:
    """The consistent judge on a judge prompt (graded count from `schema`, else every numbered line)."""
    return _CONSISTENT.judge(user, schema or {})
