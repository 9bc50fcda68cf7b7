"""Build the text prompt for one item (the image is passed separately, before the text).

The default reproduces VLMEvalKit's ``ImageMCQDataset.build_prompt`` byte for byte, so scores
are comparable with the published ones. A user template (``--prompt-template FILE``) is a
Python format string with the fields ``{question}``, ``{options}`` and ``{hint}``.
"""

from __future__ import annotations

from pathlib import Path

from .data import Item

VLMEVALKIT_SUFFIX = "Please select the correct answer from the options above. \n"


def format_options(options: dict[str, str]) -> str:
    """``A. text\\nB. text\\n`` for the non-empty options, in letter order."""
    return "".join(f"{k}. {v}\n" for k, v in options.items())


def vlmevalkit_prompt(item: Item) -> str:
    """VLMEvalKit's MCQ prompt: optional Hint line, Question, Options, instruction."""
    prompt = ""
    if item.hint is not None:
        prompt += f"Hint: {item.hint}\n"
    prompt += f"Question: {item.question}\n"
    if item.options:
        prompt += "Options:\n" + format_options(item.options) + VLMEVALKIT_SUFFIX
    return prompt


class PromptBuilder:
    """Turns items into prompts, either VLMEvalKit's or a user's format template."""

    def __init__(self, template: str | None = None) -> None:
        self.template = template
        if template is not None:
            # Fail early on unknown fields rather than on the first item.
            template.format(question="", options="", hint="")

    @classmethod
    def from_file(cls, path: str | Path | None) -> PromptBuilder:
        """A builder using the template in ``path`` (``None``: VLMEvalKit's prompt)."""
        if path is None:
            return cls()
        return cls(Path(path).read_text(encoding="utf-8"))

    def fingerprint(self) -> str:
        """``vlmevalkit`` for the default prompt, else the template's SHA-256 (for run.json)."""
        if self.template is None:
            return "vlmevalkit"
        import hashlib

        return "template:" + hashlib.sha256(self.template.encode("utf-8")).hexdigest()[:16]

    def __call__(self, item: Item) -> str:
        if self.template is None:
            return vlmevalkit_prompt(item)
        return self.template.format(
            question=item.question, options=format_options(item.options), hint=item.hint or ""
        )
