"""What every stage gets: the config, the LLM client, the run directory, and a private RNG per row."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from trace_builder.config import RunConfig
from trace_builder.llm.client import LLMClient
from trace_builder.llm.roles import RoleClients


@dataclass
class StageContext:
    config: RunConfig
    run_dir: Path
    client: RoleClients | LLMClient | None  # each request to its role's client; None for stages that ask no LLM

    def rng(self, *keys: object) -> random.Random:
        """Randomness that depends only on the run seed and the row: reruns and resumes agree."""
        blob = "\x00".join(str(k) for k in (self.config.seed, *keys)).encode("utf-8")
        return random.Random(int.from_bytes(hashlib.sha256(blob).digest()[:8], "big"))

    def llm_seed(self, *keys: object) -> int:
        """A per-request sampling seed, so sampled answers are reproducible where servers allow."""
        return self.rng("llm", *keys).randrange(2**31)
