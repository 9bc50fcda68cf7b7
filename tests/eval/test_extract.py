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
    assert "Options: A. liver B. kidney" in calls[0] and "Which organ?" in calls[0]


def test_judge_failures_give_z() -> None:
    replies = iter(["Failed to obtain answer via API.", "I don't know", "hmm"])
    got = extract("something odd", dict(CHOICES), judge=lambda p: next(replies))
    assert (got.letter, got.method) == ("Z", "failed")


def test_judge_prompt_format() -> None:
    text = judge_prompt("Q", {"A": "x", "B": "y"}, "reply")
    assert text.endswith("Question: Q?\nOptions: A. x B. y\nAnswer: reply\nYour output: ")
