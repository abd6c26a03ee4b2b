"""Format checks: JSON, markdown tables, headings, lists, code blocks, sections, titles, placeholders."""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from trace_builder.verify import units
from trace_builder.verify.keywords import is_spaced_word_char
from trace_builder.verify.registry import (
    CountBounds,
    MinCountParams,
    Params,
    Verdict,
    register,
    require_range,
    within_bounds,
)

NonBlank = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")]


# --- JSON ------------------------------------------------------------------------------


class JsonParams(Params):
    required_keys: list[NonBlank] = Field(
        default_factory=list, max_length=50, description="top-level object must have these keys"
    )


def _fenced_bodies(response: str) -> list[str]:
    return [body for _, body in units.code_blocks(response)]


# The whole response is one ``` or ```json block: IFEval's strict JSON check strips that fence
# (and nothing else), since a model that fences its JSON still answered with JSON only.
_WHOLE_FENCE = re.compile(r"```(?:json)?[ \t]*\n?(.*?)\n?[ \t]*```", re.S | re.I)


def unfenced(response: str) -> str:
    """`response` without a ``` / ```json fence around the whole of it (as IFEval strips it)."""
    body = response.strip()
    match = _WHOLE_FENCE.fullmatch(body)
    return match.group(1) if match else body


@register(
    "json_valid",
    JsonParams,
    ("output_format",),
    "the whole response is valid JSON, optionally wrapped in one ```json fence (loose mode also finds "
    "a fenced block after a preamble); optional required top-level keys",
    "整个回复是合法 JSON，可整体放在一个 ```json 代码块中（宽松模式还允许代码块前后有说明文字）；可要求顶层包含指定键",
    extra_loose_variants=_fenced_bodies,
)
def check_json_valid(response: str, required_keys: list[str] | None = None) -> Verdict:
    try:
        value = json.loads(unfenced(response))
    except ValueError as error:
        return Verdict(False, f"not valid JSON: {error}")
    if not required_keys:
        return Verdict(True, f"valid JSON ({type(value).__name__})")
    if not isinstance(value, dict):
        return Verdict(False, f"top level is a JSON {type(value).__name__}, expected an object with keys")
    missing = [key for key in required_keys if key not in value]
    if missing:
        return Verdict(False, f"JSON object lacks keys {missing!r}")
    return Verdict(True, f"valid JSON object with keys {required_keys!r}")


# --- tables ----------------------------------------------------------------------------


class TableParams(Params):
    min_tables: int = Field(default=1, ge=1, description="at least this many qualifying tables")
    min_rows: int = Field(default=1, ge=0, description="data rows, header excluded")
    min_columns: int = Field(default=1, ge=1)


@register(
    "markdown_table",
    TableParams,
    ("output_format",),
    "contains markdown pipe tables (header, |---| line, rows) with at least min_rows data rows and min_columns columns",
    "包含 markdown 表格（表头、|---| 分隔行、数据行），数据行不少于 min_rows，列数不少于 min_columns",
)
def check_markdown_table(response: str, min_tables: int = 1, min_rows: int = 1, min_columns: int = 1) -> Verdict:
    tables = units.markdown_tables(response)
    good = [(rows, cols) for rows, cols in tables if rows >= min_rows and cols >= min_columns]
    shapes = ", ".join(f"{rows}x{cols}" for rows, cols in tables) or "none"
    detail = (
        f"{len(good)} tables with >= {min_rows} rows and >= {min_columns} columns "
        f"(expected >= {min_tables}; tables rows x columns: {shapes})"
    )
    return Verdict(len(good) >= min_tables, detail)


# --- headings --------------------------------------------------------------------------


class HeadingCountParams(CountBounds):
    level: int | None = Field(default=None, ge=1, le=6, description="count only headings of this level")


@register(
    "heading_count",
    HeadingCountParams,
    ("hierarchical_structure", "numerical"),
    "number of markdown # headings (optionally of one level: 1 = #, 2 = ##, ...)",
    "markdown # 标题的数量（可只计某一级：1 = #，2 = ##，...）",
)
def check_heading_count(response: str, level: int | None = None, **bounds: int | None) -> Verdict:
    found = [lvl for lvl, _ in units.headings(response) if level is None or lvl == level]
    noun = "headings" if level is None else f"level-{level} headings"
    return within_bounds(len(found), noun, **bounds)


class HeadingLevelsParams(Params):
    min_levels: int | None = Field(default=None, ge=1, le=6, description="at least this many distinct levels")
    max_level: int | None = Field(default=None, ge=1, le=6, description="no heading deeper than this level")
    no_skipped_levels: bool = Field(default=False, description="a heading is at most one level below the previous")

    @model_validator(mode="after")
    def _something(self) -> HeadingLevelsParams:
        if self.min_levels is None and self.max_level is None and not self.no_skipped_levels:
            raise ValueError("give min_levels, max_level or no_skipped_levels")
        return self


@register(
    "heading_levels",
    HeadingLevelsParams,
    ("hierarchical_structure",),
    "markdown heading hierarchy: at least min_levels distinct levels, none deeper than max_level, "
    "optionally no skipped level (# then ###)",
    "markdown 标题层级：至少 min_levels 个不同层级，不深于 max_level，可要求不跳级（# 后直接 ###）",
)
def check_heading_levels(
    response: str, min_levels: int | None = None, max_level: int | None = None, no_skipped_levels: bool = False
) -> Verdict:
    levels = [lvl for lvl, _ in units.headings(response)]
    if not levels:
        return Verdict(False, "no markdown headings")
    distinct = sorted(set(levels))
    if min_levels is not None and len(distinct) < min_levels:
        return Verdict(False, f"{len(distinct)} heading levels {distinct}, expected at least {min_levels}")
    if max_level is not None and distinct[-1] > max_level:
        return Verdict(False, f"a level-{distinct[-1]} heading, expected none deeper than level {max_level}")
    if no_skipped_levels:
        previous = distinct[0] - 1  # the shallowest level used counts as the top
        for lvl in levels:
            if lvl > previous + 1:
                return Verdict(False, f"heading level jumps from {previous} to {lvl}")
            previous = lvl
    return Verdict(True, f"heading levels {distinct}")


# --- lists -----------------------------------------------------------------------------


@register(
    "numbered_list_items",
    CountBounds,
    ("numbering_list", "numerical"),
    'number of numbered list items (lines like "1. x", "1) x", "1、x", "(1) x", "一、x")',
    "编号列表项数（形如 “1. x”、“1) x”、“1、x”、“(1) x”、“一、x” 的行）",
)
def check_numbered_list_items(response: str, **bounds: int | None) -> Verdict:
    return within_bounds(len(units.numbered_items(response)), "numbered items", **bounds)


@register(
    "bullet_list_items",
    CountBounds,
    ("numbering_list", "numerical"),
    'number of bulleted list items (lines starting "- ", "* ", "+ " or "• ")',
    "无序列表项数（以 “- ”、“* ”、“+ ” 或 “• ” 开头的行）",
)
def check_bullet_list_items(response: str, **bounds: int | None) -> Verdict:
    return within_bounds(len(units.bullet_items(response)), "bullet items", **bounds)


class ItemLengthParams(Params):
    unit: Literal["words", "chars"] = "words"
    min: int | None = Field(default=None, ge=1)
    max: int | None = Field(default=None, ge=1)
    list_type: Literal["any", "numbered", "bullet"] = "any"

    @model_validator(mode="after")
    def _some_bound(self) -> ItemLengthParams:
        return require_range(self, "min", "max")


@register(
    "list_item_length",
    ItemLengthParams,
    ("numbering_list", "numerical"),
    "every list item (numbered, bullet or any) has between min and max words or chars",
    "每个列表项（编号、无序或任意）的词数或字符数（unit）在 min 与 max 之间",
)
def check_list_item_length(
    response: str, unit: str = "words", min: int | None = None, max: int | None = None, list_type: str = "any"
) -> Verdict:
    items = []
    if list_type in ("any", "numbered"):
        items += units.numbered_items(response)
    if list_type in ("any", "bullet"):
        items += units.bullet_items(response)
    if not items:
        return Verdict(False, "no list items")
    measure = units.count_words if unit == "words" else units.count_chars
    for item in items:
        length = measure(item)
        if (min is not None and length < min) or (max is not None and length > max):
            bound = f"at least {min}" if min is not None and length < min else f"at most {max}"
            return Verdict(False, f"item has {length} {unit}, expected {bound}: {item[:60]}")
    return Verdict(True, f"all {len(items)} items within bounds")


# --- code, sections --------------------------------------------------------------------


class CodeBlockParams(Params):
    min_count: int = Field(default=1, ge=1)
    language: Annotated[str, StringConstraints(pattern=r"^[\w+#.-]{1,30}$")] | None = Field(
        default=None, description="info string after ```, e.g. python"
    )


@register(
    "code_block",
    CodeBlockParams,
    ("output_format",),
    "contains at least min_count fenced ``` code blocks (optionally tagged with language)",
    "至少包含 min_count 个 ``` 代码块（可指定语言标记）",
)
def check_code_block(response: str, min_count: int = 1, language: str | None = None) -> Verdict:
    blocks = units.code_blocks(response)
    if language is not None:
        blocks = [b for b in blocks if b[0] == language.lower()]
    noun = "code blocks" if language is None else f"{language} code blocks"
    return Verdict(len(blocks) >= min_count, f"{len(blocks)} {noun}, expected at least {min_count}")


class SectionParams(CountBounds):
    marker: NonBlank = Field(description='word that opens each section, e.g. "SECTION" or "Part"')


# What may stand before an opening word on its line: markdown (#, >, **, _) and opening quotes
# or brackets, since a response often opens with a quote ('"SECTION 1: ...').
_OPENING_MARKUP = re.compile(r"^[\s#>*_\"'“‘「『(\[]*")


def opens_with(line: str, word: str, case_sensitive: bool = True) -> bool:
    """`line`, past its markdown and quotes, starts with `word` as a whole word ("Part" not "Participants")."""
    body = _OPENING_MARKUP.sub("", line)
    if not case_sensitive:
        body, word = body.casefold(), word.casefold()
    if not body.startswith(word):
        return False
    after = body[len(word) : len(word) + 1]
    # CJK words ("第", "首先") have no word boundary; one ending in a letter or digit needs one.
    return not (after and is_spaced_word_char(word[-1]) and is_spaced_word_char(after))


@register(
    "section_count",
    SectionParams,
    ("hierarchical_structure", "template", "numerical"),
    'number of sections, each opened by a line that starts with marker as a whole word (e.g. "SECTION 1"); '
    "case-sensitive, markdown # or ** and opening quotes before it allowed",
    "以 marker（完整的词）开头的行（如 “SECTION 1”、“第1部分”）开启的部分数；区分大小写，允许前面有 #、** 或引号",
)
def check_section_count(response: str, marker: str, **bounds: int | None) -> Verdict:
    count = sum(1 for line in units.lines_outside_code(response) if opens_with(line, marker.strip()))
    return within_bounds(count, f"sections opened by {marker!r}", **bounds)


class ParagraphFirstWordParams(Params):
    first_word: NonBlank = Field(description='the word the paragraph starts with, e.g. "However" or "首先"')
    nth: int = Field(ge=1, le=50, description="which paragraph, 1 = the first")
    paragraphs: int | None = Field(default=None, ge=1, le=50, description="the response has exactly this many")

    @model_validator(mode="after")
    def _nth_exists(self) -> ParagraphFirstWordParams:
        if self.paragraphs is not None and self.nth > self.paragraphs:
            raise ValueError("nth is greater than paragraphs")
        return self


@register(
    "paragraph_first_word",
    ParagraphFirstWordParams,
    ("hierarchical_structure", "template", "text_pattern"),
    "paragraph nth (blank-line separated, 1 = first) starts with first_word (any case); "
    "optionally exactly `paragraphs` paragraphs",
    "第 nth 段（以空行分段，1 为第一段）以 first_word 开头（不区分大小写）；可要求恰好 paragraphs 段",
)
def check_paragraph_first_word(response: str, first_word: str, nth: int, paragraphs: int | None = None) -> Verdict:
    found = units.paragraphs(response)
    if paragraphs is not None and len(found) != paragraphs:
        return Verdict(False, f"{len(found)} paragraphs, expected exactly {paragraphs}")
    if nth > len(found):
        return Verdict(False, f"{len(found)} paragraphs, no paragraph {nth}")
    paragraph = found[nth - 1]
    passed = opens_with(paragraph, first_word.strip(), case_sensitive=False)
    return Verdict(passed, f"paragraph {nth} starts {paragraph[: len(first_word) + 12]!r}, expected {first_word!r}")


# --- template pieces -------------------------------------------------------------------

# [name], [公司名称]: square brackets holding something other than a number (a citation)
# and not a markdown link text.
_PLACEHOLDER = re.compile(r"(?<!!)\[(?!\s*\d+\s*\])([^\[\]\n]*\S[^\[\]\n]*)\](?!\()")


@register(
    "placeholders",
    MinCountParams,
    ("template",),
    "at least min_count placeholders in square brackets such as [name] (not [1], not links)",
    "至少 min_count 个方括号占位符，如 [姓名]（不含 [1] 这类引用编号和链接）",
)
def check_placeholders(response: str, min_count: int = 1) -> Verdict:
    found = _PLACEHOLDER.findall(response)
    return Verdict(len(found) >= min_count, f"{len(found)} placeholders, expected at least {min_count}")


# A title holds at least one non-space character: "<< >>" is no title (IFEval strips it and fails).
_TITLE_PATTERNS = {
    "<<>>": re.compile(r"<<([^<>\n]*[^<>\s][^<>\n]*)>>"),
    "《》": re.compile(r"《([^《》\n]*[^《》\s][^《》\n]*)》"),
    "any": re.compile(r"<<([^<>\n]*[^<>\s][^<>\n]*)>>|《([^《》\n]*[^《》\s][^《》\n]*)》"),
}


class TitleParams(Params):
    style: Literal["<<>>", "《》", "any"] = Field(default="<<>>", description="title wrapped in << >> or 《 》")
    exact_length: int | None = Field(default=None, ge=1, description="title length in characters")
    min_length: int | None = Field(default=None, ge=1)
    max_length: int | None = Field(default=None, ge=1)
    include_whitespace: bool = Field(default=False, description="count spaces in the title length")

    @model_validator(mode="after")
    def _consistent(self) -> TitleParams:
        if self.exact_length is not None and (self.min_length is not None or self.max_length is not None):
            raise ValueError("give exact_length alone, or min_length and/or max_length")
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise ValueError("min_length is greater than max_length")
        return self


@register(
    "title",
    TitleParams,
    ("template", "text_pattern", "numerical"),
    "has a title wrapped in << >> (or 《 》); optional length of the first title in characters "
    "(whitespace excluded unless include_whitespace)",
    "包含用 << >>（或 《 》）括起的标题；可限定第一个标题的字符数（默认不计空白）",
)
def check_title(
    response: str,
    style: str = "<<>>",
    exact_length: int | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    include_whitespace: bool = False,
) -> Verdict:
    match = _TITLE_PATTERNS[style].search(response)
    if match is None:
        return Verdict(False, f"no title in {style}")
    title = next(group for group in match.groups() if group is not None)
    if exact_length is None and min_length is None and max_length is None:
        return Verdict(True, f"title {title!r}")
    length = units.count_chars(title, include_whitespace)
    verdict = within_bounds(length, "characters", min_length, max_length, exact_length)
    return Verdict(verdict.passed, f"title {title!r}: {verdict.detail}")


class PostscriptParams(Params):
    marker: Annotated[str, StringConstraints(min_length=1, max_length=20, pattern=r"\S")] = Field(
        default="P.S.", description='e.g. "P.S.", "P.P.S.", "附言"'
    )


def postscript_pattern(marker: str) -> re.Pattern[str]:
    """A line starting with the marker; "P.S." also matches "p.s.", "P. S", "PS:"; "P.P.S" matches "P.P.S Remember"."""
    letters = [re.escape(char) for char in marker.strip() if char != "."]
    if marker.strip().replace(".", "").isascii() and "." in marker:
        # The dots are optional, so the marker must end at a word boundary: "PS5" is no postscript.
        body = r"\.?\s?".join(letters) + r"(?:[.:：]|(?![A-Za-z0-9]))"
    else:
        body = re.escape(marker.strip())
    return re.compile(r"^[\s*_>#]*" + body, re.M | re.I)


@register(
    "postscript",
    PostscriptParams,
    ("template",),
    'has a postscript: a line starting with marker ("P.S." also matches "P. S." / "PS:")',
    "包含附言：某行以 marker 开头（如 “P.S.”、“附言”）",
)
def check_postscript(response: str, marker: str = "P.S.") -> Verdict:
    match = postscript_pattern(marker).search(response)
    if match is None:
        return Verdict(False, f"no line starting with {marker!r}")
    return Verdict(True, f"postscript found: {response[match.start() : match.end() + 30].strip()[:50]!r}")


# [1], [2, 3], [4-6]: numbered citation markers.
_CITATION = re.compile(r"\[(\d{1,3}(?:\s*[,，\-–]\s*\d{1,3})*)\](?!\()")


@register(
    "numeric_citations",
    MinCountParams,
    ("citation",),
    "at least min_count distinct numbered citations like [1], [2, 3]",
    "至少 min_count 个不同的编号引用，如 [1]、[2, 3]",
)
def check_numeric_citations(response: str, min_count: int = 1) -> Verdict:
    numbers: set[int] = set()
    for group in _CITATION.findall(response):
        numbers.update(int(n) for n in re.findall(r"\d+", group))
    return Verdict(len(numbers) >= min_count, f"{len(numbers)} distinct citations, expected at least {min_count}")
