"""Shared fixtures: the scripted OpenAI-compatible server and a small run config."""

from __future__ import annotations

import os

import pytest

from trace_builder.testing.devserver import Faults, ScriptedServer
from trace_builder.testing.scripted import respond

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def scripted_server():
    with ScriptedServer(respond) as server:
        yield server


@pytest.fixture
def faulty_server():
    faults = Faults(rate_limit_every=5, server_error_every=7, hang_every=13, malformed_json_every=9, hang_s=3.0)
    with ScriptedServer(respond, faults=faults) as server:
        yield server


def write_config(path, base_url: str, **overrides) -> str:
    """A YAML run config pointing at the scripted server; `overrides` are top-level YAML snippets."""
    text = f"""
seed: 7
shard_size: {overrides.pop("shard_size", 8)}
backend:
  kind: openai
  model: scripted
  base_urls: ["{base_url}"]
  concurrency: {overrides.pop("concurrency", 16)}
  timeout_s: {overrides.pop("timeout_s", 30)}
  max_retries: 4
generation:
  temperature: 0.0
seeds:
  source: builtin
  limit: {overrides.pop("limit", 24)}
filter:
  eval_size: {overrides.pop("eval_size", 3)}
  eval_max_share: {overrides.pop("eval_max_share", 1.0)}
  train_size: null
"""
    for key, value in overrides.items():
        text += f"{key}: {value}\n"
    path.write_text(text)
    return str(path)


@pytest.fixture
def one_thread():
    """Torch on one thread: a tiny model gains nothing from threads, and on a shared 2-core box
    OpenMP spinning against other processes slows every step by orders of magnitude."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def quick_train_config(method: str, data, model, output, **overrides):
    """A training config for a few CPU steps on a small dataset: every step logged, a constant rate."""
    from trace_builder.train.config import load_config

    settings = dict(
        data=str(data),
        model=str(model),
        output=str(output),
        max_steps=12,
        learning_rate=5e-3,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        logging_steps=1,
        max_length=128,
        num_train_epochs=1,
        warmup_ratio=0.0,
        lr_scheduler_type="constant",
        device="cpu",
    )
    return load_config(method, **{**settings, **overrides})
