"""LLM access: one small async interface, several backends, a cache in front."""

from trace_builder.llm.base import Backend, ChatRequest, ChatResult

__all__ = ["Backend", "ChatRequest", "ChatResult"]
