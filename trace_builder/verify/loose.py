"""The response variants that loose mode also tries, as IFEval's loose accuracy does."""

from __future__ import annotations


def loose_variants(response: str, extra: list[str] | None = None) -> list[tuple[str, str]]:
    """(name, text) variants of `response`, not including the response itself.

    IFEval's set: every '*' removed (markdown emphasis), the first line dropped (a preamble
    such as "Sure, here it is:"), the last line dropped (a sign-off), both, and the same
    three on the '*'-free text. `extra` adds kind-specific candidates. Variants that are
    empty or repeat an earlier one are left out, so nothing is checked twice.
    """
    seen = {response}
    variants: list[tuple[str, str]] = []

    def add(name: str, text: str) -> None:
        if text.strip() and text not in seen:
            seen.add(text)
            variants.append((name, text))

    no_stars = response.replace("*", "")
    for prefix, text in (("", response), ("no emphasis, ", no_stars)):
        if prefix:
            add("no emphasis", text)
        lines = text.split("\n")
        add(prefix + "first line dropped", "\n".join(lines[1:]).strip())
        add(prefix + "last line dropped", "\n".join(lines[:-1]).strip())
        add(prefix + "first and last lines dropped", "\n".join(lines[1:-1]).strip())
    for text in extra or []:
        add("extracted", text)
    return variants
