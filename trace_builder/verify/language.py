"""Response-language check, decided by the lingua detector on the response's prose.

Why lingua (lingua-language-detector): it is maintained, deterministic (same text, same
answer, no seeding; langdetect samples n-grams at random and needs a global seed), works
offline from models inside the wheel, and handles Chinese / Japanese by script rules. It is
built from a restricted set of languages (those TRACE-style data is written in, below, plus
the one a check asks for and its near relatives): fewer candidates is both faster and less
error-prone than all 75. Kannada and Malayalam, which lingua lacks, are told by their script.
Each language a check asks for loads its models once, shared by every detector: measured
here, ten relative groups after the core took the process from ~305 to ~620 MB.

Low-accuracy mode (trigram models only) is used for prose of at least 120 characters:
measured here it loads in ~0.13 s and ~30 MB and answers in ~0.15 ms per response, against
~2 s and ~280 MB for the high-accuracy models, and lingua's authors note low accuracy is
reliable from about 120 characters. Below that it is not ("Short text." came out as
Portuguese), so short prose goes to the high-accuracy detector, built on first need.
Code blocks, inline code and URLs are removed first: they are not the language a reader reads.
A language outside the candidates is reported as the nearest one inside them, so it fails a
check for any other language, which is the answer wanted.
"""

from __future__ import annotations

import re
from functools import lru_cache

from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder
from pydantic import Field, field_validator

from trace_builder.verify import units
from trace_builder.verify.registry import Params, Verdict, register

# The languages TRACE-style data is mostly written in: always candidates. A check for another
# language adds it (and its near relatives, below) to these, instead of asking lingua to weigh
# all 75: measured here, all 75 at high accuracy take ~10 s and ~900 MB to load and call
# "The cat sat on mats." Sotho; the core set plus one group stays near the core's cost.
CORE_LANGUAGES = (
    "en", "zh", "ja", "ko", "fr", "de", "es", "pt", "it", "ru",
    "ar", "hi", "vi", "th", "id", "tr", "nl", "pl",
)  # fmt: skip

# Languages lingua lacks whose script is theirs alone (IFEval's list has them): decided by script.
SCRIPT_LANGUAGES = {
    "kn": "\u0c80-\u0cff",  # Kannada
    "ml": "\u0d00-\u0d7f",  # Malayalam
}

# Languages so close that one must be a candidate whenever another is checked for, or Danish
# text would pass a Norwegian check just because Danish was not among the candidates.
RELATIVES = (
    frozenset({"da", "nb", "nn", "sv", "is"}),
    frozenset({"bs", "hr", "sr", "sl"}),
    frozenset({"bg", "mk"}),
    frozenset({"cs", "sk"}),
    frozenset({"lv", "lt"}),
    frozenset({"ms", "id"}),
    frozenset({"af", "nl"}),
    frozenset({"be", "uk", "ru", "kk", "mn"}),
    frozenset({"ur", "fa", "ar"}),
    frozenset({"hi", "mr"}),
    frozenset({"ca", "es", "pt", "it", "fr", "ro"}),
    frozenset({"st", "tn", "ts", "xh", "zu", "sn"}),
    frozenset({"sw", "lg"}),
    frozenset({"et", "fi"}),
    frozenset({"ga", "cy"}),
    frozenset({"az", "tr"}),
)

LINGUA_CODES = tuple(sorted(language.iso_code_639_1.name.lower() for language in Language.all()))
LANGUAGE_CODES = tuple(sorted(set(LINGUA_CODES) | set(SCRIPT_LANGUAGES)))

LOW_ACCURACY_MIN_CHARS = 120
_SCRIPT_CHARS = {code: re.compile(f"[{block}]") for code, block in SCRIPT_LANGUAGES.items()}


def candidates(expected: str | None = None) -> frozenset[str]:
    """The languages lingua weighs: the core set, plus the expected language and its relatives."""
    codes = set(CORE_LANGUAGES)
    if expected in LINGUA_CODES:
        codes.add(expected)
        for group in RELATIVES:
            if expected in group:
                codes |= group
    return frozenset(codes)


@lru_cache(maxsize=16)
def detector(codes: frozenset[str], low_accuracy: bool) -> LanguageDetector:
    languages = [Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper())) for code in sorted(codes)]
    builder = LanguageDetectorBuilder.from_languages(*languages)
    if low_accuracy:
        builder = builder.with_low_accuracy_mode()
    return builder.build()


def script_language(prose: str) -> str | None:
    """A SCRIPT_LANGUAGES code when at least half of the letters are in that language's script."""
    letters = sum(1 for char in prose if char.isalpha())
    for code, pattern in _SCRIPT_CHARS.items():
        # Vowel signs of these scripts are marks, not letters: count every character of the block.
        if letters and len(pattern.findall(prose)) >= letters / 2:
            return code
    return None


def detect_language(response: str, expected: str | None = None) -> str | None:
    """ISO 639-1 code of the response's prose language, or None when it has no letters to judge.

    `expected` (a language a check asks for) joins the candidates, with its near relatives.
    """
    prose = units.prose_only(response)
    length = units.count_chars(prose)
    if length == 0 or not any(char.isalpha() for char in prose):
        return None
    by_script = script_language(prose)
    if by_script is not None:
        return by_script
    model = detector(candidates(expected), low_accuracy=length >= LOW_ACCURACY_MIN_CHARS)
    try:
        found = model.detect_language_of(prose)
    except UnicodeEncodeError:
        # Lone surrogates (from broken decoding upstream) cannot cross into lingua's Rust code.
        found = model.detect_language_of(prose.encode("utf-8", "replace").decode("utf-8"))
    return None if found is None else found.iso_code_639_1.name.lower()


class LanguageParams(Params):
    # A plain code rather than an enum of all 77: the enum would cost every expand prompt's
    # catalogue and schema ~300 tokens; an unknown code still fails validation below.
    language: str = Field(pattern=r"^[a-z]{2}$", description="ISO 639-1 code, e.g. en, zh, sw")

    @field_validator("language")
    @classmethod
    def _detectable(cls, code: str) -> str:
        if code not in LANGUAGE_CODES:
            raise ValueError(f"no detector for language {code!r}")
        return code


@register(
    "response_language",
    LanguageParams,
    ("multilingual",),
    "the response is written in language (an ISO 639-1 code such as " + ", ".join(CORE_LANGUAGES) + ", "
    f"sw, bn, kn ...: {len(LANGUAGE_CODES)} codes are supported); code is ignored",
    "回复使用 language 指定的语言（ISO 639-1 代码，如 "
    + "、".join(CORE_LANGUAGES)
    + f"，共支持 {len(LANGUAGE_CODES)} 种）；代码部分不计",
)
def check_response_language(response: str, language: str) -> Verdict:
    found = detect_language(response, expected=language)
    if found is None:
        return Verdict(False, f"no language detected in the prose, expected {language}")
    return Verdict(found == language, f"detected {found}, expected {language}")
