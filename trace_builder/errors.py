"""User-facing errors: one line naming the problem and the fix, never a traceback."""

from __future__ import annotations

import re
import traceback


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing file, unreachable server, ...).

    The CLI prints `error: <message>` and exits with status 2; the message must say
    what is wrong and how to fix it, in one line.
    """


class LLMError(Exception):
    """An LLM request that failed for good (after retries); `reason` is short and stable."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ServerRefused(Exception):
    """A server that answers every request of a kind with the same refusal: the run stops with one
    line quoting the server and naming the setting to change, exit 1 (finished shards are kept)."""


# Modules whose pip package has another name.
_PACKAGE_OF_MODULE = {"llama_cpp": "llama-cpp-python", "gguf": "gguf", "yaml": "pyyaml", "sklearn": "scikit-learn"}
_PIP_HINT = re.compile(r"pip install [\w\[\]<>=.,'\"-]+")


class ModelLoadError(Exception):
    """A model that could not be loaded (a missing package, a broken file, no memory).

    Not the user's typo but the environment: the CLI prints one line with the cause and the
    fix and exits 1; the whole traceback (kept in `details`) goes to a log file the line names.
    """

    def __init__(self, model: str, cause: BaseException, fix: str):
        self.model = model
        self.cause = f"{type(cause).__name__}: {_first_line(cause)}"
        self.fix = fix
        self.details = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
        super().__init__(f"cannot load model {model} ({self.cause}): {fix}")

    @classmethod
    def of(cls, model: str, cause: BaseException, otherwise: str) -> ModelLoadError:
        """The error for `cause`, whose fix is a package to install when that is what is missing, else `otherwise`."""
        return cls(model, cause, missing_package_fix(cause) or otherwise)


def missing_package_fix(exc: BaseException) -> str | None:
    """`pip install X` when `exc` says a package is missing (an ImportError, or a library's own hint)."""
    if isinstance(exc, ImportError) and exc.name:
        top = exc.name.split(".")[0]
        return f"pip install {_PACKAGE_OF_MODULE.get(top, top.replace('_', '-'))}"
    found = _PIP_HINT.search(str(exc))
    return found.group(0).strip("'\"`") if found else None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else "no message"
