"""Locate the package's files (prompts/, configs/, the official TRACE eval set), in a checkout and in an installed wheel."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    # A wheel carries the folder inside the package (force-include in pyproject);
    # a checkout or an editable install has it beside the package.
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"trace-build is installed without its {name}/ folder; reinstall the package")


def prompts_dir() -> Path:
    return _find("prompts")


def configs_dir() -> Path:
    return _find("configs")


def official_eval_path() -> Path:
    """The official TRACE eval set (1,042 items; MIT, its licence beside it), shipped with the package."""
    return _PACKAGE / "data" / "trace_eval_official.jsonl"
