"""Turn a free-text reply into an option letter, with VLMEvalKit's rules.

Mirrors ``can_infer_option`` / ``can_infer_text`` of vlmeval/utils/matching_util.py:
1. known refusals -> ``Z``;
2. replace the punctuation ``.()[],:;!*#{}`` by spaces and split on whitespace; if exactly one
   option letter occurs among the words and it is within the last five words, take it; if no
   letter occurs but a lone ``Z`` does, take ``Z``;
3. else, if the reply is at most twice as long as all option texts together, the unique option
   whose (lower-cased) text is contained in the (lower-cased) reply;
4. else ask the judge model if one is configured (up to 3 tries, VLMEvalKit's judge prompt);
5. else ``Z`` (counted wrong). VLMEvalKit guesses randomly when its judge fails three times;
   we record ``Z`` so that scores are deterministic.

``lenient=True`` additionally normalises full-width (Chinese-style) punctuation, e.g.
``答案：（B）。``, which VLMEvalKit does not handle; it is off by default for comparability.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
API_FAILURE = "Failed to obtain answer via API"
_PUNCT = ".()[],:;!*#{}"
_CJK_PUNCT = "。，、：；！？（）【】「」『』《》"

JUDGE_PROMPT = (
    "You are an AI assistant who will help me to match an answer with several options of a "
    "single-choice question. You are provided with a question, several options, and an "
    "answer, and you need to find which option is most similar to the answer. If the meaning "
    "of all options are significantly different from the answer, output Z. Your should output "
    "a single uppercase character in A, B, C, D (if they are valid options), and Z. \n"
    "Example 1: \nQuestion: What is the main object in image?\n"
    "Options: A. teddy bear B. rabbit C. cat D. dog\nAnswer: a cute teddy bear\n"
    "Your output: A\nExample 2: \nQuestion: What is the main object in image?\n"
    "Options: A. teddy bear B. rabbit C. cat D. dog\nAnswer: Spider\nYour output: Z\n"
    "Example 3: \nQuestion: {question}?\nOptions: {options}\nAnswer: {answer}\nYour output: "
)


@dataclass(frozen=True)
class Extraction:
    """The letter chosen for a reply and how it was found."""

    letter: str  # an option letter, or "Z" (no/invalid answer; always wrong)
    method: str  # "letter" | "text" | "refusal" | "judge" | "failed"


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    for c in _CJK_PUNCT:
        text = text.replace(c, " ")
    return text


def can_infer_option(answer: str, choices: dict[str, str]) -> str | None:
    """VLMEvalKit's letter rule; returns a letter, ``Z`` (refusal) or ``None``."""
    if API_FAILURE in answer:
        return None
    if any(r in answer for r in REFUSALS):
        return "Z"
    mod = answer
    for c in _PUNCT:
        mod = mod.replace(c, " ")
    splits = [x.strip() for x in mod.split()]
    count = sum(1 for c in choices if c in splits)
    if count == 1:
        for ch in choices:
            if ch in splits and splits.index(ch) > len(splits) - 5:
                return ch
    elif count == 0 and sum(1 for c in ("Z", "") if c in splits) == 1:
        return "Z"
    return None


def can_infer_text(answer: str, choices: dict[str, str]) -> str | None:
    """VLMEvalKit's text rule: the unique option text contained in a not-too-long reply."""
    answer = answer.lower()
    if len(answer) > 2 * sum(len(str(v)) for v in choices.values()):
        return None
    cands = [k for k, v in choices.items() if str(v).lower() in answer]
    return cands[0] if len(cands) == 1 else None


def rule_extract(reply: str, choices: dict[str, str], lenient: bool = False) -> Extraction | None:
    """Letter rule, then text rule; ``None`` when neither decides."""
    reply = str(reply)
    if lenient:
        reply = _normalise(reply)
    letter = can_infer_option(reply, choices)
    if letter == "Z":
        return Extraction("Z", "refusal")
    if letter:
        return Extraction(letter, "letter")
    letter = can_infer_text(reply, choices)
    if letter:
        return Extraction(letter, "text")
    return None


def judge_prompt(question: str, choices: dict[str, str], reply: str) -> str:
    """VLMEvalKit's answer-matching prompt for the judge model."""
    options = " ".join(f"{k}. {v}" for k, v in choices.items())
    return JUDGE_PROMPT.format(question=question, options=options, answer=reply)


def extract(
    reply: str,
    choices: dict[str, str],
    question: str = "",
    judge: Callable[[str], str] | None = None,
    lenient: bool = False,
    tries: int = 3,
) -> Extraction:
    """Extract a letter from ``reply``: rules first, the judge only when the rules fail."""
    found = rule_extract(reply, choices, lenient)
    if found is not None:
        return found
    if judge is not None:
        prompt = judge_prompt(question, choices, str(reply))
        for _ in range(tries):
            verdict = judge(prompt)
            if API_FAILURE in verdict:
                continue
            letter = can_infer_option(verdict, choices) or can_infer_text(verdict, choices)
            if letter:
                return Extraction(letter, "judge")
    return Extraction("Z", "failed")
