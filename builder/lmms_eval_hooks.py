"""The lmms-eval hooks of an exported task (``gmai-build export --format lmms-eval``).

Everything after the ``hooks`` marker is copied into the task's ``utils.py``, right after the
source of ``gmai_eval.extract`` (which defines ``extract``), so the task folder is
self-contained. The hooks follow lmms-eval's task API: ``doc_to_visual`` / ``doc_to_text`` build
VLMEvalKit's prompt, ``process_results`` scores one reply with VLMEvalKit's exact matching.
"""

from __future__ import annotations

from gmai_eval.extract import extract

__all__ = ["extract"]

# ---- hooks ----
import io as _io  # noqa: E402
import json as _json  # noqa: E402
import os as _os  # noqa: E402

OPTION_LETTERS = "ABCDE"


def _options(doc):
    return {k: str(doc[k]) for k in OPTION_LETTERS if doc.get(k) not in (None, "")}


def doc_to_visual(doc):
    """The question's image as an RGB PIL image (lmms-eval passes a list of visuals)."""
    from PIL import Image

    image = doc["image"]
    if isinstance(image, dict):  # undecoded datasets Image feature
        image = Image.open(_io.BytesIO(image["bytes"]))
    return [image.convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    """VLMEvalKit's multiple-choice prompt (ImageMCQDataset.build_prompt), image first."""
    options = _options(doc)
    prompt = ""
    if doc.get("hint") not in (None, ""):
        prompt += f"Hint: {doc['hint']}\n"
    prompt += f"Question: {doc['question']}\n"
    if options:
        prompt += "Options:\n" + "".join(f"{k}. {v}\n" for k, v in options.items())
        prompt += "Please select the correct answer from the options above. \n"
    return prompt


def process_results(doc, results):
    """1.0 when the letter extracted from the reply (VLMEvalKit's exact matching) is right."""
    letter = extract(str(results[0]), _options(doc)).letter
    return {"accuracy": float(letter == str(doc["answer"]).strip())}


def process_results_test(doc, results):
    """TEST has no answers here: keep the reply for ``gmai-eval score --answers KEY``."""
    return {"submission": {"index": doc["index"], "reply": str(results[0])}}


def write_replies(items):
    """Write the TEST replies as JSONL (``index``, ``reply``); return how many were written."""
    folder = _os.environ.get("GMAI_REPLIES_DIR", ".")
    task = _os.path.basename(_os.path.dirname(_os.path.abspath(__file__)))
    path = _os.path.join(folder, f"{task}_test_replies.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for item in items:
            f.write(_json.dumps(item, ensure_ascii=False) + "\n")
    return len(items)
