"""IFEval-style conformance: every check kind on cases written against IFEval's reference behaviour, strict and loose.

Each kind has at least ten cases, among them an empty answer and, where they mean something,
code fences, quotes, accented Unicode and CJK text. A case reads (params, response, expected)
where expected is (strict passes, loose passes). Where a case pins a deliberate difference
from IFEval, the comment says so; docs/checks.md gives the reasons.
"""

from __future__ import annotations

import pytest

from trace_builder.verify import KINDS, run_check, validate_spec

T = (True, True)  # passes strict (and so loose)
F = (False, False)  # fails both
L = (False, True)  # fails strict, loose forgives it (a preamble, a sign-off, markdown '*')

OPTIONS = {"options": ["My answer is yes.", "My answer is no.", "My answer is maybe."]}
TABLE = "| a | b |\n|---|---|\n| 1 | 2 |"

CASES: dict[str, list[tuple[dict, str, tuple[bool, bool]]]] = {
    "word_count": [
        ({"exact": 5}, "The cat sat on mats.", T),
        ({"max": 3}, "The cat sat on mats.", F),
        ({"min": 1}, "", F),
        ({"max": 0}, "", T),
        ({"exact": 7}, "我爱北京天安门！", T),  # one word per CJK character
        ({"exact": 3}, "Don't over-think it.", T),  # differs: IFEval's \w+ tokenizer counts 5
        ({"exact": 2}, '"Hello, world!"', T),
        ({"exact": 3}, "```python\nprint(x)\n```", T),  # code is text too
        ({"exact": 3}, "Café naïve résumé", T),
        ({"max": 2}, "**Bold** words here", F),
        ({"max": 3}, "Sure!\nOne two three.", L),
        ({"exact": 3}, "3.14 is pi", T),
        ({"exact": 2}, "🎉 Great job 🎉", T),
    ],
    "char_count": [
        ({"exact": 10}, "abc de fgh ij", T),
        ({"exact": 13, "include_whitespace": True}, "abc de fgh ij", T),
        ({"max": 5}, "人工智能技术发展", F),
        ({"exact": 8}, "人工智能技术发展", T),
        ({"min": 1}, "", F),
        ({"exact": 0}, "", T),
        ({"exact": 2}, "😀😀", T),
        ({"exact": 1}, "é", T),
        ({"exact": 2}, "e\u0301", T),  # code points, not graphemes
        ({"max": 10}, '"quoted"', T),
        ({"max": 5}, "Sure\nabcde", L),
        ({"exact": 9}, "```\nabc\n```", T),
    ],
    "sentence_count": [
        ({"exact": 2}, "Dr. Smith paid 3.50 dollars. He left.", T),
        ({"exact": 2}, "人工智能正在改变我们的工作方式。它能自动完成重复的任务。", T),
        ({"min": 1}, "", F),
        ({"exact": 2}, '"Stop." He left.', T),
        ({"exact": 2}, "One.\nTwo\nThree!", T),  # a line break alone ends no sentence, as IFEval's Punkt
        ({"exact": 1}, "e.g. this is one sentence.", T),
        ({"exact": 2}, "Wait... Really?", T),  # differs: Punkt mostly runs on after an ellipsis
        ({"exact": 1}, "Wait... what happened?", T),
        ({"exact": 2}, "Version 3.12 is out. Upgrade now!", T),
        ({"max": 1}, "Sure.\nOne sentence only.", L),
        ({"exact": 2}, "你好！How are you?", T),
        ({"exact": 1}, "Mr. Brown met Ms. Green.", T),
        ({"exact": 1}, "- a item\n- b item\n# Head", T),  # unterminated lines run on, as in Punkt
        ({"exact": 4}, "Here are the steps:\n1. Preheat the oven.\n2. Mix the batter.", T),  # "1." is one there too
        ({"exact": 1}, "- Keep a bedtime\n- Avoid screens\n- Cut caffeine", T),
        ({"exact": 1}, "The moon climbs over silver hills\nand every window hums a tune", T),  # a poem's lines
        ({"exact": 2}, "[Chorus]\nHold on, hold on\nCan you feel it tonight?\nWe never stop", T),  # lyrics
        ({"exact": 1}, "<<Ode>>\n\nRoses are red.", T),  # a title runs on into the first sentence
        ({"exact": 2}, "We moved to the U.S. The weather was great.", T),  # an abbreviation, then an opener
        ({"exact": 1}, "step 1. keep going.", T),
        ({"exact": 2}, "**Plan ahead.** Then relax.", T),
    ],
    "paragraph_count": [
        ({"exact": 3}, "A.\n\nB.\n\nC.", T),
        ({"exact": 2}, "A.\n \nB.", T),  # a whitespace-only line is blank
        ({"min": 1}, "", F),
        ({"exact": 2, "separator": "divider"}, "First.\n***\nSecond.", T),
        ({"exact": 1, "separator": "divider"}, "First.\n\nSecond.", T),
        ({"exact": 2}, "第一段。\n\n第二段。", T),
        ({"exact": 3}, "A\n\n\n\nB\n\nC", T),
        ({"exact": 2, "separator": "divider"}, "Intro\n* * *\nEnd", T),
        ({"exact": 2, "separator": "divider"}, "First part. *** Second part.", T),  # inline, as IFEval
        ({"exact": 3, "separator": "divider"}, "A.***B.***C.", T),
        ({"exact": 1, "separator": "divider"}, "A ***bold italic*** word.", T),  # differs: IFEval splits it
        ({"max": 1}, "Sure!\n\nThe only paragraph.", L),
        ({"exact": 2}, '"Quoted para one.\n\nPara two."', T),
        ({"exact": 2}, "```\ncode\n\nmore\n```", T),  # as IFEval: blank lines split, code or not
    ],
    "sentence_length": [
        ({"max_words": 5}, "Short one. Another short one.", T),
        ({"max_words": 2}, "Short one. Another short one.", F),
        ({"min_words": 1}, "", F),
        ({"max_words": 5}, "我爱你。你好吗？", T),
        ({"min_words": 4}, "我爱你。你好吗？", F),
        ({"min_words": 2, "max_words": 3}, "Well done. Very well done.", T),
        ({"max_words": 3}, '"Go now." She ran.', T),
        ({"max_words": 3}, "Sure, here is my answer:\nOk. Fine.", L),
        ({"max_words": 3}, "Don't over-think it.", T),
        ({"max_words": 4}, "Title\n\nOne two three.", T),  # a heading runs on into the sentence
        ({"max_words": 3}, "- one two\n- three four", L),  # unterminated items run on; loose drops one
        ({"min_words": 3}, "One two three. Four.", F),
    ],
    "keyword_include": [
        ({"keywords": ["privacy"]}, "Privacy matters.", T),
        ({"keywords": ["cat"]}, "A category.", F),  # differs: IFEval matches inside words
        ({"keywords": ["cat"], "whole_word": False}, "A category.", T),
        ({"keywords": ["隐私"]}, "我们重视隐私保护。", T),  # CJK: no word boundaries
        ({"keywords": ["x"]}, "", F),
        ({"keywords": ["AI"], "case_sensitive": True}, "ai", F),
        ({"keywords": ["naïve"]}, "A NAÏVE view.", T),
        ({"keywords": ["machine learning"]}, "Machine\nlearning", T),
        ({"keywords": ["apple", "pear"], "require": "any"}, "I like pears.", T),  # a plural, as IFEval
        ({"keywords": ["apple", "pear"], "require": "any"}, "I like pearls.", F),
        ({"keywords": ["robot"]}, "ROBOTS are here.", T),
        ({"keywords": ["C++"]}, "I write C++ daily.", T),
        ({"keywords": ["json"]}, "```json\n{}\n```", T),
        ({"keywords": ["data"]}, '"Data," he said.', T),
    ],
    "keyword_exclude": [
        ({"keywords": ["crypto"]}, "Blockchain talk.", T),
        ({"keywords": ["crypto"]}, "Crypto is risky.", F),
        ({"keywords": ["crypto"]}, "", T),
        ({"keywords": ["cat"]}, "A category.", T),
        ({"keywords": ["cat"]}, "Two cats.", T),  # the word itself is forbidden, as IFEval's \b
        ({"keywords": ["区块链"]}, "区块链技术", F),
        ({"keywords": ["Sure"]}, "Sure!\nParis.", L),
        ({"keywords": ["AI"], "case_sensitive": True}, "ai rocks", T),
        ({"keywords": ["foo bar"]}, "foo  bar", F),
        ({"keywords": ["naïve"]}, "Naïve idea", F),
        ({"keywords": ["print"]}, "```python\nprint(1)\n```", F),
        ({"keywords": ["no"]}, '"No."', F),
    ],
    "keyword_frequency": [
        ({"keyword": "it", "exact": 2}, "It is what it is.", T),
        ({"keyword": "it", "min": 3}, "It is what it is.", F),
        ({"keyword": "正在", "exact": 2}, "正在下雨，正在刮风。", T),
        ({"keyword": "x", "min": 1}, "", F),
        ({"keyword": "x", "max": 0}, "", T),
        ({"keyword": "cat", "exact": 2}, "cat category cats", T),  # differs: IFEval counts "category" too
        ({"keyword": "cat", "exact": 4}, "Cat, cats, CATS and a cat's toy.", T),  # plural and case variants
        ({"keyword": "box", "exact": 2}, "One box, two boxes.", T),
        ({"keyword": "city", "exact": 1}, "One city, two cities.", T),  # IFEval's substring neither
        ({"keyword": "cat", "exact": 3, "whole_word": False}, "cat category cats", T),
        ({"keyword": "AI", "exact": 1, "case_sensitive": True}, "AI ai Ai", T),
        ({"keyword": "data", "exact": 2}, '"Data" and data.', T),
        ({"keyword": "the", "max": 1}, "The end.\nThe the.", L),
        ({"keyword": "café", "exact": 1}, "```\nCAFÉ\n```", T),
    ],
    "json_valid": [
        ({}, '{"a": 1}', T),
        ({}, '```json\n{"a": 1}\n```', T),  # IFEval strips a fence around the whole response
        ({}, "```\n[1, 2]\n```", T),
        ({}, '```JSON\n{"a": 1}\n```', T),
        ({}, "", F),
        ({}, "{'a': 1}", F),
        ({"required_keys": ["姓名"]}, '{"姓名": "张三"}', T),
        ({"required_keys": ["b"]}, '{"a": 1}', F),
        ({}, 'Here you go:\n```json\n{"a": 1}\n```', L),
        ({}, '"just a string"', T),
        ({}, '```python\n{"a": 1}\n```', L),
        ({}, '{"a": 1}\nHope this helps!', L),
        ({"required_keys": ["a"]}, '[{"a": 1}]', F),
    ],
    "markdown_table": [
        ({}, TABLE, T),
        ({}, "| 姓名 | 年龄 |\n| --- | --- |\n| 张三 | 20 |", T),
        ({}, "", F),
        ({}, "a | b\nc | d", F),
        ({"min_rows": 2}, TABLE, F),
        ({"min_columns": 3}, "| a | b | c |\n|:-|:-:|-:|\n| 1 | 2 | 3 |", T),
        ({}, f"```\n{TABLE}\n```", L),  # a table inside code is code; loose drops the fence lines
        ({}, "a | b\n---|---\n1 | 2", T),
        ({"min_tables": 2}, f"{TABLE}\n\n{TABLE}", T),
        ({}, "| a | b |\n|---|\n| 1 | 2 |", F),
    ],
    "heading_count": [
        ({"exact": 2}, "# A\ntext\n## B", T),
        ({"exact": 1}, "#NoSpace\n# Real", T),
        ({"min": 1}, "", F),
        ({"exact": 0}, "", T),
        ({"exact": 2}, "# 引言\n## 方法", T),
        ({"exact": 1}, "```\n# comment\n```\n# Title", T),
        ({"exact": 1, "level": 2}, "# A\n## B\n### C", T),
        ({"exact": 0}, "    # four-space indent", T),
        ({"min": 2}, "# Only one", F),
        ({"exact": 1}, "# Title #", T),
        ({"exact": 1}, '"# Not a heading"', F),
    ],
    "heading_levels": [
        ({"min_levels": 2}, "# A\n## B", T),
        ({"min_levels": 3}, "# A\n## B", F),
        ({"max_level": 2}, "# A\n### C", L),  # as IFEval, loose may drop the offending line
        ({"no_skipped_levels": True}, "# A\n### C", L),
        ({"no_skipped_levels": True}, "# A\n## B\n### C\n## D", T),
        ({"min_levels": 1}, "", F),
        ({"max_level": 3}, "## 二级\n### 三级", T),
        ({"no_skipped_levels": True}, "## A\n### B", T),
        ({"min_levels": 1}, "```\n# x\n```", L),
        ({"max_level": 1}, "# Title\nText", T),
    ],
    "numbered_list_items": [
        ({"exact": 3}, "1. a\n2. b\n3. c", T),
        ({"exact": 4}, "1、准备\n2、搅拌\n（3）烘烤\n四、装盘", T),
        ({"min": 1}, "", F),
        ({"min": 1}, "In 2024. we grew.\n3.14 is pi", F),
        ({"exact": 2}, "1) one\n2) two", T),
        ({"exact": 0}, "```\n1. code\n```", T),
        ({"exact": 2}, "  1. nested\n  2. nested", T),
        ({"max": 1}, "1. a\n2. b", L),
        ({"exact": 2}, "**1.** bold\n2. plain", L),
        ({"exact": 0}, "1.5 million people", T),
    ],
    "bullet_list_items": [
        ({"exact": 2}, "- a\n- b", T),
        ({"exact": 3}, "- 苹果\n* 香蕉\n• 橙子", T),
        ({"min": 1}, "", F),
        ({"exact": 0}, "---\n***", T),  # rules, not bullets
        ({"exact": 1}, "-no space\n- yes", T),
        ({"exact": 0}, "```\n- code\n```", T),
        ({"max": 1}, "- a\n- b", L),
        ({"exact": 2}, "  - nested\n    - deeper", T),
        ({"exact": 1}, "**Bold** start\n+ plus item", T),
        ({"min": 3}, "Sure:\n- a\n- b", F),
        ({"exact": 1}, "- a\n\n*Note: results vary.*", T),  # differs: IFEval counts the italic line
    ],
    "list_item_length": [
        ({"max": 3}, "- one two\n- three", T),
        ({"max": 1}, "- one two\n- three", L),
        ({"max": 3}, "", F),
        ({"max": 5, "unit": "chars"}, "1. 准备材料\n2. 把面粉搅拌均匀", L),
        ({"max": 8, "unit": "chars"}, "1. 准备材料\n2. 把面粉搅拌均匀", T),
        ({"min": 2, "list_type": "numbered"}, "1. two words\n- x", T),
        ({"min": 2, "list_type": "bullet"}, "1. two words\n- x", F),
        ({"max": 3}, "No list here.", F),
        ({"max": 2}, "- **Bold** item", T),
        ({"min": 1, "max": 1}, "- 🎉", F),
    ],
    "code_block": [
        ({}, "```\nx\n```", T),
        ({"language": "python"}, "```python\nprint(1)\n```", T),
        ({"language": "sql"}, "```python\nprint(1)\n```", F),
        ({}, "", F),
        ({}, "`inline`", F),
        ({"min_count": 2}, "```a\n1\n```\n```b\n2\n```", T),
        ({}, "~~~\ncode\n~~~", T),
        ({}, "```\nunclosed", F),
        ({"language": "Python"}, "```PYTHON\nx\n```", T),
        ({}, "```\n中文代码\n```", T),
    ],
    "section_count": [
        ({"marker": "SECTION", "exact": 2}, "SECTION 1\nA\nSECTION 2\nB", T),
        ({"marker": "SECTION", "exact": 2}, '"SECTION 1: A\nSECTION 2: B"', T),  # opening quote
        ({"marker": "Part", "exact": 1}, "Part 1\nParticipants", T),  # whole word
        ({"marker": "Part", "min": 1}, "", F),
        ({"marker": "第", "exact": 2}, "第一部分\n第二部分", T),
        ({"marker": "SECTION", "exact": 1}, "## SECTION 1\nText\n```\nSECTION 2\n```", T),
        ({"marker": "Section", "exact": 0}, "SECTION 1", T),  # case-sensitive, as IFEval
        ({"marker": "SECTION", "exact": 1}, "Intro. SECTION 1 is here.", F),  # differs: line start only
        ({"marker": "SECTION", "exact": 2}, "**SECTION 1**\n> SECTION 2", T),
        ({"marker": "Day", "exact": 2}, "Day 1: go\nDays later\nDay 2: back", T),
        ({"marker": "SECTION", "exact": 1}, "“SECTION 1” begins", T),
    ],
    "placeholders": [
        ({}, "Dear [name],", T),
        ({"min_count": 2}, "[name] and [date]", T),
        ({}, "", F),
        ({}, "See [1].", F),  # differs: a citation is no placeholder
        ({}, "[link](https://x.org)", F),
        ({}, "尊敬的[客户姓名]", T),
        ({}, "![alt] image", F),
        ({}, "[ ]", F),
        ({"min_count": 2}, "[a] [a]", T),
        ({}, "```\n[code]\n```", T),
    ],
    "title": [
        ({}, "<<Ode>>\nText", T),
        ({}, "Ode\nText", F),
        ({}, "", F),
        ({}, "<< >>", F),  # a blank title is no title
        ({}, "<<  >>\n<<Real>>", T),
        ({"style": "《》"}, "《春晓》", T),
        ({"style": "《》"}, "<<春晓>>", F),
        ({"exact_length": 11}, "<<Ode to Spring>>", T),
        ({"exact_length": 14}, "<<家庭智能设备安全使用指南解读>>", T),
        ({}, "**<<Bold Title>>**", T),
        ({}, "<<Line\nbreak>>", F),
        ({"max_length": 3}, "<<Long title>>", F),
    ],
    "postscript": [
        ({}, "Hi.\nP.S. Bye.", T),
        ({}, "Hi.\np.s. bye", T),
        ({}, "", F),
        ({"marker": "P.P.S"}, "Hi.\nP.P.S Remember.", T),
        ({"marker": "P.P.S."}, "Hi.\nP.S. one", F),
        ({"marker": "附言"}, "祝好！\n附言：带伞。", T),
        ({}, "Hi.\nPS: bye", T),
        ({}, "Hi.\n**P.S.** bye", T),
        ({}, "Hi. P.S. inline", F),  # differs: IFEval finds it mid-line
        ({}, "Hi.\nPS5 rocks", F),
        ({}, "Hi.\nP. S. bye", T),
    ],
    "numeric_citations": [
        ({"min_count": 2}, "A [1]. B [2].", T),
        ({"min_count": 2}, "A [1]. B [1].", F),
        ({}, "", F),
        ({"min_count": 3}, "See [1, 2] and [3].", T),
        ({"min_count": 3}, "See [4-6].", F),  # a range counts its two ends
        ({}, "研究表明[1]。", T),
        ({}, "[name]", F),
        ({}, "[1](https://x)", F),
        ({}, "**[1]** source", T),
        ({"min_count": 2}, "[1]、[2]", T),
    ],
    "response_language": [
        ({"language": "en"}, "Regular exercise improves sleep quality for most adults.", T),
        ({"language": "zh"}, "人工智能正在改变我们的工作方式。", T),
        ({"language": "en"}, "人工智能正在改变我们的工作方式。", F),
        ({"language": "en"}, "", F),
        ({"language": "en"}, "```\n12345\n```", F),
        ({"language": "sw"}, "Mazoezi ya mara kwa mara huboresha ubora wa usingizi.", T),
        ({"language": "kn"}, "ನಿಯಮಿತ ವ್ಯಾಯಾಮವು ನಿದ್ರೆಯ ಗುಣಮಟ್ಟವನ್ನು ಸುಧಾರಿಸುತ್ತದೆ.", T),
        ({"language": "fr"}, "Le renard brun saute par-dessus le chien paresseux.", T),
        ({"language": "ja"}, "これは日本語の文章です。", T),
        ({"language": "ko"}, "이것은 한국어 문장입니다.", T),
        ({"language": "ru"}, "Регулярні фізичні вправи покращують якість сну.", F),  # Ukrainian
        ({"language": "zh"}, "下面是代码：\n```python\nprint('this is English code')\n```", T),
        ({"language": "en"}, '"This is plain English text in quotes."', T),
    ],
    "all_lowercase": [
        ({}, "hello world.", T),
        ({}, "Hello", F),
        ({}, "", F),
        ({}, "全部中文。", F),  # differs: IFEval passes text without cased letters
        ({}, "héllo wörld", T),
        ({}, "ÉTÉ", F),
        ({}, "```\nCode\n```\ntext", F),
        ({}, "Sure!\nall lowercase here.", L),
        ({}, "中文 with english words mostly in english here", T),
        ({}, "привет мир", T),
        ({}, "12345", F),
    ],
    "all_uppercase": [
        ({}, "HELLO WORLD!", T),
        ({}, "Hello", F),
        ({}, "", F),
        ({}, "停下！", F),
        ({}, "STOP! 停下！", T),
        ({}, "ÉTÉ À PARIS", T),
        ({}, "ПРИВЕТ", T),
        ({}, "Sure:\nALL CAPS HERE", L),
        ({}, "HELLO\n```\ncode\n```", F),
        ({}, "straße", F),
        ({}, '"QUOTED"', T),
        ({}, "YES.", T),  # differs: langdetect calls it Welsh
        ({}, "I AGREE WITH YOU.", T),
        ({}, "MY ANSWER IS yes.", F),
    ],
    "capital_word_count": [
        ({"min": 2}, "This is VERY IMPORTANT.", T),
        ({"max": 1}, "VERY IMPORTANT.", F),
        ({"min": 1}, "", F),
        ({"exact": 0}, "", T),
        ({"exact": 1}, "I think so.", T),
        ({"exact": 2}, "The AI's answer is NOT final.", T),
        ({"exact": 0}, "中文没有大写", T),
        ({"exact": 2}, "ÉTÉ À", T),
        ({"exact": 0}, "USA-based firm", T),
        ({"exact": 2}, "**NOTE** and **WARNING**", T),
        ({"exact": 1}, "Version 3.12 of API", T),
        ({"exact": 1}, "The U.S. team won.", T),  # one word, as NLTK's token
        ({"exact": 1}, "DON'T panic.", T),  # differs: NLTK makes DO and N'T
    ],
    "letter_frequency": [
        ({"letter": "e", "exact": 5}, "Eleven bees.", T),
        ({"letter": "e", "exact": 3}, "Eleven bees.", F),
        ({"letter": "a", "min": 1}, "", F),
        ({"letter": "a", "max": 0}, "", T),
        ({"letter": "E", "exact": 1, "case_sensitive": True}, "Eleven bees.", T),
        ({"letter": "é", "exact": 2}, "Été", T),
        ({"letter": "e", "exact": 0}, "été", T),  # é is not e
        ({"letter": "z", "min": 1}, "没有", F),
        ({"letter": "q", "max": 1}, "**q** q", F),
        ({"letter": "x", "exact": 2}, "```\nx\n```\nx", T),
        ({"letter": "s", "min": 3}, '"Sure."\nss', T),
    ],
    "separated_responses": [
        ({}, "A\n******\nB", T),
        ({}, "A\n******\nA", F),
        ({}, "", F),
        ({}, "A", F),
        ({}, "A\n******\n\n******\nB", F),
        ({}, "******\nA\n******\nB\n******", T),
        ({"count": 3, "separator": "---"}, "一\n---\n二\n---\n三", T),
        ({}, "回答一\n******\n回答二", T),
        ({}, "A\n*****\nB", F),
        ({}, "A\n******\nB\n******\nC", L),
        ({}, '"Yes."\n******\n"No."', T),
    ],
    "paragraph_first_word": [
        ({"first_word": "however", "nth": 2}, "A.\n\nHowever, b.\n\nC.", T),
        ({"first_word": "however", "nth": 2, "paragraphs": 2}, "A.\n\nHowever, b.\n\nC.", L),
        ({"first_word": "a", "nth": 1}, "", F),
        ({"first_word": "但", "nth": 2}, "一。\n\n但二。", T),
        ({"first_word": "Art", "nth": 1}, "Artificial.", F),
        ({"first_word": "first", "nth": 1}, '"First, quotes."', T),
        ({"first_word": "first", "nth": 1}, "**First** bold", T),
        ({"first_word": "首先", "nth": 1}, "首先，我们……", T),
        ({"first_word": "x", "nth": 3}, "A\n\nB", F),
        ({"first_word": "don't", "nth": 1}, "Don't stop.", T),
        ({"first_word": "intro", "nth": 1}, "Sure!\nIntro text.\n\nSecond.", L),
    ],
    "answer_from_options": [
        (OPTIONS, "My answer is yes.", T),
        (OPTIONS, "", F),
        (OPTIONS, "My answer is yes. My answer is no.", F),  # differs: IFEval passes two answers
        (OPTIONS, "I think so. My answer is maybe.", T),
        (OPTIONS, "my answer is no.", T),
        (OPTIONS, "Yes.", F),
        ({"options": ["是", "否"], "exact": True}, "是", T),
        ({"options": ["是", "否"], "exact": True}, "是的", F),
        ({"options": ["A", "B"]}, "**A**", T),
        ({"options": ["yes", "yes, definitely"]}, "Yes, definitely.", T),
        ({"options": ["A", "B"], "exact": True}, '"A"', F),
        (OPTIONS, '"My answer is no."', T),
        (OPTIONS, "My answer is no", F),  # without its point it is not the option, as IFEval
        (OPTIONS, "After weighing it:\n\nMy answer is yes.", T),
        (OPTIONS, "MY ANSWER IS MAYBE.", T),  # differs: IFEval's option is case-sensitive
        ({**OPTIONS, "exact": True}, "Sure. My answer is maybe.", F),  # no IFEval counterpart
    ],
    "starts_with": [
        ({"phrase": "Dear team"}, "  dear team,", T),
        ({"phrase": "Dear team", "case_sensitive": True}, "dear team", F),
        ({"phrase": "x"}, "", F),
        ({"phrase": "亲爱的"}, "亲爱的同学们", T),
        ({"phrase": "My answer"}, "Sure:\nMy answer is yes.", L),
        ({"phrase": "结论"}, "**结论**：可以。", L),
        ({"phrase": "Hello"}, '"Hello there"', F),
        ({"phrase": "Ça"}, "ça va", T),
        ({"phrase": "Hi"}, "Hi there", T),
        ({"phrase": "Hi"}, "Hiking", T),  # a prefix, not a word
    ],
    "ends_with": [
        ({"phrase": "Any questions?"}, "That is all. Any questions?\n", T),
        ({"phrase": "Any questions?"}, "Any questions? That is all.", F),
        ({"phrase": "x"}, "", F),
        ({"phrase": "谢谢！"}, "以上。谢谢！", T),
        ({"phrase": "Is there anything else?"}, "Is there anything else?\nHope this helps!", L),
        ({"phrase": "the end"}, "THE END", T),
        ({"phrase": "the end", "case_sensitive": True}, "THE END", F),
        ({"phrase": "Bye."}, '"Bye."', T),  # a closing quote is ignored, as IFEval
        ({"phrase": "Any questions?"}, "“That is all. Any questions?”", T),
        ({"phrase": "END"}, "**END**", L),
        ({"phrase": "long phrase here"}, "here", F),
    ],
    "ends_with_question": [
        ({}, "What?", T),
        ({}, "你好吗？", T),
        ({}, "", F),
        ({}, "Done.", F),
        ({}, "Why?  \n", T),
        ({}, '"Why?"', F),
        ({}, "Why?\nThanks!", L),
        ({}, "¿Qué?", T),
        ({}, "**Why?**", L),
        ({}, "Really?!", F),
    ],
    "no_commas": [
        ({}, "No commas.", T),
        ({}, "One, two.", F),
        ({}, "", T),
        ({}, "你好，世界", F),
        ({}, "苹果、香蕉", F),  # differs: IFEval forbids only ","
        ({"commas": "ascii"}, "苹果、香蕉，", T),
        ({}, "١،٢", F),
        ({}, "```\na, b\n```", F),
        ({}, "Sure, here:\nNo commas here.", L),
        ({}, "1,000 people", F),
    ],
    "wrapped_in_quotes": [
        ({}, '"Quoted."', T),
        ({}, "“引号”", T),
        ({}, "", F),
        ({}, '"', F),
        ({}, 'Part "quoted"', F),
        ({}, 'Here:\n"Quoted."', L),
        ({}, '  "Padded."  ', T),
        ({}, "'single'", F),
        ({}, '"Multi\nline"', T),
        ({}, '"Mismatch“', F),
        ({}, '“mixed"', T),
    ],
    "bold_count": [
        ({"min": 2}, "**a** and **b**", T),
        ({"min": 2}, "**a** and *b*", F),
        ({"min": 1}, "", F),
        ({"exact": 0}, "* item\n* item", T),
        ({"exact": 1}, "__under__", T),
        ({"exact": 1}, "**加粗**", T),
        ({"exact": 0}, "** not bold **", T),
        ({"exact": 0}, "**Title**\nPlain.", L),
        ({"exact": 0}, "**multi\nline**", T),
        ({"exact": 1}, "```\n**x**\n```", T),
    ],
    "highlight_count": [
        ({"min": 3}, "*one*, **two** and *three*.", T),
        ({"min": 2}, "* bullet\n* bullet", F),
        ({"min": 1}, "", F),
        ({"exact": 1}, "重点是*坚持*。", T),
        ({"exact": 0}, "a * b * c", T),
        ({"exact": 2}, "*a* *b*", T),
        ({"exact": 1}, "**bold**", T),
        ({"min": 1}, "Plain", F),
        ({"exact": 1}, "*斜体* text", T),
        ({"exact": 1}, "2*3*4", T),  # as IFEval: *3* is emphasis
        ({"exact": 1}, "* **Plan** ahead", T),  # differs: IFEval counts it twice
    ],
    "emoji_present": [
        ({}, "Great 🎉", T),
        ({}, "", F),
        ({}, "No emoji © ™", F),
        ({"min_count": 3}, "👍🏽 ❤️ 🇨🇳", T),
        ({"min_count": 2}, "👨‍👩‍👧", F),  # one ZWJ sequence
        ({}, "好的👍", T),
        ({}, "☀ sunny", T),
        ({}, ":)", F),
        ({}, "1️⃣ first", T),
        ({}, '"🎉"', T),
    ],
    "emoji_absent": [
        ({}, "Plain.", T),
        ({}, "", T),
        ({}, "太棒了😀", F),
        ({}, "© ® ™ ★ ✓ →", T),
        ({}, "I ❤ it", F),
        ({}, "#1 *", T),
        ({}, "🇫🇷", F),
        ({}, "Done.\n🎉", L),
        ({}, "中文。", T),
        ({}, "```\n😀\n```", F),
    ],
}

FLAT = [(kind, params, response, expected) for kind, cases in CASES.items() for params, response, expected in cases]


@pytest.mark.parametrize(
    ("kind", "params", "response", "expected"), FLAT, ids=[f"{kind}-{i}" for i, (kind, *_) in enumerate(FLAT)]
)
def test_strict_and_loose_agree_with_the_reference(
    kind: str, params: dict, response: str, expected: tuple[bool, bool]
) -> None:
    spec = validate_spec({"kind": kind, "params": params})
    assert spec is not None, f"spec rejected: {kind} {params}"
    strict, loose = run_check(spec, response, "strict"), run_check(spec, response, "loose")
    assert (strict.passed, loose.passed) == expected, (strict.detail, loose.detail)


def test_every_kind_has_ten_cases_and_an_empty_answer() -> None:
    assert set(CASES) == set(KINDS), sorted(set(CASES) ^ set(KINDS))
    for kind, cases in CASES.items():
        assert len(cases) >= 10, kind
        assert any(response == "" for _, response, _ in cases), kind
