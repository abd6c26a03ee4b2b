"""Measure deterministic-checker throughput (checks/s) per kind and for a realistic mix, strict and loose.

Usage: python scripts/bench_checks.py [--seconds 0.2] [--kinds word_count,title]
Responses are synthetic but shaped like real ones: English and Chinese, a few hundred
characters to a few KB, prose with markdown headings, lists, a table and sometimes code.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time

EN_SENTENCES = [
    "Artificial intelligence is changing how teams plan and ship their work.",
    "A careful rollout starts with a small pilot and clear success measures.",
    "Dr. Lee found that response times fell by 3.5 seconds on average.",
    "Is the extra complexity worth it for a team of five?",
    "The budget, the timeline and the risks should be reviewed every month.",
    "Users care about privacy, so collect only the data you need!",
    "In short, measure first and automate second.",
]
ZH_SENTENCES = [
    "人工智能正在改变团队规划和交付工作的方式。",
    "稳妥的推广应从小规模试点开始，并设定清晰的成功指标。",
    "研究发现，平均响应时间缩短了3.5秒。",
    "对于一个五人团队来说，额外的复杂度值得吗？",
    "预算、时间表和风险应每月复查一次。",
    "用户重视隐私，因此只收集必要的数据！",
    "总之，先衡量，再自动化。",
]


def make_response(rng: random.Random, language: str, target_chars: int) -> str:
    """A markdown answer of about `target_chars` characters in `language` ('en' or 'zh')."""
    pool = EN_SENTENCES if language == "en" else ZH_SENTENCES
    joiner = " " if language == "en" else ""
    parts = ["<<Rollout Plan>>" if language == "en" else "<<推广计划>>", ""]
    section = 0
    while sum(len(p) for p in parts) < target_chars:
        section += 1
        parts.append(f"## {'Section' if language == 'en' else '第'} {section}")
        parts.append(joiner.join(rng.choice(pool) for _ in range(rng.randint(2, 4))))
        shape = rng.randrange(4)
        if shape == 0:
            parts += [f"{i}. {rng.choice(pool)}" for i in range(1, rng.randint(3, 6))]
        elif shape == 1:
            parts += [f"- **{rng.choice(pool)[:12]}** {rng.choice(pool)}" for _ in range(rng.randint(2, 5))]
        elif shape == 2:
            parts += ["| Item | Owner | Due |", "|---|---|---|"]
            parts += [f"| {rng.choice(pool)[:10]} | Ann | 2025-0{i} |" for i in range(1, rng.randint(3, 6))]
        else:
            parts += ["```python", "def score(x):", "    return x * 2  # 😀 not prose", "```"]
        parts.append("")
    parts.append("P.S. Questions welcome." if language == "en" else "附言：欢迎提问。")
    return "\n".join(parts)


SPECS: list[dict] = [
    {"kind": "word_count", "params": {"min": 100, "max": 400}},
    {"kind": "char_count", "params": {"max": 2000}},
    {"kind": "sentence_count", "params": {"min": 5}},
    {"kind": "paragraph_count", "params": {"exact": 4}},
    {"kind": "sentence_length", "params": {"max_words": 25}},
    {"kind": "keyword_include", "params": {"keywords": ["privacy", "隐私", "budget"], "require": "any"}},
    {"kind": "keyword_exclude", "params": {"keywords": ["blockchain", "区块链"]}},
    {"kind": "keyword_frequency", "params": {"keyword": "team", "min": 2}},
    {"kind": "json_valid", "params": {"required_keys": ["plan"]}},
    {"kind": "markdown_table", "params": {"min_rows": 2, "min_columns": 3}},
    {"kind": "heading_count", "params": {"min": 3, "level": 2}},
    {"kind": "heading_levels", "params": {"max_level": 3}},
    {"kind": "numbered_list_items", "params": {"min": 3}},
    {"kind": "bullet_list_items", "params": {"min": 3}},
    {"kind": "list_item_length", "params": {"max": 40}},
    {"kind": "code_block", "params": {"language": "python"}},
    {"kind": "section_count", "params": {"marker": "Section", "min": 2}},
    {"kind": "placeholders", "params": {"min_count": 1}},
    {"kind": "title", "params": {"exact_length": 11}},
    {"kind": "postscript", "params": {"marker": "P.S."}},
    {"kind": "numeric_citations", "params": {"min_count": 2}},
    {"kind": "response_language", "params": {"language": "en"}},
    {"kind": "all_lowercase", "params": {}},
    {"kind": "all_uppercase", "params": {}},
    {"kind": "capital_word_count", "params": {"max": 3}},
    {"kind": "starts_with", "params": {"phrase": "<<"}},
    {"kind": "ends_with", "params": {"phrase": "Questions welcome."}},
    {"kind": "ends_with_question", "params": {}},
    {"kind": "no_commas", "params": {}},
    {"kind": "wrapped_in_quotes", "params": {}},
    {"kind": "bold_count", "params": {"min": 2}},
    {"kind": "highlight_count", "params": {"min": 2}},
    {"kind": "emoji_present", "params": {}},
    {"kind": "emoji_absent", "params": {}},
]


def rate(run: object, calls_per_round: int, seconds: float) -> float:
    """Calls per second of `run()` (which makes `calls_per_round` checks), timed for ~`seconds`."""
    rounds, start = 0, time.perf_counter()
    while True:
        run()  # type: ignore[operator]
        rounds += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return rounds * calls_per_round / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.2, help="timing budget per table cell")
    parser.add_argument("--kinds", default="", help="comma-separated kinds to time (default: all)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    from trace_builder.verify import KINDS, run_check, validate_spec
    from trace_builder.verify.language import detect_language

    import_s = time.perf_counter() - start
    rng = random.Random(0)
    sizes = [300, 800, 1500, 3000, 5000]
    responses = [make_response(rng, lang, size) for lang in ("en", "zh") for size in sizes]
    specs = [validate_spec(raw) for raw in SPECS]
    assert all(spec is not None for spec in specs), "a benchmark spec is invalid"
    wanted = set(args.kinds.split(",")) - {""} if args.kinds else set(KINDS)
    missing = set(KINDS) - {s.kind for s in specs}  # type: ignore[union-attr]
    if missing:
        print(f"note: kinds not in the mix: {sorted(missing)}", file=sys.stderr)

    start = time.perf_counter()
    detect_language(responses[len(sizes) - 1])  # the longest English one: trigram models load
    first_low_s = time.perf_counter() - start
    start = time.perf_counter()
    detect_language("Short text.")
    first_high_s = time.perf_counter() - start

    lengths = [len(r) for r in responses]
    print(
        f"python {platform.python_version()} on {platform.machine()}, {len(responses)} responses "
        f"(en+zh, {min(lengths)}..{max(lengths)} chars, median {statistics.median(lengths):.0f})"
    )
    print(
        f"import trace_builder.verify: {import_s * 1000:.0f} ms; language detector first use: "
        f"low-accuracy {first_low_s * 1000:.0f} ms, high-accuracy (short texts) {first_high_s * 1000:.0f} ms"
    )
    print()
    print(f"{'kind':<22} {'strict/s':>10} {'loose/s':>10} {'pass strict':>12} {'pass loose':>11}")
    for spec in specs:
        assert spec is not None
        if spec.kind not in wanted:
            continue
        strict = rate(lambda s=spec: [run_check(s, r) for r in responses], len(responses), args.seconds)
        loose = rate(lambda s=spec: [run_check(s, r, "loose") for r in responses], len(responses), args.seconds)
        passed_strict = sum(run_check(spec, r).passed for r in responses)
        passed_loose = sum(run_check(spec, r, "loose").passed for r in responses)
        print(
            f"{spec.kind:<22} {strict:>10,.0f} {loose:>10,.0f} "
            f"{passed_strict:>7}/{len(responses):<4} {passed_loose:>6}/{len(responses):<4}"
        )

    mix = [spec for spec in specs if spec is not None and spec.kind in wanted]
    for mode in ("strict", "loose"):
        per_s = rate(
            lambda m=mode: [run_check(s, r, m) for s in mix for r in responses],
            len(mix) * len(responses),
            max(args.seconds * 5, 1.0),
        )
        print(
            f"\nmix of {len(mix)} kinds x {len(responses)} responses, {mode}: {per_s:,.0f} checks/s "
            f"({1e6 / per_s:.0f} us/check)",
            end="",
        )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
