"""Prompts, configs and the built-in seeds work from a built wheel, not only from a checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import sys
sys.path = [p for p in sys.path if p.rstrip('/') != {root!r}]
import trace_builder
from trace_builder.config import load_config
from trace_builder.prompts import render_messages
from trace_builder.seeds import load_builtin_seeds
assert trace_builder.__file__.startswith({site!r}), trace_builder.__file__
assert load_config().backend.kind == 'local'
assert render_messages('judge', 'zh', description='d', constraints=['c'], input_text='NULL', response='r')
assert len(load_builtin_seeds()) >= 200
print('ok')
"""


def test_wheel_carries_prompts_configs_and_seeds(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("trace_build-*.whl"))
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = PROBE.format(root=str(ROOT), site=str(site))
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
