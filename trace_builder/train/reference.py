"""Precomputed IOPO reference log-probs: a Parquet file next to the output, reused when its fingerprint matches."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from trace_builder.run.store import write_table_atomic
from trace_builder.train.data import PAIRINGS, IOPOExample

REFERENCE_FILE = "reference_logps.parquet"
_FINGERPRINT_KEY = b"trace_build.fingerprint"


def data_fingerprint(examples: list[IOPOExample]) -> str:
    """Hash of exactly what the reference scores: the token ids of every group (template, system prompt,
    truncation all show up here)."""
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(ex.id.encode())
        for prompt, completion in ex.sequences:
            digest.update(repr((prompt, completion)).encode())
    return digest.hexdigest()


@torch.no_grad()
def model_fingerprint(model: torch.nn.Module) -> str:
    """Hash of parameter names, shapes and per-tensor sums: cheap, and changes when the weights do."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(f"{name}:{tuple(param.shape)}:{param.detach().double().sum().item():.10e}".encode())
    return digest.hexdigest()


def fingerprint(examples: list[IOPOExample], model: torch.nn.Module) -> str:
    return hashlib.sha256((data_fingerprint(examples) + model_fingerprint(model)).encode()).hexdigest()[:32]


def save_reference(path: Path, logps: dict[str, tuple[float, ...]], fingerprint_: str) -> None:
    """Write atomically (temp name, then rename) so a crash never leaves a half file to be reused."""
    ids = sorted(logps)
    columns = {"id": pa.array(ids, pa.string())}
    for i, name in enumerate(PAIRINGS):
        columns[name] = pa.array([logps[k][i] for k in ids], pa.float64())
    write_table_atomic(path, pa.table(columns).replace_schema_metadata({_FINGERPRINT_KEY: fingerprint_.encode()}))


def load_reference(path: Path, fingerprint_: str) -> dict[str, tuple[float, ...]] | None:
    """The stored log-probs when the file exists and was made from the same data and model, else None."""
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except Exception:  # an unreadable file is simply recomputed
        return None
    stored = (table.schema.metadata or {}).get(_FINGERPRINT_KEY, b"").decode()
    if stored != fingerprint_:
        return None
    rows = table.to_pylist()
    return {r["id"]: tuple(r[name] for name in PAIRINGS) for r in rows}
