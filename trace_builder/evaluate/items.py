"""One item shape for evaluation, whether it comes from the official TRACE file or from our eval split."""

from __future__ import annotations

from dataclasses import dataclass, field

UNKNOWN_DIMENSION = "unknown"


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
