"""Response-language check, decided by the lingua detector on the response's prose.

Why lingua (lingua-language-detector): it is maintained, deterministic (same text, same
answer, no seeding; langdetect samples n-grams at random and needs a global seed), works
offline from models inside the wheel, and handles Chinese / Japanese by script rules. It is
built from a restricted set of languages (those TRACE-style data is written in, below):
fewer candidates is both faster and less error-prone than all 75.

Low-accuracy mode (trigram models only) is used for prose of at least 120 characters:
measured here it loads in ~0.13 s and ~30 MB and answers in ~0.15 ms per response, against
~2 s and ~280 MB for the high-accuracy models, and lingua's authors note low accuracy is
reliable from about 120 characters. Below that it is not ("Short text." came out as
Portuguese), so short prose goes to the high-accuracy detector, built on first need.
Code blocks, inline code and URLs are removed first: they are not the language a reader reads.
A language outside the set is reported as the nearest one inside it, so it fails a check for
any other language, which is the answer wanted.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder
from pydantic import Field

from trace_builder.verify import text
from trace_builder.verify.registry import Params, Verdict, register

LANGUAGE_CODES = (
    "en", "zh", "ja", "ko", "fr", "de", "es", "pt", "it", "ru",
    "ar", "hi", "vi", "th", "id", "tr", "nl", "pl",
)  # fmt: skip
LanguageCode = Literal[LANGUAGE_CODES]  # type: ignore[valid-type]  # Literal of the tuple's values

LOW_ACCURACY_MIN_CHARS = 120


def _languages() -> list[Language]:
    return [Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper())) for code in LANGUAGE_CODES]


@lru_cache(maxsize=2)
def detector(low_accuracy: bool) -> LanguageDetector:
    builder = LanguageDetectorBuilder.from_languages(*_languages())
    if low_accuracy:
        builder = builder.with_low_accuracy_mode()
    return builder.build()


def detect_language(response: str) -> str | None:
    """ISO 639-1 code of the response's prose language, or None when it has no letters to judge."""
    prose = text.prose_only(response)
    length = text.count_chars(prose)
    if length == 0:
        return None
    model = detector(low_accuracy=length >= LOW_ACCURACY_MIN_CHARS)
    try:
        found = model.detect_language_of(prose)
    except UnicodeEncodeError:
        # Lone surrogates (from broken decoding upstream) cannot cross into lingua's Rust code.
        found = model.detect_language_of(prose.encode("utf-8", "replace").decode("utf-8"))
    return None if found is None else found.iso_code_639_1.name.lower()


class LanguageParams(Params):
    language: LanguageCode = Field(description="ISO 639-1 code, e.g. en, zh")


@register(
    "response_language",
    LanguageParams,
    ("multilingual",),
    "the response is written in language (ISO 639-1: " + ", ".join(LANGUAGE_CODES) + "); code is ignored",
    "回复使用 language 指定的语言（ISO 639-1 代码：" + "、".join(LANGUAGE_CODES) + "）；代码部分不计",
)
def check_response_language(response: str, language: str) -> Verdict:
    found = detect_language(response)
    if found is None:
        return Verdict(False, "no prose to detect a language in")
    return Verdict(found == language, f"detected {found}, expected {language}")
