"""Every check kind on responses that meet it and responses that do not, in English and Chinese."""

from __future__ import annotations

import pytest

from trace_builder.verify import KINDS, run_check, validate_spec

EN_ESSAY = (
    "Artificial intelligence is changing how we work. It automates routine tasks.\n\n"
    "However, it also raises questions about fairness and privacy. Regulators are paying attention.\n\n"
    "In short, the technology is powerful but needs care."
)
ZH_ESSAY = (
    "人工智能正在改变我们的工作方式。它能自动完成重复的任务。\n\n但它也带来了公平和隐私的问题！监管机构正在关注。"
)
MARKDOWN_DOC = """# Guide

## Install

1. Download the package
2. Run the installer
3. Restart

## Use

- Open the app
- Pick a file

### Notes

| Option | Default | Meaning |
|--------|:-------:|---------|
| fast   | no      | speed   |
| safe   | yes     | checks  |

```python
print("# not a heading")
- not a bullet
```
"""

# (kind, params, response, expected pass)
CASES: list[tuple[str, dict, str, bool]] = [
    # words: CJK characters each count, Latin words each count
    ("word_count", {"exact": 5}, "The cat sat on mats.", True),
    ("word_count", {"max": 4}, "The cat sat on mats.", False),
    ("word_count", {"exact": 8}, "我爱北京天安门！", False),
    ("word_count", {"exact": 7}, "我爱北京天安门！", True),
    ("word_count", {"min": 4, "max": 4}, "我用 Python 3.12 写代码", False),
    ("word_count", {"exact": 7}, "我用 Python 3.12 写代码", True),
    # characters: non-whitespace by default
    ("char_count", {"exact": 10}, "abc de fgh ij", True),
    ("char_count", {"exact": 13, "include_whitespace": True}, "abc de fgh ij", True),
    ("char_count", {"max": 5}, "人工智能技术发展", False),
    ("char_count", {"min": 8, "max": 8}, "人工智能技术发展", True),
    # sentences
    ("sentence_count", {"exact": 5}, EN_ESSAY, True),
    ("sentence_count", {"exact": 4}, EN_ESSAY, False),
    ("sentence_count", {"exact": 4}, ZH_ESSAY, True),
    ("sentence_count", {"min": 5}, ZH_ESSAY, False),
    ("sentence_count", {"exact": 2}, "Dr. Smith paid 3.50 dollars. He left.", True),
    # paragraphs
    ("paragraph_count", {"exact": 3}, EN_ESSAY, True),
    ("paragraph_count", {"min": 3}, ZH_ESSAY, False),
    ("paragraph_count", {"exact": 2, "separator": "divider"}, "First part.\n***\nSecond part.", True),
    ("paragraph_count", {"exact": 2, "separator": "divider"}, EN_ESSAY, False),
    # sentence length
    ("sentence_length", {"max_words": 12}, EN_ESSAY, True),
    ("sentence_length", {"max_words": 8}, EN_ESSAY, False),
    ("sentence_length", {"max_words": 15}, ZH_ESSAY, True),
    ("sentence_length", {"min_words": 10}, ZH_ESSAY, False),
    # keywords
    ("keyword_include", {"keywords": ["privacy", "Fairness"]}, EN_ESSAY, True),
    ("keyword_include", {"keywords": ["privacy", "blockchain"]}, EN_ESSAY, False),
    ("keyword_include", {"keywords": ["privacy", "blockchain"], "require": "any"}, EN_ESSAY, True),
    ("keyword_include", {"keywords": ["隐私", "监管"]}, ZH_ESSAY, True),
    ("keyword_include", {"keywords": ["区块链"]}, ZH_ESSAY, False),
    ("keyword_include", {"keywords": ["cat"]}, "A category of things.", False),
    ("keyword_include", {"keywords": ["cat"], "whole_word": False}, "A category of things.", True),
    ("keyword_include", {"keywords": ["AI"], "case_sensitive": True}, "ai is everywhere", False),
    ("keyword_include", {"keywords": ["machine learning"]}, "Machine\nlearning works.", True),
    ("keyword_exclude", {"keywords": ["blockchain", "crypto"]}, EN_ESSAY, True),
    ("keyword_exclude", {"keywords": ["Privacy"]}, EN_ESSAY, False),
    ("keyword_exclude", {"keywords": ["隐私"]}, ZH_ESSAY, False),
    ("keyword_exclude", {"keywords": ["区块链"]}, ZH_ESSAY, True),
    ("keyword_frequency", {"keyword": "it", "exact": 2}, EN_ESSAY, True),
    ("keyword_frequency", {"keyword": "it", "min": 3}, EN_ESSAY, False),
    ("keyword_frequency", {"keyword": "正在", "exact": 2}, ZH_ESSAY, True),
    ("keyword_frequency", {"keyword": "正在", "max": 1}, ZH_ESSAY, False),
    # JSON
    ("json_valid", {}, '{"name": "Ann", "age": 3}', True),
    ("json_valid", {"required_keys": ["name", "age"]}, '{"name": "Ann", "age": 3}', True),
    ("json_valid", {"required_keys": ["email"]}, '{"name": "Ann"}', False),
    ("json_valid", {"required_keys": ["name"]}, '[{"name": "Ann"}]', False),
    ("json_valid", {}, "{'name': 'Ann'}", False),
    # the whole response fenced as ```json: IFEval strips the fence, so strict accepts it
    ("json_valid", {}, '```json\n{"姓名": "张三"}\n```', True),
    ("json_valid", {"required_keys": ["a"]}, '```JSON\n{"a": 1}\n```\n', True),
    ("json_valid", {}, 'Here:\n```json\n{"a": 1}\n```', False),
    # tables
    ("markdown_table", {}, MARKDOWN_DOC, True),
    ("markdown_table", {"min_rows": 2, "min_columns": 3}, MARKDOWN_DOC, True),
    ("markdown_table", {"min_rows": 3}, MARKDOWN_DOC, False),
    ("markdown_table", {}, "| 姓名 | 年龄 |\n| --- | --- |\n| 张三 | 20 |", True),
    ("markdown_table", {}, "a | b\nc | d", False),
    ("markdown_table", {}, EN_ESSAY, False),
    # headings (the # inside the code block is not a heading)
    ("heading_count", {"exact": 4}, MARKDOWN_DOC, True),
    ("heading_count", {"exact": 2, "level": 2}, MARKDOWN_DOC, True),
    ("heading_count", {"min": 5}, MARKDOWN_DOC, False),
    ("heading_count", {"exact": 2}, "# 引言\n正文\n## 方法\n#不是标题", True),
    ("heading_levels", {"min_levels": 3, "no_skipped_levels": True}, MARKDOWN_DOC, True),
    ("heading_levels", {"max_level": 2}, MARKDOWN_DOC, False),
    ("heading_levels", {"no_skipped_levels": True}, "# 一级\n### 三级", False),
    ("heading_levels", {"min_levels": 1}, EN_ESSAY, False),
    # lists
    ("numbered_list_items", {"exact": 3}, MARKDOWN_DOC, True),
    ("numbered_list_items", {"min": 4}, MARKDOWN_DOC, False),
    ("numbered_list_items", {"exact": 4}, "1、准备材料\n2、搅拌\n（3）烘烤\n四、装盘", True),
    ("numbered_list_items", {"min": 1}, "In 2024. we grew.\n3.14 is pi", False),
    ("bullet_list_items", {"exact": 2}, MARKDOWN_DOC, True),
    ("bullet_list_items", {"min": 3}, MARKDOWN_DOC, False),
    ("bullet_list_items", {"exact": 3}, "- 苹果\n* 香蕉\n• 橙子\n---\n**粗体**", True),
    ("list_item_length", {"max": 3}, MARKDOWN_DOC, True),
    ("list_item_length", {"max": 2}, MARKDOWN_DOC, False),
    ("list_item_length", {"max": 5, "unit": "chars"}, "1. 准备材料\n2. 把面粉搅拌均匀", False),
    ("list_item_length", {"max": 8, "unit": "chars"}, "1. 准备材料\n2. 把面粉搅拌均匀", True),
    ("list_item_length", {"max": 10}, EN_ESSAY, False),
    # code blocks
    ("code_block", {}, MARKDOWN_DOC, True),
    ("code_block", {"language": "python"}, MARKDOWN_DOC, True),
    ("code_block", {"language": "sql"}, MARKDOWN_DOC, False),
    ("code_block", {"min_count": 2}, MARKDOWN_DOC, False),
    # sections
    ("section_count", {"marker": "SECTION", "exact": 2}, "SECTION 1\nIntro\n\n## SECTION 2\nBody", True),
    ("section_count", {"marker": "SECTION", "min": 3}, "SECTION 1\nIntro\nSECTION 2\nBody", False),
    ("section_count", {"marker": "第", "exact": 2}, "**第一部分**\n内容\n第二部分\n内容", True),
    ("section_count", {"marker": "Section", "exact": 1}, "SECTION 1\nsection 2", False),
    # a response opening with a quote still counts its first section; the marker is a whole word
    ("section_count", {"marker": "SECTION", "exact": 2}, '"SECTION 1: Intro\nText.\nSECTION 2: End"', True),
    ("section_count", {"marker": "Part", "exact": 1}, "Part 1\nParticipants are listed.\nPartial data.", True),
    # placeholders
    ("placeholders", {"min_count": 2}, "Dear [name], your order [order id] ships soon.", True),
    ("placeholders", {"min_count": 2}, "See [1] and [docs](https://x.org).", False),
    ("placeholders", {}, "尊敬的[客户姓名]：您好！", True),
    ("placeholders", {}, "尊敬的客户：您好！", False),
    # title: the released TRACE example's "10-character" title is 14 long; count correctly
    ("title", {}, "<<Ode to Spring>>\nThe snow melts.", True),
    ("title", {}, "Ode to Spring\nThe snow melts.", False),
    ("title", {"exact_length": 11}, "<<Ode to Spring>>", True),
    ("title", {"exact_length": 13, "include_whitespace": True}, "<<Ode to Spring>>", True),
    ("title", {"exact_length": 10}, "<<家庭智能设备安全使用指南解读>>\n正文", False),
    ("title", {"exact_length": 14}, "<<家庭智能设备安全使用指南解读>>\n正文", True),
    ("title", {"style": "《》", "max_length": 4}, "《春晓》\n春眠不觉晓", True),
    ("title", {"style": "《》"}, "<<春晓>>", False),
    ("title", {"style": "any"}, "<<春晓>>", True),
    ("title", {}, "<< >>\nA poem without a title.", False),
    ("title", {}, "<< >>\n<<Real Title>>", True),
    ("title", {"style": "《》"}, "《  》正文", False),
    # postscript
    ("postscript", {}, "Thanks for reading.\n\nP.S. Bring an umbrella.", True),
    ("postscript", {}, "Thanks.\np.s. bring an umbrella", True),
    ("postscript", {}, "Thanks for reading. Bring an umbrella.", False),
    ("postscript", {"marker": "P.P.S."}, "Thanks.\nP.S. one\nP.P.S. two", True),
    ("postscript", {"marker": "P.P.S."}, "Thanks.\nP.S. one", False),
    ("postscript", {"marker": "附言"}, "祝好！\n附言：记得带伞。", True),
    ("postscript", {"marker": "P.P.S"}, "Thanks.\nP.P.S Remember the umbrella.", True),
    ("postscript", {}, "Thanks.\nPS5 games are fun.", False),
    ("postscript", {"marker": "附言"}, "祝好！记得带伞。", False),
    # citations
    ("numeric_citations", {"min_count": 3}, "As shown [1], and later [2, 3].\n\n[1] A. [2] B. [3] C.", True),
    ("numeric_citations", {"min_count": 2}, "研究表明[1]，这一结论成立[1]。", False),
    # language
    ("response_language", {"language": "en"}, EN_ESSAY, True),
    ("response_language", {"language": "zh"}, EN_ESSAY, False),
    ("response_language", {"language": "zh"}, ZH_ESSAY, True),
    ("response_language", {"language": "en"}, ZH_ESSAY, False),
    (
        "response_language",
        {"language": "zh"},
        "下面是代码：\n```python\nprint('hello world, this is English code')\n```",
        True,
    ),
    ("response_language", {"language": "fr"}, "Le renard brun saute par-dessus le chien paresseux.", True),
    ("response_language", {"language": "en"}, "```\n12345\n```", False),
    # languages beyond the core set: any lingua detects, and Kannada / Malayalam by script
    ("response_language", {"language": "sw"}, "Mazoezi ya mara kwa mara huboresha ubora wa usingizi.", True),
    ("response_language", {"language": "bn"}, "নিয়মিত ব্যায়াম ঘুমের মান উন্নত করে।", True),
    ("response_language", {"language": "mr"}, "नियमित व्यायाम झोपेची गुणवत्ता सुधारतो.", True),
    ("response_language", {"language": "kn"}, "ನಿಯಮಿತ ವ್ಯಾಯಾಮವು ನಿದ್ರೆಯ ಗುಣಮಟ್ಟವನ್ನು ಸುಧಾರಿಸುತ್ತದೆ.", True),
    ("response_language", {"language": "ml"}, "ನಿಯಮಿತ ವ್ಯಾಯಾಮವು ನಿದ್ರೆಯ ಗುಣಮಟ್ಟವನ್ನು ಸುಧಾರಿಸುತ್ತದೆ.", False),
    ("response_language", {"language": "nb"}, "Regelmæssig motion forbedrer søvnkvaliteten og mindsker stress.", False),
    ("response_language", {"language": "ru"}, "Регулярні фізичні вправи покращують якість сну.", False),
    # case
    ("all_lowercase", {}, "everything here is quiet.", True),
    ("all_lowercase", {}, "Everything here is quiet.", False),
    # case rules need a cased script: Chinese-only text fails them (it cannot follow them)
    ("all_lowercase", {}, "全部是中文，没有字母。", False),
    ("all_uppercase", {}, "全部是中文，没有字母。", False),
    ("all_lowercase", {}, "12345 !!!", False),
    ("all_uppercase", {}, "STOP RIGHT THERE! 停下！", True),
    ("all_uppercase", {}, "STOP right there!", False),
    ("capital_word_count", {"min": 2}, "This is VERY important. READ it.", True),
    ("capital_word_count", {"max": 1}, "This is VERY important. READ it.", False),
    ("capital_word_count", {"exact": 2}, "The AI's answer is NOT final.", True),
    ("letter_frequency", {"letter": "e", "exact": 3}, "Eleven bees.", False),
    ("letter_frequency", {"letter": "e", "exact": 5}, "Eleven bees.", True),
    ("letter_frequency", {"letter": "E", "exact": 1, "case_sensitive": True}, "Eleven bees.", True),
    ("letter_frequency", {"letter": "z", "min": 1}, "没有这个字母", False),
    # several responses
    ("separated_responses", {}, "First answer.\n******\nSecond answer.", True),
    ("separated_responses", {}, "Same.\n******\nSame.", False),
    ("separated_responses", {"count": 3, "separator": "---"}, "一\n---\n二\n---\n三", True),
    ("separated_responses", {}, "Only one answer.", False),
    # first word of the n-th paragraph
    ("paragraph_first_word", {"first_word": "however", "nth": 2}, EN_ESSAY, True),
    ("paragraph_first_word", {"first_word": "however", "nth": 2, "paragraphs": 2}, EN_ESSAY, False),
    ("paragraph_first_word", {"first_word": "In", "nth": 3}, EN_ESSAY, True),
    ("paragraph_first_word", {"first_word": "但", "nth": 2}, ZH_ESSAY, True),
    ("paragraph_first_word", {"first_word": "Art", "nth": 1}, EN_ESSAY, False),
    # an answer from given options
    ("answer_from_options", {"options": ["My answer is yes.", "My answer is no."]}, "My answer is no.", True),
    ("answer_from_options", {"options": ["yes", "no"]}, "Yes and no.", False),
    ("answer_from_options", {"options": ["是", "否"], "exact": True}, " 是 ", True),
    ("answer_from_options", {"options": ["A", "B"], "exact": True}, "A, because", False),
    # openings and endings
    ("starts_with", {"phrase": "Dear team"}, "  dear team,\nhello", True),
    ("starts_with", {"phrase": "Dear team", "case_sensitive": True}, "dear team,", False),
    ("starts_with", {"phrase": "亲爱的"}, "亲爱的同学们：", True),
    ("starts_with", {"phrase": "亲爱的"}, "同学们：", False),
    ("ends_with", {"phrase": "Any questions?"}, "That is all. Any questions?\n", True),
    ("ends_with", {"phrase": "Any questions?"}, "Any questions? That is all.", False),
    ("ends_with", {"phrase": "谢谢！"}, "以上就是全部内容。谢谢！", True),
    ("ends_with", {"phrase": "a much longer phrase than the body"}, "short", False),
    ("ends_with_question", {}, "What do you think?", True),
    ("ends_with_question", {}, "你怎么看？ ", True),
    ("ends_with_question", {}, "I think so.", False),
    ("ends_with_question", {}, "", False),
    # commas
    ("no_commas", {}, "No commas here. None at all.", True),
    ("no_commas", {}, "One, two.", False),
    ("no_commas", {}, "你好，世界。", False),
    ("no_commas", {}, "苹果、香蕉。", False),
    ("no_commas", {"commas": "ascii"}, "苹果、香蕉，橙子。", True),
    ("no_commas", {}, "没有逗号。只有句号。", True),
    # quotes
    ("wrapped_in_quotes", {}, '"The whole answer is quoted."', True),
    ("wrapped_in_quotes", {}, "“整个回答都在引号里。”\n", True),
    ("wrapped_in_quotes", {}, 'The answer is "partly" quoted.', False),
    ("wrapped_in_quotes", {}, '"', False),
    # emphasis
    ("bold_count", {"min": 2}, "**Key point**: this. **另一个重点**。", True),
    ("bold_count", {"min": 2}, "**Key point**: this. *minor*.", False),
    ("bold_count", {"exact": 0}, "* item one\n* item two", True),
    ("highlight_count", {"min": 3}, "*one*, **two** and *three*.\n* not a highlight *", True),
    ("highlight_count", {"min": 2}, "* bullet\n* bullet", False),
    ("highlight_count", {"exact": 1}, "重点是*坚持*。", True),
    # emoji
    ("emoji_present", {}, "Great job! 🎉", True),
    ("emoji_present", {"min_count": 3}, "好的👍🏽 ❤️ 🇨🇳 👨‍👩‍👧", True),
    ("emoji_present", {"min_count": 5}, "好的👍🏽 ❤️ 🇨🇳 👨‍👩‍👧", False),
    ("emoji_present", {}, "No emoji here: © ® ™ ★ ✓ → 1 # *", False),
    ("emoji_absent", {}, "No emoji here: © ® ™ ★ ✓ → 1 # *", True),
    ("emoji_absent", {}, "太棒了😀", False),
    ("emoji_absent", {}, "I ❤ it", False),
]


def _ids() -> list[str]:
    return [f"{kind}-{index}" for index, (kind, *_rest) in enumerate(CASES)]


@pytest.mark.parametrize(("kind", "params", "response", "expected"), CASES, ids=_ids())
def test_kind_decides(kind: str, params: dict, response: str, expected: bool) -> None:
    spec = validate_spec({"kind": kind, "params": params})
    assert spec is not None, f"spec rejected: {kind} {params}"
    verdict = run_check(spec, response)
    assert verdict.passed is expected, verdict.detail
    assert verdict.detail


def test_every_kind_has_a_passing_and_a_failing_case() -> None:
    passing = {kind for kind, _, _, expected in CASES if expected}
    failing = {kind for kind, _, _, expected in CASES if not expected}
    assert set(KINDS) <= passing, sorted(set(KINDS) - passing)
    assert set(KINDS) <= failing, sorted(set(KINDS) - failing)


def test_details_say_what_was_measured() -> None:
    spec = validate_spec({"kind": "title", "params": {"exact_length": 10}})
    assert spec is not None
    verdict = run_check(spec, "<<家庭智能设备安全使用指南解读>>")
    assert verdict.detail == "title '家庭智能设备安全使用指南解读': 14 characters, expected exactly 10"
    spec = validate_spec({"kind": "char_count", "params": {"exact": 10}})
    assert spec is not None
    assert run_check(spec, "fourteen chars").detail == "13 characters, expected exactly 10"


LOOSE_CASES: list[tuple[str, dict, str]] = [
    # strict fails, loose passes
    ("json_valid", {"required_keys": ["a"]}, 'Here is the JSON:\n```json\n{"a": 1}\n```'),
    ("json_valid", {}, 'Sure:\n```\n{"a": 1}\n```\nDone.'),
    ("all_lowercase", {}, "Sure! here you go.\nall lowercase text here."),
    ("starts_with", {"phrase": "My answer"}, "Sure, here it is:\nMy answer is yes."),
    ("ends_with", {"phrase": "Is there anything else?"}, "Is there anything else?\nHope this helps!"),
    ("keyword_exclude", {"keywords": ["Sure"]}, "Sure!\nThe capital of France is Paris."),
    ("wrapped_in_quotes", {}, 'Here you go:\n"A quoted answer."'),
    ("bold_count", {"exact": 0}, "**Title**\nPlain text."),
    ("starts_with", {"phrase": "结论"}, "**结论**：可以。"),
]


@pytest.mark.parametrize(("kind", "params", "response"), LOOSE_CASES, ids=[c[0] for c in LOOSE_CASES])
def test_loose_mode_forgives_preambles_and_emphasis(kind: str, params: dict, response: str) -> None:
    spec = validate_spec({"kind": kind, "params": params})
    assert spec is not None
    assert not run_check(spec, response, "strict").passed
    verdict = run_check(spec, response, "loose")
    assert verdict.passed, verdict.detail
    assert "(loose:" in verdict.detail


def test_loose_mode_still_fails_what_no_variant_fixes() -> None:
    spec = validate_spec({"kind": "json_valid", "params": {}})
    assert spec is not None
    verdict = run_check(spec, "Here is some text.\nNo JSON at all.\nBye.", "loose")
    assert not verdict.passed
    assert verdict.detail.startswith("not valid JSON")


def test_emoji_sequences_count_once() -> None:
    from trace_builder.verify.style import count_emoji

    assert count_emoji("👨‍👩‍👧") == 1  # ZWJ family
    assert count_emoji("🇨🇳🇫🇷") == 2  # two flags
    assert count_emoji("👍🏽") == 1  # skin tone modifier
    assert count_emoji("1️⃣ ❤️ ☀") == 3  # keycap, heart with selector, sun without
    assert count_emoji("© ® ™ ★ ✓ → #1 *") == 0  # text symbols are not emoji


def test_language_detection_is_deterministic_and_survives_broken_text() -> None:
    from trace_builder.verify.language import detect_language

    sample = "Regular exercise improves sleep quality and lowers stress for most adults. " * 3
    assert {detect_language(sample) for _ in range(5)} == {"en"}
    assert detect_language("这是一段中文，其中提到 Python 和 API。") == "zh"
    assert detect_language("Broken \ud800 text, but clearly written in English by a person.") == "en"
    assert detect_language("```\nx = 1\n```\nhttps://example.com") is None
