"""One item shape for evaluation, whether it comes from the official TRACE file or from our eval split."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Han ideographs, kana and CJK punctuation: enough to tell Chinese prompts from English ones.
_CJK = re.compile(r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
_LATIN = re.compile(r"[A-Za-z]")
# Chinese prompts often quote code, brand names or English titles; a fifth of the letters
# being CJK already means the instruction is written in Chinese (the official file's
# Chinese items never fall below 0.4, its English ones are at 0).
_ZH_SHARE = 0.2

UNKNOWN_DIMENSION = "unknown"


def detect_language(text: str) -> str:
    """'zh' when CJK characters make up a fair share of the letters, else 'en'."""
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN.findall(text))
    if cjk == 0:
        return "en"
    return "zh" if cjk / (cjk + latin) >= _ZH_SHARE else "en"


@dataclass(frozen=True)
class EvalItem:
    """An instruction to answer and judge.

    `constraints` are plain texts without their numbers (what the judge scores);
    `prompt` is the user message exactly as the model under test receives it.
    `dimensions` are taxonomy ids aligned with `constraints` ('unknown' for labels
    outside the 26); `dimension_labels` keep the source's own labels.
    """

    id: str
    source: str  # 'official' | 'ours'
    language: str
    system: str
    prompt: str
    description: str
    constraints: tuple[str, ...]
    dimensions: tuple[str, ...]
    input_text: str
    category: str = ""
    dimension_labels: tuple[str, ...] = field(default_factory=tuple)
    reference: str = ""  # the dataset's own response, when it has one
    # Deterministic check specs aligned with `constraints` (None where a constraint has
    # none); the official file carries none, our data may.
    checks: tuple[object, ...] | None = None

    @property
    def constraint_count(self) -> int:
        return len(self.constraints)

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.prompt}]
