"""Counting units shared by the checkers: words, characters, sentences, paragraphs, markdown lines and blocks.

Counting rules (the checkers and the prompt catalogue rely on these; keep them in sync):

- Word: every CJK ideograph, kana or other character of a script written without spaces
  between words counts as one word on its own; a run of other letters / digits / underscores
  is one word, where an apostrophe or hyphen between letters (don't, well-known) and a point
  or comma between digits (3.14, 1,000) joins rather than splits. Punctuation, symbols and
  emoji are not words. So "我爱 Python 3.12!" has 4 words (我, 爱, Python, 3.12).
  Hangul is spaced like English, so a Hangul run is one word.
- Character: every non-whitespace code point (letters, digits, punctuation, CJK, emoji
  code points), unless whitespace is explicitly included. Chinese "字数" means this.
- Sentence: a stretch of text that ends with . ! ? 。 ！ ？ … (a run of them, plus closing
  quotes, brackets or markdown emphasis) and holds at least one word. A line break alone
  does not end one: a heading, a list item or a line of verse without a terminator runs on
  into the next line, as in NLTK's Punkt, which IFEval counts with. An ASCII terminator only
  ends a sentence when followed by whitespace, a CJK character or the end of the text
  ("3.14", "e.g.," and "example.com" do not split). A few abbreviations ("Mr.", "Dr.", "vs.",
  dotted letters such as "e.g." / "U.S.", single capital initials) end one only before CJK
  text or a capitalised sentence opener such as "The", "It" or "However" ("... in the U.S.
  The economy ..."); "etc." and "no." end one, since they end sentences as often as not. An
  ellipsis ends one only before a capital or CJK text ("Wait... what?" is one sentence), a
  number's point not before a lower-case word ("in 2024. the", "1. keep"). After an
  abbreviation or an ellipsis, markdown, a list marker or a quote ("...\n- **Next**") starts
  no sentence: as in Punkt, the very next token decides.
- Paragraph: a block separated by one or more blank lines (whitespace-only lines count as
  blank), or, with the divider separator, by a line of *** / --- / ___ (a markdown rule) or
  by "***" written inline ("First part. *** Second part."), ***bold italic*** aside.
- Code fences (```) are recognised so that markdown structure inside code is not counted.
"""

from __future__ import annotations

import re

# Scripts written without spaces between words: each character is a word of its own.
_CJK_RANGES = (
    "\u2e80-\u2fdf"  # CJK radicals, Kangxi radicals
    "\u3005-\u3007"  # 々 〆 〇
    "\u3021-\u3029"  # Hangzhou numerals
    "\u3040-\u30ff"  # hiragana, katakana
    "\u3105-\u312f"  # bopomofo
    "\u31a0-\u31bf"
    "\u31f0-\u31ff"  # katakana phonetic extensions
    "\u3400-\u4dbf"  # CJK ext A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff66-\uff9d"  # half-width katakana
    "\U00020000-\U0003134f"  # CJK ext B..G
)
CJK_CHAR = re.compile(f"[{_CJK_RANGES}]")
# \w minus CJK: letters, digits, underscore and combining marks of spaced scripts.
_SPACED = rf"[^\W{_CJK_RANGES}]"
_SPACED_WORD = rf"{_SPACED}+(?:(?:['’\-]|(?<=\d)[.,](?=\d)){_SPACED}+)*"
_WORD = re.compile(rf"[{_CJK_RANGES}]|{_SPACED_WORD}")
_SPACED_WORD_RE = re.compile(_SPACED_WORD)
_CJK_RUN = re.compile(f"[{_CJK_RANGES}]+")

_WHITESPACE = re.compile(r"\s+")


def words(text: str) -> list[str]:
    """The words of `text` by the module's rule (CJK characters one each, Latin runs one each)."""
    return _WORD.findall(text)


def count_words(text: str) -> int:
    """len(words(text)), faster: CJK text is matched in runs rather than one match per character."""
    return len(_SPACED_WORD_RE.findall(text)) + sum(len(run) for run in _CJK_RUN.findall(text))


def count_chars(text: str, include_whitespace: bool = False) -> int:
    if include_whitespace:
        return len(text)
    return len(_WHITESPACE.sub("", text))


def has_word(text: str) -> bool:
    return _WORD.search(text) is not None


# --- sentences -------------------------------------------------------------------------

# Only abbreviations that rarely end a sentence: "etc." or "no." often do, so they split.
_ABBREVIATIONS = frozenset("mr mrs ms dr prof sr jr st vs cf fig approx".split())
_DOTTED_LETTERS = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]$")  # e.g, i.e, U.S, a.m
# Words that open sentences far more often than they continue one: capitalised after an
# abbreviation ("... in the U.S. The economy ..."), one starts a new sentence.
_SENTENCE_OPENERS = frozenset(
    "the this these there it they he she i in if when while but however so yet although since thus many most "
    "some please".split()
)
# Markdown emphasis closes after a terminator ("**Plan ahead.** Then ...") as quotes do.
_CLOSER_CHARS = "\"'”’)]）」』】》*_"
_CLOSERS = re.escape(_CLOSER_CHARS)
# A run of terminators plus closers. CJK terminators end a sentence on their own; ASCII ones
# need whitespace, a CJK character or the end of the text after them.
_SENTENCE_END = re.compile(
    rf"[。！？!?.…]*[。！？…][{_CLOSERS}]*"
    rf"|[.!?]+[{_CLOSERS}]*(?=\s|$|[{_CJK_RANGES}])"
)
# What follows a terminator: the next whitespace-separated token. One that opens with markdown,
# a list marker or a quote ("- **Next**") starts no sentence after an abbreviation or an
# ellipsis, as in Punkt, which decides on the very next token.
_NEXT_TOKEN = re.compile(r"\s*(\S*)")
_LEADING_WORD = re.compile(r"\w*")


def _last_word(text: str, start: int, end: int) -> str:
    """The token of `text[start:end]` that a '.' at `end` ends, without opening quotes or
    brackets ("(e.g" -> "e.g"); found by walking back, so a long run without a sentence end
    costs no more than its length."""
    begin = end
    while begin > start and not text[begin - 1].isspace():
        begin -= 1
    return text[begin:end].lstrip("(\"'“‘[")


def _is_abbreviation(token: str) -> bool:
    """True when `token`, which a '.' ends, is an abbreviation or an initial."""
    if len(token) == 1 and token.isupper():  # "J. K. Rowling"
        return True
    return token.lower() in _ABBREVIATIONS or _DOTTED_LETTERS.match(token) is not None


def _opens_sentence(token: str) -> bool:
    """`token` starts a new sentence after an abbreviation: CJK text, or a capitalised opener ("The", "However,")."""
    word = _LEADING_WORD.match(token).group(0)
    return CJK_CHAR.match(token) is not None or (token[0].isupper() and word.lower() in _SENTENCE_OPENERS)


def _ends_sentence(text: str, start: int, match: re.Match[str]) -> bool:
    """Whether the terminator `match`, in a sentence begun at `start`, ends that sentence."""
    terminator = match.group(0)
    ellipsis = terminator.startswith("..")
    if terminator.rstrip(_CLOSER_CHARS) != "." and not ellipsis:
        return True  # ! ? and the CJK terminators always do
    following = _NEXT_TOKEN.match(text, match.end()).group(1)
    if not following:
        return True
    if ellipsis:  # "Wait... what?" trails off, "Wait... Really?" goes on anew
        return following[0].isupper() or CJK_CHAR.match(following) is not None
    if _is_abbreviation(_last_word(text, start, match.start())):
        return _opens_sentence(following)
    if match.start() > start and text[match.start() - 1].isdigit() and following[0].islower():
        return False  # "in 2024. the" / "1. keep": a number's point before lower case, as Punkt
    return True


def sentences(text: str) -> list[str]:
    """The sentences of `text` (see the module rule), stripped, each holding a word."""
    found: list[str] = []
    start = scanned = 0
    holds_word = False  # whether text[start:scanned] holds a word, kept as the scan goes on
    for match in _SENTENCE_END.finditer(text):
        holds_word = holds_word or has_word(text[scanned : match.end()])
        scanned = match.end()
        # A terminator run with no word before it ("...", "!!") is not a sentence; it stays
        # attached to what follows.
        if holds_word and _ends_sentence(text, start, match):
            found.append(text[start : match.end()].strip())
            start, holds_word = match.end(), False
    tail = text[start:].strip()
    if has_word(tail):
        found.append(tail)
    return found


def count_sentences(text: str) -> int:
    return len(sentences(text))


# --- paragraphs ------------------------------------------------------------------------

_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_DIVIDER_LINE = re.compile(r"^[ \t]*(?:\*[ \t]*){3,}$|^[ \t]*(?:-[ \t]*){3,}$|^[ \t]*(?:_[ \t]*){3,}$", re.M)
# "***" inside a line divides too ("First part. *** Second part.", as IFEval splits), unless it
# opens or closes ***bold italic*** text: an opener after a space and before a word, a closer
# after a word and before a space or punctuation.
_INLINE_DIVIDER = re.compile(r"(?<!\*)\*\*\*(?!\*)")
_BOLD_ITALIC = re.compile(r"(?<![^\s(\"'“‘])\*\*\*(?=[^\s*])[^\n]*?(?<=[^\s*])\*\*\*(?![\w*])")


def _divider_spans(text: str) -> list[tuple[int, int]]:
    """Where `text` is divided: divider lines, and "***" in a line that is no emphasis; in order, disjoint."""
    emphasis = [match.span() for match in _BOLD_ITALIC.finditer(text)]
    spans = [match.span() for match in _DIVIDER_LINE.finditer(text)]
    spans += [
        match.span()
        for match in _INLINE_DIVIDER.finditer(text)
        if not any(start <= match.start() < end for start, end in emphasis)
    ]
    disjoint: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if not disjoint or start >= disjoint[-1][1]:
            disjoint.append((start, end))
    return disjoint


def paragraphs(text: str, separator: str = "blank_line") -> list[str]:
    """Non-empty paragraphs; `separator` is 'blank_line' or 'divider' (*** / --- / ___ lines, or *** inline)."""
    if separator != "divider":
        blocks = _BLANK_LINES.split(text)
    else:
        blocks, start = [], 0
        for begin, end in _divider_spans(text):
            blocks.append(text[start:begin])
            start = end
        blocks.append(text[start:])
    return [block.strip() for block in blocks if block.strip()]


# --- markdown --------------------------------------------------------------------------

_FENCE = re.compile(r"^[ \t]*(```|~~~)")


def lines_outside_code(text: str) -> list[str]:
    """The lines of `text` that are not inside a fenced code block (fence lines excluded)."""
    kept: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        match = _FENCE.match(line)
        if match:
            if fence is None:
                fence = match.group(1)
                continue
            if match.group(1) == fence:
                fence = None
                continue
        if fence is None:
            kept.append(line)
    return kept


_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t#]*$")


def headings(text: str) -> list[tuple[int, str]]:
    """ATX markdown headings outside code: (level, text) for lines like '## Title'."""
    found = []
    for line in lines_outside_code(text):
        match = _HEADING.match(line)
        if match and (match.group(2) or "").strip():
            found.append((len(match.group(1)), match.group(2).strip()))
    return found


# "1. x", "1) x", "1、x", "(1) x", "（1）x", "一、x": the forms numbered lists take in English
# and Chinese responses. The marker must be followed by item text.
_NUMBERED_ITEM = re.compile(
    r"^[ \t]*(?:\d{1,3}[.)、．](?!\d)|[（(]\d{1,3}[)）]|[一二三四五六七八九十]{1,3}、)[ \t]*(?=\S)(.*)$"
)
_BULLET_ITEM = re.compile(r"^[ \t]*[-*+•·▪●◦‣][ \t]+(?=\S)(.*)$")
_HORIZONTAL_RULE = re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$")


def numbered_items(text: str) -> list[str]:
    items = []
    for line in lines_outside_code(text):
        match = _NUMBERED_ITEM.match(line)
        if match:
            items.append(match.group(1).strip())
    return items


def bullet_items(text: str) -> list[str]:
    items = []
    for line in lines_outside_code(text):
        if _HORIZONTAL_RULE.match(line):
            continue
        match = _BULLET_ITEM.match(line)
        if match:
            items.append(match.group(1).strip())
    return items


_TABLE_SEPARATOR = re.compile(r"^[ \t]*\|?[ \t]*:?-{1,}:?[ \t]*(?:\|[ \t]*:?-{1,}:?[ \t]*)*\|?[ \t]*$")


def _table_cells(line: str) -> list[str]:
    stripped = line.strip()
    if stripped.startswith("|"):
        stripped = stripped[1:]
    if stripped.endswith("|") and not stripped.endswith("\\|"):
        stripped = stripped[:-1]
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", stripped)]


def markdown_tables(text: str) -> list[tuple[int, int]]:
    """GitHub-style pipe tables outside code: (data rows, columns) for each table.

    A table is a header row with a pipe, then a delimiter row (|---|:--:|) with the same
    number of cells, then the rows that follow it and contain a pipe.
    """
    lines = lines_outside_code(text)
    tables = []
    i = 0
    while i + 1 < len(lines):
        header, delimiter = lines[i], lines[i + 1]
        if "|" in header and "|" in delimiter and _TABLE_SEPARATOR.match(delimiter):
            columns = len(_table_cells(header))
            if len(_table_cells(delimiter)) == columns:
                rows = 0
                j = i + 2
                while j < len(lines) and "|" in lines[j]:
                    rows += 1
                    j += 1
                tables.append((rows, columns))
                i = j
                continue
        i += 1
    return tables


_CODE_BLOCK = re.compile(r"^[ \t]*(```|~~~)[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)


def code_blocks(text: str) -> list[tuple[str, str]]:
    """Fenced code blocks: (info-string language, lower-cased; body)."""
    return [(m.group(2).lower(), m.group(3)) for m in _CODE_BLOCK.finditer(text)]


_INLINE_CODE = re.compile(r"`[^`\n]+`")
_URL = re.compile(r"https?://\S+|www\.\S+")


def prose_only(text: str) -> str:
    """`text` without fenced code, inline code and URLs: what a reader reads as language."""
    text = _CODE_BLOCK.sub(" ", text)
    text = _INLINE_CODE.sub(" ", text)
    return _URL.sub(" ", text)
