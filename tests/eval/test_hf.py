"""hf:PATH with a tiny random checkpoint saved by save_pretrained, in both modes."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from gmai_eval.adapters import load_model
from gmai_eval.cli import main
from gmai_eval.data import iter_items
from gmai_eval.prompt import vlmevalkit_prompt


def test_generate_mode_pipeline(tiny_ckpt: Path, tsv_factory, tmp_path: Path) -> None:
    data = tsv_factory(5)
    spec = f"hf:{tiny_ckpt}?mode=generate&batch=2&max_new_tokens=4"
    assert main(["--data", str(data), "--model", spec, "--out", str(tmp_path / "r")]) == 0
    recs = [json.loads(x) for x in
            (tmp_path / "r/tiny-llava/toy_VAL/predictions.jsonl").read_text().splitlines()]
    assert [r["index"] for r in recs] == [0, 1, 2, 3, 4]
    assert all(isinstance(r["reply"], str) for r in recs)
    assert all(r["method"] in {"letter", "text", "refusal", "failed"} for r in recs)
    assert (tmp_path / "r/tiny-llava/toy_VAL/scores.json").exists()


def test_generate_returns_text(tiny_ckpt: Path, tsv_factory) -> None:
    model = load_model(f"hf:{tiny_ckpt}", mode="generate", batch=3)
    items = list(iter_items(tsv_factory(3)))
    outs = model.predict(items, [vlmevalkit_prompt(i) for i in items])
    assert len(outs) == 3 and all(isinstance(o.reply, str) for o in outs)


def test_loglik_matches_independent_argmax(tiny_ckpt: Path, tsv_factory) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = load_model(f"hf:{tiny_ckpt}?mode=loglik&batch=4")
    assert model.name == "tiny-llava-loglik"
    items = list(iter_items(tsv_factory(6)))
    prompts = [vlmevalkit_prompt(i) for i in items]
    outs = model.predict(items[:4], prompts[:4])  # one left-padded batch of 4 ...
    outs += model.predict(items[4:], prompts[4:])

    # Independently: plain transformers, one item at a time, no padding, full logits.
    ref = AutoModelForImageTextToText.from_pretrained(tiny_ckpt).eval()
    proc = AutoProcessor.from_pretrained(tiny_ckpt)
    for item, prompt, out in zip(items, prompts, outs, strict=True):
        messages = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": prompt}]}]
        text = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert text.endswith("<|im_start|>assistant\n")
        inputs = proc(text=[text], images=[item.image()], return_tensors="pt")
        with torch.no_grad():
            logits = ref(**inputs).logits[0, -1]
        # The byte tokenizer spells "A" as one token and " A" as two.
        ids = {k: proc.tokenizer.convert_tokens_to_ids(k) for k in item.options}
        expected = max(ids, key=lambda k: float(logits[ids[k]]))
        assert out.letter == expected
        assert out.letter in item.options and out.method == "loglik"
        logp = logits.log_softmax(-1)
        for k, v in out.scores.items():
            assert abs(v - float(logp[ids[k]])) < 1e-3
