"""Turn a free-text reply into an option letter, rule for rule as VLMEvalKit does.

Mirrors ``can_infer`` = ``can_infer_option`` then ``can_infer_text`` of VLMEvalKit's
``vlmeval/utils/matching_util.py`` and the exact-matching / judge flow of
``extract_answer_from_item`` in ``vlmeval/dataset/utils/multiple_choice.py`` (VLMEvalKit commit
e8e78f05, 2026-08-18; see evaluate/README.md):

1. a reply containing ``Failed to obtain answer via API`` skips the letter rule;
2. known refusals -> ``Z``;
3. replace the punctuation ``.()[],:;!*#{}`` by spaces and split on whitespace; if exactly one
   option letter occurs among the words and it is within the last five words, take it; if no
   letter occurs but a lone ``Z`` does, take ``Z``;
4. else the "answer is X" rule (VLMEvalKit PR #1552): the first match of
   ``(?i)(?:correct\\s+)?answer\\s+is\\s+\\**([ABCD])\\**`` in the reply, upper-cased, if that
   letter is an option (note: A-D only, lower case included);
5. else, if the reply is at most twice as long as all option texts together, the unique option
   whose (lower-cased) text is contained in the (lower-cased) reply;
6. else ask the judge model if one is configured (VLMEvalKit's matching prompt, its Chinese
   variant for questions with CJK characters; up to 3 tries; the verdict goes through 1-5);
7. else ``Z`` (counted wrong). Where VLMEvalKit picks a random option after three failed judge
   calls, we record ``Z`` with method ``judge_failed`` so that scores are deterministic.

Not mirrored: VLMEvalKit's debugging switch ``VERBOSE`` (an environment variable that, when set,
makes a reply with a word ``A`` and more than three words undecidable); the results it was
checked against were produced without it.

``lenient=True`` is a strict superset: the exact rules run first, and only a reply they cannot
decide is retried after NFKC normalisation and removal of full-width (CJK) punctuation, e.g.
``答案：（B）。``.
"""

from __future__ import annotations

import re
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
_VERBOSE_ANSWER_RE = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")
_CJK_RE = re.compile("[\u4e00-\u9fff]")

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
JUDGE_PROMPT_CN = (
    "你是一个帮助我匹配答案与单选题中多个选项的 AI 助手。"
    "你会被提供：一个问题，多个选项，一个答案。你的任务是找到与答案意义最相近的选项。"
    "如果所有选项的意义都与答案显著不同，则输出 Z。"
    "你应该输出一个单个的大写字母，例如 A, B, C, D（如果它们是有效选项），或 Z。"
    "例 1:"
    "问题: 图中最主要的物体是什么?\n选项: A. 泰迪熊 B. 兔子 C. 猫 D. 狗\n答案: 一只可爱的泰迪熊\n输出: A\n"
    "例 2: \n"
    "问题: 图中最主要的物体是什么?\n选项: A. 泰迪熊 B. 兔子 C. 猫 D. 狗\n答案: 蜘蛛\n输出: Z\n"
    "例 3: \n"
    "问题: {question}?\n选项: {options}\n答案: {answer}\n输出: "
)


@dataclass(frozen=True)
class Extraction:
    """The letter chosen for a reply and how it was found."""

    letter: str  # an option letter, or "Z" (no/invalid answer; always wrong)
    # "letter" | "text" | "refusal" | "judge" | "failed" | "judge_failed" | "lenient"
    method: str


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    for c in _CJK_PUNCT:
        text = text.replace(c, " ")
    return text


def can_infer_option(answer: str, choices: dict[str, str]) -> str | None:
    """VLMEvalKit's letter rules (1-4 above); a letter, ``Z`` or ``None``."""
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
    elif count == 0 and "Z" in splits:
        return "Z"
    match = _VERBOSE_ANSWER_RE.search(answer)
    if match and match.group(1).upper() in choices:
        return match.group(1).upper()
    return None


def can_infer_text(answer: str, choices: dict[str, str]) -> str | None:
    """VLMEvalKit's text rule: the unique option text contained in a not-too-long reply."""
    answer = answer.lower()
    if len(answer) > 2 * sum(len(str(v)) for v in choices.values()):
        return None
    cands = [k for k, v in choices.items() if str(v).lower() in answer]
    return cands[0] if len(cands) == 1 else None


def can_infer(answer: str, choices: dict[str, str]) -> str | None:
    """VLMEvalKit's ``can_infer``: the letter rules, then the text rule."""
    answer = str(answer)
    return can_infer_option(answer, choices) or can_infer_text(answer, choices)


def _exact(reply: str, choices: dict[str, str]) -> Extraction | None:
    letter = can_infer_option(reply, choices)
    if letter == "Z":
        return Extraction("Z", "refusal")
    if letter:
        return Extraction(letter, "letter")
    letter = can_infer_text(reply, choices)
    return Extraction(letter, "text") if letter else None


def rule_extract(reply: str, choices: dict[str, str], lenient: bool = False) -> Extraction | None:
    """VLMEvalKit's exact matching; ``None`` when it cannot decide.

    ``lenient`` retries an undecided reply after normalising full-width punctuation (method
    ``lenient``): everything the exact rules decide stays as it is.
    """
    reply = str(reply)
    found = _exact(reply, choices)
    if found is not None or not lenient:
        return found
    again = _exact(_normalise(reply), choices)
    return Extraction(again.letter, "lenient") if again is not None else None


def option_str(choices: dict[str, str]) -> str:
    """VLMEvalKit's ``build_option_str``: the options block of the judge prompt."""
    return "There are several options: \n" + "".join(f"{k}. {v}\n" for k, v in choices.items())


def judge_prompt(question: str, choices: dict[str, str], reply: str) -> str:
    """VLMEvalKit's answer-matching prompt (``build_prompt`` / ``build_prompt_cn``)."""
    template = JUDGE_PROMPT_CN if _CJK_RE.search(question) else JUDGE_PROMPT
    return template.format(question=question, options=option_str(choices), answer=reply)


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
    if judge is None:
        return Extraction("Z", "failed")
    prompt = judge_prompt(question, choices, str(reply))
    for _ in range(tries):
        verdict = str(judge(prompt))
        if API_FAILURE in verdict:
            continue
        letter = can_infer(verdict, choices)
        if letter:
            return Extraction(letter, "judge")
    return Extraction("Z", "judge_failed")
