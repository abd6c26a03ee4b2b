"""Build the backend a config asks for; heavy backends are imported only when chosen."""

from __future__ import annotations

from pathlib import Path

from trace_builder.config import BACKEND_KINDS, BackendConfig, BatchConfig
from trace_builder.errors import UserError
from trace_builder.llm.base import Backend


def make_backend(config: BackendConfig, *, batch: BatchConfig | None = None, run_dir: Path | None = None) -> Backend:
    """The backend `config` asks for; in batch mode (`config.batch`), answering through the Batch API
    in waves shaped by `batch`, its pending batches recorded in `run_dir`."""
    if config.kind == "openai":
        from trace_builder.llm.openai_backend import OpenAIBackend
        from trace_builder.llm.ratelimit import RateLimit

        direct = OpenAIBackend(
            model=config.model,
            base_urls=config.base_urls,
            api_key=config.api_key,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
            storm_after_s=config.storm_after_s,
            rate_limit=RateLimit(config.requests_per_minute, config.tokens_per_minute),
            structured_output=config.structured_output,
        )
        if not config.batch:
            return direct
        if batch is None or run_dir is None:
            raise UserError(
                "batch mode records its batches in a run folder, and this command has none: drop backend.batch here"
            )
        from trace_builder.llm.batch import BatchBackend

        return BatchBackend(direct, batch, run_dir, config.concurrency)
    if config.kind == "local":
        return _local_backend(config)
    if config.kind == "vllm":
        from trace_builder.llm.vllm_backend import VLLMBackend

        return VLLMBackend(model=config.model, engine_args=config.engine_args)
    raise UserError(f"unknown backend {config.kind!r}: use {', '.join(BACKEND_KINDS)}")


async def preflight(backend: Backend) -> None:
    """Fail fast with a clear line before any work starts: check a server, or load a local model."""
    for step in ("preflight", "start"):
        call = getattr(backend, step, None)
        if call is not None:
            await call()


def _local_backend(config: BackendConfig) -> Backend:
    """The embedded model (or a local model) on llama.cpp when it is installed and can read the model
    (the embedded GGUF, or a .gguf file), else on torch."""
    from trace_builder.llm import llamacpp_engine
    from trace_builder.llm.model_files import EMBEDDED_MODEL

    reads_gguf = config.model == EMBEDDED_MODEL or config.model.endswith(".gguf")
    engine = config.engine
    if engine == "auto":
        engine = "llamacpp" if reads_gguf and llamacpp_engine.available() else "torch"
    if engine == "llamacpp":
        if not llamacpp_engine.available():
            raise UserError(
                "backend.engine is llamacpp but llama-cpp-python is not installed: pip install 'trace-build[llamacpp]'"
            )
        if not reads_gguf:
            raise UserError(
                f"the llamacpp engine reads GGUF files, not {config.model!r}: pass a .gguf or set backend.engine: torch"
            )
        return llamacpp_engine.LlamaCppBackend(config.model)
    from trace_builder.llm.local import LocalBackend

    return LocalBackend(model=config.model, batch_size=config.batch_size, onednn=config.onednn_linears)
