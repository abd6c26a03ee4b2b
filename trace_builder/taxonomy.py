"""TRACE's constraint taxonomy (5 types, 26 dimensions) and the sampling of a constraint plan per seed."""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TYPES: tuple[str, ...] = ("content", "situation", "style", "format", "example")


@dataclass(frozen=True)
class Dimension:
    """One of the 26 constraint dimensions, with what an LLM needs to write such a constraint."""

    id: str
    type: str
    label_en: str
    label_zh: str  # exactly the label used in the released TRACE data (its `levels2` field)
    description_en: str
    description_zh: str
    guidance_en: str
    guidance_zh: str
    eval_count: int  # how often the dimension occurs in the official evaluation set

    def label(self, language: str) -> str:
        return self.label_zh if language == "zh" else self.label_en

    def description(self, language: str) -> str:
        return self.description_zh if language == "zh" else self.description_en

    def guidance(self, language: str) -> str:
        return self.guidance_zh if language == "zh" else self.guidance_en


DIMENSIONS: tuple[Dimension, ...] = (
    # ---- content ----
    Dimension(
        id="theme",
        type="content",
        label_en="Theme Constraint",
        label_zh="主题约束",
        description_en="Keeps the answer on a given topic, field or angle. Example: 'Focus only on the economic causes of the war.'",
        description_zh="要求回答围绕指定的主题、领域或角度展开。例如：“只讨论这场战争的经济原因。”",
        guidance_en="Name one concrete focus that narrows the task without changing it; avoid vague wording like 'stay relevant'.",
        guidance_zh="给出一个具体的聚焦点来收窄任务，但不改变任务本身；避免“内容要相关”这类空泛说法。",
        eval_count=280,
    ),
    Dimension(
        id="exclusion",
        type="content",
        label_en="Exclusion Constraint",
        label_zh="排除约束",
        description_en="Forbids named content, words or topics in the answer. Example: 'Do not mention any brand names.'",
        description_zh="规定回答中不得出现指定的内容、词语或话题。例如：“不要提及任何品牌名称。”",
        guidance_en="Name exactly what must not appear (words, topics, kinds of content) so that a reader can check it; do not forbid something the task needs.",
        guidance_zh="明确写出不能出现的词语、话题或内容类型，使其可以被逐一核对；不要排除完成任务必需的内容。",
        eval_count=73,
    ),
    Dimension(
        id="inclusion",
        type="content",
        label_en="Inclusion Constraint",
        label_zh="包含约束",
        description_en='Requires named content or keywords to appear in the answer. Example: \'Mention the words "harbor" and "lantern" at least once.\'',
        description_zh="要求回答中必须包含指定的内容或关键词。例如：“文中至少出现一次“灯塔”和“潮汐”。”",
        guidance_en="List the specific keywords, facts or elements that must appear, and say how often or where when it matters.",
        guidance_zh="列出必须出现的具体关键词、事实或要素，必要时说明出现的次数或位置。",
        eval_count=999,
    ),
    Dimension(
        id="value",
        type="content",
        label_en="Value Constraint",
        label_zh="价值观约束",
        description_en="Asks for content that is safe, fair, unbiased and truthful. Example: 'Present both sides fairly without stereotyping any group.'",
        description_zh="要求内容安全、公正、不带偏见且真实可信。例如：“客观呈现双方观点，不对任何群体有刻板印象。”",
        guidance_en="Tie the value requirement to the task (which bias, which risk, which claim must be truthful) instead of a generic 'be ethical'.",
        guidance_zh="把价值观要求与任务结合（避免哪种偏见、哪类风险、哪些说法需真实），不要只写“要符合道德”。",
        eval_count=109,
    ),
    Dimension(
        id="privacy",
        type="content",
        label_en="Privacy Constraint",
        label_zh="隐私约束",
        description_en="Forbids personal or sensitive data in the answer. Example: 'Do not include real names, phone numbers or addresses.'",
        description_zh="要求回答不包含个人信息或敏感数据。例如：“不得出现真实姓名、电话号码或住址。”",
        guidance_en="Say which kinds of personal or sensitive information must be left out or anonymised in this particular task.",
        guidance_zh="说明在这个任务中哪些个人信息或敏感信息必须省略或匿名化处理。",
        eval_count=30,
    ),
    Dimension(
        id="numerical",
        type="content",
        label_en="Numerical Constraint",
        label_zh="数值约束",
        description_en="Sets counts or numeric precision: words, sentences, paragraphs, items, decimals. Example: 'Answer in exactly three paragraphs of at most 80 words each.'",
        description_zh="规定字数、句数、段落数、条目数或数值精度。例如：“分三段作答，每段不超过80字。”",
        guidance_en="Give an exact or bounded number (exactly, at least, at most, between) for something countable; keep it achievable for the task.",
        guidance_zh="对可计数的对象给出确切或有上下限的数字（恰好、至少、至多、介于），并保证在该任务中可以做到。",
        eval_count=890,
    ),
    # ---- situation ----
    Dimension(
        id="role_playing",
        type="situation",
        label_en="Role-Playing Constraint",
        label_zh="角色扮演约束",
        description_en="Asks the model to answer in a given role or persona. Example: 'Answer as a veteran park ranger talking to visitors.'",
        description_zh="要求以指定的角色或身份作答。例如：“以一名资深导游的身份向游客介绍。”",
        guidance_en="Name a specific role whose knowledge or voice fits the task, so that the role visibly shapes the answer.",
        guidance_zh="指定一个与任务相称的具体角色，使该角色的知识或口吻能明显体现在回答中。",
        eval_count=107,
    ),
    Dimension(
        id="target_audience",
        type="situation",
        label_en="Target Audience Constraint",
        label_zh="受众目标约束",
        description_en="Names who the answer is written for. Example: 'Write it for ten-year-old children with no science background.'",
        description_zh="指定回答面向的读者群体。例如：“面向没有理科基础的十岁孩子来写。”",
        guidance_en="Describe a concrete audience (age, expertise, situation) so the level of detail and wording can be judged against it.",
        guidance_zh="描述具体的受众（年龄、专业程度、处境），以便据此判断回答的深浅和措辞是否合适。",
        eval_count=106,
    ),
    Dimension(
        id="prior_condition",
        type="situation",
        label_en="Prior Condition Constraint",
        label_zh="先验条件约束",
        description_en="States a condition and what to do when it holds. Example: 'If the input mentions a deadline, start the answer with that date.'",
        description_zh="给出“如果满足条件X，就执行Y”的规则。例如：“如果输入中提到截止日期，请在开头先写出该日期。”",
        guidance_en="Write an explicit if-then rule whose condition can be checked against the task or input and whose action is observable in the answer.",
        guidance_zh="写出明确的“如果……就……”规则，条件可以根据任务或输入判断，执行结果能在回答中看到。",
        eval_count=79,
    ),
    Dimension(
        id="nl_process_background",
        type="situation",
        label_en="Natural Language Process Background Constraint",
        label_zh="自然语言流程背景信息约束",
        description_en="Gives a procedure in prose that the answer must follow. Example: 'First list the symptoms, then rule out the common causes, then recommend one next step.'",
        description_zh="用自然语言描述一个流程，要求回答按此流程进行。例如：“先列出现象，再排除常见原因，最后给出一条处理建议。”",
        guidance_en="Describe two to four ordered steps in plain sentences that structure how the task is carried out.",
        guidance_zh="用平实的句子描述两到四个有先后顺序的步骤，规定任务的完成过程。",
        eval_count=168,
    ),
    Dimension(
        id="markdown_process_background",
        type="situation",
        label_en="Markdown Process Background Constraint",
        label_zh="markdown流程背景信息约束",
        description_en="Gives a procedure as a markdown list or outline that the answer must follow. Example: '## Steps\\n1. Summarise the request\\n2. Propose two options\\n3. Recommend one'.",
        description_zh="以 markdown 列表或大纲形式给出流程，要求回答遵循。例如：“## 步骤\\n1. 复述需求\\n2. 给出两个方案\\n3. 推荐其中一个”。",
        guidance_en="Write the procedure as a short markdown outline (a heading and numbered steps) that the answer must follow in order.",
        guidance_zh="把流程写成简短的 markdown 大纲（一个标题加编号步骤），要求回答按顺序执行。",
        eval_count=16,
    ),
    Dimension(
        id="table_background",
        type="situation",
        label_en="Table Background Constraint",
        label_zh="表格背景信息约束",
        description_en="Requires the answer to be grounded on a given table. Example: 'Use only the prices in the table below when comparing the plans.'",
        description_zh="要求回答以给定的表格信息为依据。例如：“比较套餐时只使用下表中的价格。”",
        guidance_en="Provide or point to a small table and require the answer to rely on its figures; the table must contain what the task needs.",
        guidance_zh="提供或指明一张小表格，要求回答依据表中数据；表格中要包含任务所需的信息。",
        eval_count=41,
    ),
    Dimension(
        id="text_background",
        type="situation",
        label_en="Text Background Constraint",
        label_zh="文本背景信息约束",
        description_en="Requires the answer to be grounded on a given passage. Example: 'Base your explanation only on the passage provided.'",
        description_zh="要求回答以给定的文本段落为依据。例如：“仅根据所给段落进行解释。”",
        guidance_en="Provide or point to a short passage and require the answer to draw on it rather than on outside knowledge.",
        guidance_zh="提供或指明一段简短的文本，要求回答依据其内容，而不是依赖外部知识。",
        eval_count=32,
    ),
    # ---- style ----
    Dimension(
        id="tone_style",
        type="style",
        label_en="Tone and Style Constraint",
        label_zh="语气风格约束",
        description_en="Sets the tone or register of the answer. Example: 'Use a formal, objective tone suitable for a report.'",
        description_zh="规定回答的语气或文体风格。例如：“采用正式、客观的报告式语气。”",
        guidance_en="Name a specific tone or register (formal, humorous, literary, conversational) that suits the task and is recognisable in the text.",
        guidance_zh="指定一种具体且可辨识的语气或文风（正式、幽默、文艺、口语化等），并与任务相称。",
        eval_count=376,
    ),
    Dimension(
        id="emotion",
        type="style",
        label_en="Emotion Constraint",
        label_zh="情感情绪约束",
        description_en="Sets the emotional colour of the answer. Example: 'Convey a hopeful, encouraging mood throughout.'",
        description_zh="规定回答所传达的情感或情绪。例如：“全文传达出积极、鼓舞人心的情绪。”",
        guidance_en="Name the feeling the reader should get (warm, nostalgic, excited, calm) and where it should show.",
        guidance_zh="说明希望读者感受到的情绪（温暖、怀旧、兴奋、平静）以及体现在何处。",
        eval_count=43,
    ),
    Dimension(
        id="linguistic_characteristics",
        type="style",
        label_en="Linguistic Characteristics Constraint",
        label_zh="语言特征约束",
        description_en="Asks for rhetorical devices or figures of speech. Example: 'Use at least one metaphor and one rhetorical question.'",
        description_zh="要求使用特定的修辞手法或语言特征。例如：“至少使用一处比喻和一处反问。”",
        guidance_en="Name the device (metaphor, parallelism, alliteration, rhetorical question) and, if useful, how many times it should appear.",
        guidance_zh="点明修辞手法（比喻、排比、拟人、反问等），必要时说明使用次数。",
        eval_count=68,
    ),
    Dimension(
        id="multilingual",
        type="style",
        label_en="Multilingual Constraint",
        label_zh="多语言约束",
        description_en="Sets the language(s) of the answer. Example: 'Write the answer in English and give each heading in Chinese as well.'",
        description_zh="规定回答使用的语言。例如：“用英文作答，并为每个小标题附上中文翻译。”",
        guidance_en="State which language each part of the answer must use; keep it consistent with the rest of the instruction.",
        guidance_zh="说明回答各部分分别使用哪种语言，并与指令的其余部分保持一致。",
        eval_count=21,
    ),
    # ---- format ----
    Dimension(
        id="output_format",
        type="format",
        label_en="Output Format Constraint",
        label_zh="输出格式约束",
        description_en='Sets a machine-readable or markup format: JSON, table, HTML, LaTeX, Markdown. Example: \'Return a JSON object with the keys "title" and "steps".\'',
        description_zh="规定输出采用 JSON、表格、HTML、LaTeX、Markdown 等格式。例如：“以包含 title 和 steps 两个字段的 JSON 对象输出。”",
        guidance_en="Name the format and, where it matters, its fields or columns, so the answer can be checked by parsing it.",
        guidance_zh="指明格式，必要时写出字段或列名，使回答可以通过解析来检验。",
        eval_count=564,
    ),
    Dimension(
        id="text_pattern",
        type="format",
        label_en="Text Pattern Constraint",
        label_zh="文本样式约束",
        description_en="Sets text styling: bold, italics, emoji, letter case, quotation marks. Example: 'Put every key term in bold and end each paragraph with an emoji.'",
        description_zh="规定加粗、斜体、表情符号、大小写、引号等文本样式。例如：“关键词加粗，每段结尾加一个表情符号。”",
        guidance_en="Say which text elements get which visible styling, precisely enough to check by eye.",
        guidance_zh="说明哪些文本要使用何种可见样式，做到肉眼即可核对。",
        eval_count=259,
    ),
    Dimension(
        id="grammar_structure",
        type="format",
        label_en="Grammar Structure Constraint",
        label_zh="语法结构约束",
        description_en="Sets sentence forms or grammar. Example: 'Write every instruction as an imperative sentence in the present tense.'",
        description_zh="规定句式或语法结构。例如：“每一步都用祈使句表达。”",
        guidance_en="Name a sentence form or grammatical feature (questions, imperatives, passive voice, short simple sentences) the answer must use.",
        guidance_zh="指定回答必须使用的句式或语法特征（疑问句、祈使句、被动句、短句等）。",
        eval_count=107,
    ),
    Dimension(
        id="citation",
        type="format",
        label_en="Citation and Reference Constraint",
        label_zh="引用和参考约束",
        description_en="Asks for sources, quotations or a reference style. Example: 'Cite at least two sources in APA style at the end.'",
        description_zh="要求注明来源、引用原文或采用某种参考文献格式。例如：“文末按 APA 格式列出至少两条参考来源。”",
        guidance_en="Say what must be cited or quoted, how many, and in which style or position.",
        guidance_zh="说明需要引用或标注什么、数量多少、采用什么格式或放在什么位置。",
        eval_count=199,
    ),
    Dimension(
        id="numbering_list",
        type="format",
        label_en="Numbering and List Constraint",
        label_zh="编号和列表约束",
        description_en="Asks for numbered or bulleted items. Example: 'Present the tips as a numbered list.'",
        description_zh="要求以编号或项目符号列表呈现内容。例如：“用编号列表列出建议。”",
        guidance_en="Say which part becomes a list, numbered or bulleted, and the numbering style if it matters.",
        guidance_zh="说明哪部分内容用列表呈现、是编号还是项目符号，必要时规定编号样式。",
        eval_count=152,
    ),
    Dimension(
        id="hierarchical_structure",
        type="format",
        label_en="Hierarchical Structure Constraint",
        label_zh="层次化结构约束",
        description_en="Asks for headings and levels that organise the answer. Example: 'Use two top-level headings, each with two subheadings.'",
        description_zh="要求用标题和层级组织回答。例如：“设置两个一级标题，每个下面各有两个二级标题。”",
        guidance_en="Describe the levels of headings or sections the answer must have, and what goes at each level.",
        guidance_zh="描述回答应有的标题或章节层级，以及每一层放什么内容。",
        eval_count=241,
    ),
    Dimension(
        id="template",
        type="format",
        label_en="Template Constraint",
        label_zh="模版约束",
        description_en="Imposes a fixed layout such as introduction-body-conclusion or a form to fill. Example: 'Structure it as Problem / Cause / Solution.'",
        description_zh="规定固定的版式，如“引言-正文-结论”或需要填写的模板。例如：“按“问题/原因/对策”的结构组织。”",
        guidance_en="Spell out the fixed parts of the layout, in order, with their names, so the answer can be matched against it.",
        guidance_zh="按顺序写出版式中固定的各部分及其名称，使回答可以逐项对照。",
        eval_count=77,
    ),
    # ---- example ----
    Dimension(
        id="positive_example",
        type="example",
        label_en="Positive Example Constraint",
        label_zh="正例约束",
        description_en="Gives good examples the answer should imitate. Example: 'Write the slogans in the style of this example: \"Fresh from the farm, fast to your door.\"'",
        description_zh="给出好的示例，要求回答模仿。例如：“仿照示例“新鲜从田间来，快递到你家”的风格写标语。”",
        guidance_en="Include one or two short concrete examples inside the constraint and say which quality of them to imitate.",
        guidance_zh="在约束中直接给出一两个简短的具体示例，并说明要模仿它们的哪一点。",
        eval_count=32,
    ),
    Dimension(
        id="negative_example",
        type="example",
        label_en="Negative Example Constraint",
        label_zh="负例约束",
        description_en="Gives bad examples whose fault the answer must avoid. Example: 'Avoid openings like \"In today's fast-paced world...\".'",
        description_zh="给出反面示例，要求回答避免其中的问题。例如：“不要写成“随着社会的不断发展……”这样的开头。”",
        guidance_en="Include one or two short concrete bad examples inside the constraint and say what is wrong with them.",
        guidance_zh="在约束中直接给出一两个简短的反面示例，并指出它们的问题所在。",
        eval_count=16,
    ),
)

_BY_ID: dict[str, Dimension] = {d.id: d for d in DIMENSIONS}
DIMENSION_IDS: frozenset[str] = frozenset(_BY_ID)
_INDEX: dict[str, int] = {d.id: i for i, d in enumerate(DIMENSIONS)}

# Histograms of the constraint count C = 1..15 (index 0 is C = 1), TRACE.md §1.
TRAIN_COUNT_HISTOGRAM: tuple[int, ...] = (991, 8003, 26421, 34155, 26327, 13858, 5882, 2185, 999, 464, 8, 20, 20, 8, 4)
EVAL_COUNT_HISTOGRAM: tuple[int, ...] = (200, 101, 100, 100, 100, 101, 101, 98, 99, 10, 11, 9, 4, 4, 4)

# How often each dimension occurs in the official eval set: usable as sampling weights.
EVAL_DIMENSION_COUNTS: Mapping[str, int] = {d.id: d.eval_count for d in DIMENSIONS}


def dimensions_of_type(type_: str) -> tuple[Dimension, ...]:
    if type_ not in TYPES:
        raise KeyError(f"unknown constraint type {type_!r}; known types: {', '.join(TYPES)}")
    return tuple(d for d in DIMENSIONS if d.type == type_)


def get_dimension(id_: str) -> Dimension:
    try:
        return _BY_ID[id_]
    except KeyError:
        raise KeyError(f"unknown constraint dimension {id_!r}; known ids: {', '.join(_BY_ID)}") from None


_LABEL_NOISE = re.compile(r"[\s_\-]+")


def _label_key(label: str) -> str:
    # 'Role-Playing Constraint', 'role_playing', 'ROLE PLAYING' all meet at 'roleplayingconstraint'.
    return _LABEL_NOISE.sub("", label).casefold()


def _build_label_index() -> dict[str, Dimension]:
    index: dict[str, Dimension] = {}
    for dim in DIMENSIONS:
        keys = {_label_key(dim.id), _label_key(dim.label_en), _label_key(dim.label_zh)}
        # The same label without its "constraint"/"约束" suffix ('Theme', '主题').
        keys |= {k.removesuffix("constraint") for k in keys} | {k.removesuffix("约束") for k in keys}
        for key in keys - {""}:
            if key in index and index[key] is not dim:
                raise AssertionError(f"label {key!r} names both {index[key].id} and {dim.id}")
            index[key] = dim
    return index


_BY_LABEL = _build_label_index()


def dimension_for_label(label: str) -> Dimension | None:
    """The dimension an id, English label or Chinese label names; None for labels outside the 26."""
    if not isinstance(label, str):
        return None
    return _BY_LABEL.get(_label_key(label))


@dataclass(frozen=True)
class ConstraintPlan:
    """How many constraints to add to a seed and of which dimensions (in taxonomy order, repeats allowed)."""

    count: int
    dimensions: tuple[str, ...]


def _validate_histogram(histogram: Sequence[float]) -> list[float]:
    values = [float(v) for v in histogram]
    if not values:
        raise ValueError("constraint-count histogram is empty; give at least one weight (index 0 = 1 constraint)")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"constraint-count histogram has negative or non-finite weights: {values}")
    if sum(values) <= 0:
        raise ValueError("constraint-count histogram sums to zero; give at least one positive weight")
    return values


def _resolve_weights(weights: Mapping[str, float] | None) -> list[float]:
    """Weights in taxonomy order; dimensions the mapping leaves out keep weight 1."""
    if weights is None:
        return [1.0] * len(DIMENSIONS)
    unknown = sorted(k for k in weights if k not in _BY_ID)
    if unknown:
        raise ValueError(
            f"unknown constraint dimension(s) in weights: {', '.join(map(str, unknown))}; known ids: {', '.join(_BY_ID)}"
        )
    resolved = []
    for dim in DIMENSIONS:
        raw = weights.get(dim.id, 1.0)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = math.nan
        if isinstance(raw, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(f"weight of dimension {dim.id!r} must be a finite number >= 0, got {raw!r}")
        resolved.append(value)
    if sum(resolved) <= 0:
        raise ValueError("every dimension weight is zero; give at least one dimension a positive weight")
    return resolved


def sample_constraint_plan(
    rng: random.Random,
    histogram: Sequence[float],
    weights: Mapping[str, float] | None = None,
    max_per_dimension: int = 2,
) -> ConstraintPlan:
    """Draw a constraint count from `histogram`, then that many dimensions by weight.

    A dimension is drawn at most `max_per_dimension` times (TRACE instructions often hold
    several inclusion or numerical constraints, but not many of one kind). When the drawn
    count exceeds what the positive-weight dimensions can hold, it is clamped to that.
    """
    counts = _validate_histogram(histogram)
    dim_weights = _resolve_weights(weights)
    if not isinstance(max_per_dimension, int) or max_per_dimension < 1:
        raise ValueError(f"max_per_dimension must be an integer >= 1, got {max_per_dimension!r}")

    count = rng.choices(range(1, len(counts) + 1), weights=counts)[0]
    capacity = sum(max_per_dimension for w in dim_weights if w > 0)
    count = min(count, capacity)

    remaining = [max_per_dimension if w > 0 else 0 for w in dim_weights]
    drawn: list[int] = []
    for _ in range(count):
        live = [w if left > 0 else 0.0 for w, left in zip(dim_weights, remaining)]
        index = rng.choices(range(len(DIMENSIONS)), weights=live)[0]
        remaining[index] -= 1
        drawn.append(index)
    return ConstraintPlan(count=count, dimensions=tuple(DIMENSIONS[i].id for i in sorted(drawn)))


def plan_rng(seed_id: str, run_seed: int) -> random.Random:
    """A generator private to one seed, so its plan does not depend on the order seeds are processed in."""
    digest = hashlib.sha256(f"trace-plan\x00{run_seed}\x00{seed_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def plan_for_seed(
    seed_id: str,
    run_seed: int,
    histogram: Sequence[float] = TRAIN_COUNT_HISTOGRAM,
    weights: Mapping[str, float] | None = None,
    max_per_dimension: int = 2,
) -> ConstraintPlan:
    return sample_constraint_plan(plan_rng(seed_id, run_seed), histogram, weights, max_per_dimension)


def dimension_order(id_: str) -> int:
    """Position of a dimension in the taxonomy (for sorting)."""
    return _INDEX[get_dimension(id_).id]
