"""Deterministic constraint checks: a registry of check kinds an LLM can cite and code can decide.

A spec is {"kind": name, "params": {...}}; `validate_spec` turns untrusted JSON into a
CheckSpec (or None), `run_check` decides a response against it, strictly or loosely.
Importing the package registers every built-in kind.
"""

from trace_builder.verify.registry import (
    DIMENSION_IDS,
    KINDS,
    CheckKind,
    CheckSpec,
    Verdict,
    check_spec_json_schema,
    describe_kinds,
    kinds_for_dimension,
    run_check,
    validate_spec,
)

# Registration happens on import; the order fixes nothing but keeps families together.
from trace_builder.verify import answers, counts, keywords, language, structure, style  # noqa: E402,F401  isort: skip

__all__ = [
    "DIMENSION_IDS",
    "KINDS",
    "CheckKind",
    "CheckSpec",
    "Verdict",
    "check_spec_json_schema",
    "describe_kinds",
    "kinds_for_dimension",
    "run_check",
    "validate_spec",
]
