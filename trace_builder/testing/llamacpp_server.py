"""A real OpenAI-compatible server none of us wrote: llama-cpp-python's, serving the embedded GGUF on 127.0.0.1.

    with llamacpp_server() as base_url: ...

Needs `llama-cpp-python[server]` (in the test extra; a source build, about 7 minutes on 2 cores,
cached as a wheel afterwards). The GGUF is the embedded model's, assembled from its PyPI
package. The server is stopped (SIGTERM, then SIGKILL) when the block ends; waiting for it is
bounded. The chat format is vicuna's ("USER: ... ASSISTANT:"): the embedded model is a base
model, which continues a plain transcript with an answer, as the embedded engines prompt it
(chat_format.py), where Gemma's turn markers make it echo the question.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

MODEL_ALIAS = "gemma-270m"


def installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("uvicorn") is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def llamacpp_server(start_timeout_s: float = 120.0, n_ctx: int = 8192) -> Iterator[str]:
    """llama-cpp-python's server with the embedded GGUF; yields its base URL (model name MODEL_ALIAS)."""
    from trace_builder.llm.model_files import embedded_gguf

    port = _free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf()),
        "--host", "127.0.0.1", "--port", str(port), "--model_alias", MODEL_ALIAS,
        "--n_ctx", str(n_ctx), "--chat_format", "vicuna", "--interrupt_requests", "false", "--verbose", "false",
        "--n_threads", str(os.cpu_count() or 1),
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited ({proc.returncode}): {proc.stderr.read()[-500:]}")
            try:
                with urllib.request.urlopen(base_url + "/models", timeout=2) as response:
                    if json.loads(response.read())["data"]:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama.cpp server did not answer within {start_timeout_s:.0f} s")
            time.sleep(0.2)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        if proc.stderr is not None:
            proc.stderr.close()
