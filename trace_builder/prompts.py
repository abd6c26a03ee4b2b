"""Render the Jinja2 prompt templates (one per LLM task and language) into chat messages."""

from __future__ import annotations

import hashlib
from functools import lru_cache

import jinja2

from trace_builder.resources import prompts_dir

# A template holds both messages, split by this marker line; text above it is the system
# message. Keeping both in one file keeps a task's whole prompt in one place.
_USER_MARKER = "=== user ==="
LANGUAGES = ("en", "zh")


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(prompts_dir())),
        undefined=jinja2.StrictUndefined,  # a missing variable is a bug, not an empty string
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render_messages(task: str, language: str, **variables: object) -> list[dict[str, str]]:
    """Messages for `task` in `language` ('en' or 'zh'; anything else falls back to 'en')."""
    language = language if language in LANGUAGES else "en"
    text = _environment().get_template(f"{language}/{task}.j2").render(**variables)
    system, _, user = text.partition(_USER_MARKER)
    if not user:
        return [{"role": "user", "content": system.strip()}]
    return [{"role": "system", "content": system.strip()}, {"role": "user", "content": user.strip()}]


def prompts_digest(name: str = "*.j2") -> str:
    """A hash of the templates named (all by default, in every language): editing a prompt changes
    the outputs, so the fingerprint too."""
    digest = hashlib.sha256()
    for path in sorted(prompts_dir().rglob(name)):
        digest.update(str(path.relative_to(prompts_dir())).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
