"""Tests for the constraint taxonomy and constraint-plan sampling."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from trace_builder import taxonomy
from trace_builder.taxonomy import (
    DIMENSIONS,
    EVAL_COUNT_HISTOGRAM,
    TRAIN_COUNT_HISTOGRAM,
    TYPES,
    ConstraintPlan,
    dimension_for_label,
    get_dimension,
    plan_for_seed,
    sample_constraint_plan,
)

OFFICIAL_EVAL = Path("/work/shared/data/trace_eval_official.jsonl")

# TRACE.md §2, copied by hand: (type, id, Chinese label as released, count in eval set).
EXPECTED = [
    ("content", "theme", "主题约束", 280),
    ("content", "exclusion", "排除约束", 73),
    ("content", "inclusion", "包含约束", 999),
    ("content", "value", "价值观约束", 109),
    ("content", "privacy", "隐私约束", 30),
    ("content", "numerical", "数值约束", 890),
    ("situation", "role_playing", "角色扮演约束", 107),
    ("situation", "target_audience", "受众目标约束", 106),
    ("situation", "prior_condition", "先验条件约束", 79),
    ("situation", "nl_process_background", "自然语言流程背景信息约束", 168),
    ("situation", "markdown_process_background", "markdown流程背景信息约束", 16),
    ("situation", "table_background", "表格背景信息约束", 41),
    ("situation", "text_background", "文本背景信息约束", 32),
    ("style", "tone_style", "语气风格约束", 376),
    ("style", "emotion", "情感情绪约束", 43),
    ("style", "linguistic_characteristics", "语言特征约束", 68),
    ("style", "multilingual", "多语言约束", 21),
    ("format", "output_format", "输出格式约束", 564),
    ("format", "text_pattern", "文本样式约束", 259),
    ("format", "grammar_structure", "语法结构约束", 107),
    ("format", "citation", "引用和参考约束", 199),
    ("format", "numbering_list", "编号和列表约束", 152),
    ("format", "hierarchical_structure", "层次化结构约束", 241),
    ("format", "template", "模版约束", 77),
    ("example", "positive_example", "正例约束", 32),
    ("example", "negative_example", "负例约束", 16),
]


def test_taxonomy_matches_trace_table():
    assert len(DIMENSIONS) == 26
    assert TYPES == ("content", "situation", "style", "format", "example")
    got = [(d.type, d.id, d.label_zh, d.eval_count) for d in DIMENSIONS]
    assert got == EXPECTED
    assert len({d.id for d in DIMENSIONS}) == 26
    assert len({d.label_en for d in DIMENSIONS}) == 26
    assert Counter(d.type for d in DIMENSIONS) == {"content": 6, "situation": 7, "style": 4, "format": 7, "example": 2}


def test_every_dimension_has_written_texts():
    for dim in DIMENSIONS:
        for field in ("label_en", "description_en", "description_zh", "guidance_en", "guidance_zh"):
            value = getattr(dim, field)
            assert isinstance(value, str) and len(value.strip()) >= 4, (dim.id, field)
        # Chinese texts are Chinese, English texts are not.
        assert any("\u4e00" <= ch <= "\u9fff" for ch in dim.description_zh + dim.guidance_zh), dim.id
        assert not any("\u4e00" <= ch <= "\u9fff" for ch in dim.description_en + dim.guidance_en), dim.id
        assert dim.label("zh") == dim.label_zh and dim.label("en") == dim.label_en


def test_dimension_is_frozen():
    with pytest.raises(AttributeError):
        DIMENSIONS[0].id = "other"  # type: ignore[misc]


def test_get_dimension():
    assert get_dimension("numerical").label_zh == "数值约束"
    with pytest.raises(KeyError, match="unknown constraint dimension 'nope'.*theme"):
        get_dimension("nope")


@pytest.mark.parametrize(
    "label,expected",
    [
        ("role_playing", "role_playing"),
        ("Role-Playing Constraint", "role_playing"),
        ("  role playing ", "role_playing"),
        ("ROLE_PLAYING", "role_playing"),
        ("角色扮演约束", "role_playing"),
        ("角色扮演", "role_playing"),
        ("markdown流程背景信息约束", "markdown_process_background"),
        ("Markdown流程背景信息约束", "markdown_process_background"),
        ("输出格式约束", "output_format"),
        ("Theme", "theme"),
        ("Citation and Reference Constraint", "citation"),
    ],
)
def test_dimension_for_label_known(label, expected):
    found = dimension_for_label(label)
    assert found is not None and found.id == expected


@pytest.mark.parametrize("label", ["输入格式约束", "·", "", "   ", "constraint", "约束", "banana"])
def test_dimension_for_label_unknown(label):
    assert dimension_for_label(label) is None


def test_every_label_form_resolves_to_its_own_dimension():
    for dim in DIMENSIONS:
        for label in (dim.id, dim.label_en, dim.label_zh, dim.label_en.upper(), dim.label_zh.lower()):
            assert dimension_for_label(label) is dim


@pytest.mark.skipif(not OFFICIAL_EVAL.exists(), reason="official TRACE eval file not present")
def test_official_eval_labels_map_to_dimensions():
    counts: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    with OFFICIAL_EVAL.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            assert len(record["levels2"]) == len(record["constraints_splits"])
            for label in record["levels2"]:
                dim = dimension_for_label(label)
                if dim is None:
                    unknown[label] += 1
                else:
                    counts[dim.id] += 1
    assert unknown == Counter({"输入格式约束": 1, "·": 1})
    # The per-dimension counts of TRACE.md §2 are those of the released file.
    assert counts == {d.id: d.eval_count for d in DIMENSIONS}


def test_histograms_match_trace_facts():
    assert len(TRAIN_COUNT_HISTOGRAM) == len(EVAL_COUNT_HISTOGRAM) == 15
    assert sum(TRAIN_COUNT_HISTOGRAM) == 119_345
    assert sum(EVAL_COUNT_HISTOGRAM) == 1_042
    assert EVAL_COUNT_HISTOGRAM[0] == 200  # the single-constraint (IF-S) items

    def mean(h):
        return sum((i + 1) * v for i, v in enumerate(h)) / sum(h)

    assert mean(TRAIN_COUNT_HISTOGRAM) == pytest.approx(4.36, abs=0.005)
    assert mean(EVAL_COUNT_HISTOGRAM) == pytest.approx(4.88, abs=0.01)


def test_sampled_count_follows_train_histogram():
    rng = random.Random(7)
    plans = [sample_constraint_plan(rng, TRAIN_COUNT_HISTOGRAM) for _ in range(5000)]
    counts = [p.count for p in plans]
    assert sum(counts) / len(counts) == pytest.approx(4.36, abs=0.1)
    assert min(counts) >= 1 and max(counts) <= 15
    for plan in plans:
        assert len(plan.dimensions) == plan.count


def test_sampled_count_follows_eval_histogram():
    rng = random.Random(11)
    counts = Counter(sample_constraint_plan(rng, EVAL_COUNT_HISTOGRAM).count for _ in range(5000))
    # 200/1042 of eval items have one constraint.
    assert counts[1] / 5000 == pytest.approx(200 / 1042, abs=0.02)


def test_plan_dimensions_in_taxonomy_order_and_bounded():
    rng = random.Random(3)
    order = {d.id: i for i, d in enumerate(DIMENSIONS)}
    for _ in range(2000):
        plan = sample_constraint_plan(rng, TRAIN_COUNT_HISTOGRAM, max_per_dimension=2)
        positions = [order[d] for d in plan.dimensions]
        assert positions == sorted(positions)
        assert max(Counter(plan.dimensions).values()) <= 2


def test_max_per_dimension_one_means_distinct():
    rng = random.Random(5)
    for _ in range(500):
        plan = sample_constraint_plan(rng, [0] * 9 + [1], max_per_dimension=1)
        assert plan.count == 10
        assert len(set(plan.dimensions)) == 10


def test_repetition_happens_when_allowed():
    rng = random.Random(5)
    plans = [sample_constraint_plan(rng, [0] * 11 + [1], max_per_dimension=3) for _ in range(200)]
    assert any(max(Counter(p.dimensions).values()) > 1 for p in plans)
    assert all(max(Counter(p.dimensions).values()) <= 3 for p in plans)


def test_default_weights_are_roughly_uniform():
    rng = random.Random(13)
    tally: Counter[str] = Counter()
    for _ in range(4000):
        tally.update(sample_constraint_plan(rng, [1], max_per_dimension=1).dimensions)
    assert set(tally) == {d.id for d in DIMENSIONS}
    expected = 4000 / 26
    assert all(abs(n - expected) < 0.35 * expected for n in tally.values())


def test_weights_are_respected():
    rng = random.Random(17)
    weights = {d.id: 0.0 for d in DIMENSIONS}
    weights.update(inclusion=3.0, numerical=1.0)
    tally: Counter[str] = Counter()
    for _ in range(4000):
        tally.update(sample_constraint_plan(rng, [1], weights).dimensions)
    assert set(tally) == {"inclusion", "numerical"}
    assert tally["inclusion"] / 4000 == pytest.approx(0.75, abs=0.03)


def test_zero_weight_excludes_and_missing_weight_defaults_to_one():
    rng = random.Random(19)
    tally: Counter[str] = Counter()
    for _ in range(1500):
        tally.update(sample_constraint_plan(rng, TRAIN_COUNT_HISTOGRAM, {"privacy": 0, "inclusion": 0}).dimensions)
    assert "privacy" not in tally and "inclusion" not in tally
    assert len(tally) == 24


def test_eval_dimension_counts_work_as_weights():
    rng = random.Random(23)
    tally: Counter[str] = Counter()
    for _ in range(3000):
        tally.update(sample_constraint_plan(rng, [1], taxonomy.EVAL_DIMENSION_COUNTS).dimensions)
    assert tally.most_common(1)[0][0] in {"inclusion", "numerical"}


def test_count_is_clamped_to_what_weights_allow():
    rng = random.Random(29)
    only_two = {d.id: 0.0 for d in DIMENSIONS} | {"theme": 1.0, "value": 1.0}
    for _ in range(100):
        plan = sample_constraint_plan(rng, TRAIN_COUNT_HISTOGRAM, only_two, max_per_dimension=2)
        assert plan.count <= 4
        assert len(plan.dimensions) == plan.count
        assert set(plan.dimensions) <= {"theme", "value"}
    plan = sample_constraint_plan(rng, [0] * 14 + [1], only_two, max_per_dimension=2)
    assert plan == ConstraintPlan(count=4, dimensions=("theme", "theme", "value", "value"))


@pytest.mark.parametrize(
    "histogram,weights,max_per,message",
    [
        ([], None, 2, "histogram is empty"),
        ([0, 0], None, 2, "sums to zero"),
        ([1, -1], None, 2, "negative"),
        ([1, float("nan")], None, 2, "non-finite"),
        ([1], {"banana": 1, "theme": 1, "apple": 2}, 2, "apple, banana"),
        ([1], {"theme": -1}, 2, "'theme'"),
        ([1], {"theme": "heavy"}, 2, "'theme'"),
        ([1], {d.id: 0 for d in DIMENSIONS}, 2, "every dimension weight is zero"),
        ([1], None, 0, "max_per_dimension"),
    ],
)
def test_invalid_inputs_raise_value_error(histogram, weights, max_per, message):
    with pytest.raises(ValueError, match=message):
        sample_constraint_plan(random.Random(0), histogram, weights, max_per)


def test_sampling_is_deterministic_given_rng():
    a = [sample_constraint_plan(random.Random(99), TRAIN_COUNT_HISTOGRAM) for _ in range(3)]
    b = [sample_constraint_plan(random.Random(99), TRAIN_COUNT_HISTOGRAM) for _ in range(3)]
    assert a == b


def test_plan_for_seed_is_deterministic_and_order_free():
    ids = [f"seed-{i}" for i in range(50)]
    first = {i: plan_for_seed(i, 1, TRAIN_COUNT_HISTOGRAM, None, 2) for i in ids}
    second = {i: plan_for_seed(i, 1, TRAIN_COUNT_HISTOGRAM, None, 2) for i in reversed(ids)}
    assert first == second
    # Different seeds and a different run seed give different plans.
    assert len({p.dimensions for p in first.values()}) > 40
    other_run = {i: plan_for_seed(i, 2, TRAIN_COUNT_HISTOGRAM, None, 2) for i in ids}
    assert other_run != first


def test_plan_for_seed_is_frozen():
    # Fixed values (sha256 + random.Random, no hash()): if these change, every existing
    # run's plans change with them, so its cached stages no longer match.
    assert plan_for_seed("abc", 0) == ConstraintPlan(
        count=4, dimensions=("target_audience", "linguistic_characteristics", "output_format", "grammar_structure")
    )
    assert plan_for_seed("0123456789abcdef", 42, EVAL_COUNT_HISTOGRAM) == ConstraintPlan(
        count=4, dimensions=("theme", "target_audience", "table_background", "table_background")
    )
