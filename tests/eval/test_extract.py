"""Answer extraction follows VLMEvalKit's can_infer_option / can_infer_text."""

from __future__ import annotations

import pytest
from gmai_eval.extract import extract, judge_prompt, rule_extract

CHOICES = {"A": "liver", "B": "kidney", "C": "spleen", "D": "normal appearance"}

CASES = [
    ("B", "B", "letter"),
    ("B.", "B", "letter"),
    ("(C)", "C", "letter"),
    ("The answer is (B)", "B", "letter"),
    ("Answer: D", "D", "letter"),
    ("**A**", "A", "letter"),
    ("B. kidney", "B", "letter"),
    ("kidney", "B", "text"),
    ("The marked organ is the Spleen", "C", "text"),
    ("Normal appearance", "D", "text"),
    ("b", "Z", "failed"),  # lowercase letters are not letters to VLMEvalKit
    ("A or B", "Z", "failed"),  # two letters: ambiguous, option texts absent
    ("Either liver or kidney", "Z", "failed"),  # two option texts
    ("Cannot determine the answer from this image.", "Z", "refusal"),
    ("I'm sorry, but without the image provided I cannot answer", "Z", "refusal"),
    ("Z", "Z", "refusal"),
    ("", "Z", "failed"),
    # Letter must be among the last 5 words (VLMEvalKit's position rule).
    ("B is what I would say after looking very carefully at the whole image", "Z", "failed"),
    # Full-width punctuation is not stripped by VLMEvalKit: the letter is glued to it.
    ("答案：（B）。", "Z", "failed"),
]


@pytest.mark.parametrize(("reply", "letter", "method"), CASES)
def test_vlmevalkit_rules(reply: str, letter: str, method: str) -> None:
    got = extract(reply, dict(CHOICES))
    assert (got.letter, got.method) == (letter, method)


def test_lenient_handles_fullwidth_punctuation() -> None:
    assert rule_extract("答案：（B）。", CHOICES, lenient=True).letter == "B"
    assert rule_extract("选Ｃ", CHOICES, lenient=True) is None  # still no separate letter


def test_long_reply_skips_text_rule() -> None:
    long = "kidney " * 40
    assert rule_extract(long, CHOICES) is None


def test_judge_only_when_rules_fail() -> None:
    calls: list[str] = []

    def judge(prompt: str) -> str:
        calls.append(prompt)
        return "C"

    assert extract("B", dict(CHOICES), judge=judge).method == "letter"
    assert calls == []
    got = extract("the third organ, a lymphoid one", dict(CHOICES), "Which organ", judge=judge)
    assert (got.letter, got.method) == ("C", "judge")
    assert "Options: There are several options: \nA. liver\nB. kidney\n" in calls[0]
    assert "Question: Which organ?\n" in calls[0]


def test_judge_failures_give_z() -> None:
    replies = iter(["Failed to obtain answer via API.", "I don't know", "hmm"])
    got = extract("something odd", dict(CHOICES), judge=lambda p: next(replies))
    assert (got.letter, got.method) == ("Z", "judge_failed")


def test_judge_prompt_format() -> None:
    text = judge_prompt("Q", {"A": "x", "B": "y"}, "reply")
    # VLMEvalKit's build_prompt with build_option_str's options block
    assert text.endswith("Question: Q?\nOptions: There are several options: \nA. x\nB. y\n"
                         "\nAnswer: reply\nYour output: ")
    assert judge_prompt("图中是什么", {"A": "x"}, "r").endswith(
        "问题: 图中是什么?\n选项: There are several options: \nA. x\n\n答案: r\n输出: ")


ANSWER_IS = [  # VLMEvalKit PR #1552: letters outside the last five words, "answer is X"
    ("The answer is A because the liver is the largest organ in the abdomen", "A"),
    ("The correct answer is **C**. Here's why: the spleen sits in the left upper quadrant", "C"),
    ("I believe the answer is A, as the image shows the liver with its typical shape", "A"),
    ("Let me think step by step. The answer is D. The organ looks entirely normal here", "D"),
    ("the answer is a", "A"),
]


@pytest.mark.parametrize(("reply", "letter"), ANSWER_IS)
def test_answer_is_rule(reply: str, letter: str) -> None:
    assert extract(reply, dict(CHOICES)) == type(extract("B", CHOICES))(letter, "letter")


def test_answer_is_rule_needs_an_existing_option_among_a_to_d() -> None:
    two = {"A": "liver", "B": "kidney"}
    assert extract("I think the answer is C for the image we were given today", two).letter == "Z"
    five = dict(CHOICES, E="stomach")
    assert extract("Thinking about it all, the answer is E for this image here", five).letter == "Z"


def test_api_failure_text_still_goes_through_the_text_rule() -> None:
    assert extract("Failed to obtain answer via API. B", dict(CHOICES)).letter == "Z"
    assert extract("Failed to obtain answer via API kidney", {"A": "liver and more", "B":
                                                              "kidney"}).method == "text"
