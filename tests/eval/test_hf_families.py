"""hf:PATH across model families: tiny random LLaVA-OneVision, InternVL-hf, Idefics3, Gemma 3,
Qwen2-VL, Qwen2.5-VL.

Each is built locally from a config (no downloads), saved with save_pretrained and loaded
through ``hf:PATH`` exactly as a user's checkpoint. Per family: generate returns text, the
prompt carries the family's image tokens, and loglik's letter equals an independent argmax
computed with the plain transformers model, one unpadded item at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from gmai_eval.adapters import load_model
from gmai_eval.data import iter_items
from gmai_eval.prompt import vlmevalkit_prompt
from gmai_eval.tiny_model import has_torchvision

# family -> (image placeholder token in input_ids, its count per image in the tiny models)
IMAGE_TOKENS = {
    "llava_onevision": ("<image>", 36),  # base tile + one crop + a newline per crop row
    "internvl": ("<IMG_CONTEXT>", 4),  # framed by <img> ... </img>
    "idefics3": ("<image>", 4),
    "gemma3": ("<image_soft_token>", 4),
    "qwen2_vl": ("<|image_pad|>", 4),
    "qwen2_5_vl": ("<|image_pad|>", 4),
}
FAMILIES = list(IMAGE_TOKENS)
# family -> tokens that frame each image once
FRAME_TOKENS = {"internvl": ("<img>", "</img>")}


@pytest.fixture(scope="module", params=FAMILIES)
def family_ckpt(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    from gmai_eval.tiny_model import save_tiny_checkpoint

    family = request.param
    path = tmp_path_factory.mktemp("ckpt") / f"tiny-{family.replace('_', '-')}"
    return family, save_tiny_checkpoint(path, family)


def reference_processor(path: Path) -> Any:
    """The checkpoint's processor, loaded without the adapter's loading code path."""
    from transformers import AutoProcessor

    if has_torchvision():
        return AutoProcessor.from_pretrained(path)
    # Without torchvision, AutoProcessor cannot build processors with a video part (Qwen2-VL,
    # Qwen2.5-VL, LLaVA-OneVision, InternVL).
    try:
        return AutoProcessor.from_pretrained(path)
    except (ImportError, OSError):
        import json

        import transformers
        from gmai_eval.hf_adapter import no_video_processor

        name = json.loads((path / "processor_config.json").read_text())["processor_class"]
        return no_video_processor(getattr(transformers, name)).from_pretrained(path)


def test_generate_returns_text(family_ckpt: tuple[str, Path], tsv_factory) -> None:
    family, path = family_ckpt
    model = load_model(f"hf:{path}?mode=generate&batch=3&max_new_tokens=4")
    items = list(iter_items(tsv_factory(3)))
    prompts = [vlmevalkit_prompt(i) for i in items]

    inputs = model.encode(items, prompts)
    assert model.tokenizer.padding_side == "left"
    token, per_image = IMAGE_TOKENS[family]
    token_id = model.tokenizer.convert_tokens_to_ids(token)
    assert (inputs["input_ids"] == token_id).sum(dim=1).tolist() == [per_image] * 3
    for frame in FRAME_TOKENS.get(family, ()):
        frame_id = model.tokenizer.convert_tokens_to_ids(frame)
        assert (inputs["input_ids"] == frame_id).sum(dim=1).tolist() == [1] * 3, frame
    # Left padding: every row ends with the same assistant-turn start.
    assert (inputs["attention_mask"][:, -1] == 1).all()

    outs = model.predict(items, prompts)
    assert len(outs) == 3 and all(isinstance(o.reply, str) for o in outs)
    assert any(o.reply for o in outs)  # random weights, but real decoded tokens


def test_loglik_matches_independent_argmax(family_ckpt: tuple[str, Path], tsv_factory) -> None:
    from transformers import AutoModelForImageTextToText

    family, path = family_ckpt
    model = load_model(f"hf:{path}?mode=loglik&batch=3")
    assert model.name == f"{path.name}-loglik"
    items = list(iter_items(tsv_factory(5)))
    prompts = [vlmevalkit_prompt(i) for i in items]
    outs = model.predict(items[:3], prompts[:3])  # one left-padded batch of 3 ...
    outs += model.predict(items[3:], prompts[3:])

    # Independently: plain transformers, one item at a time, no padding, full logits.
    ref = AutoModelForImageTextToText.from_pretrained(path).eval()
    proc = reference_processor(path)
    for item, prompt, out in zip(items, prompts, outs, strict=True):
        messages = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": prompt}]}]
        text = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert text.endswith("<|im_start|>assistant\n")
        inputs = proc(text=[text], images=[[item.image()]], return_tensors="pt")
        with torch.no_grad():
            logits = ref(**inputs).logits[0, -1]
        # The byte tokenizer spells "A" as one token and " A" as two.
        ids = {k: proc.tokenizer.convert_tokens_to_ids(k) for k in item.options}
        expected = max(ids, key=lambda k: float(logits[ids[k]]))
        assert out.letter == expected, family
        assert out.method == "loglik"
        logp = logits.log_softmax(-1)
        for k, v in out.scores.items():
            assert abs(v - float(logp[ids[k]])) < 1e-3, (family, k)


def assert_batch_invariant(path: Path, tsv_factory, label: str) -> None:
    """Letters (loglik), scores and greedy replies (generate) at batch 1 equal those at batch 8.

    The 8 prompts differ in length (2-5 options), so batch 8 is left-padded. Measured on all
    seven tiny families: identical letters and replies, loglik scores within 4.8e-7. The same
    check with right padding fails (score differences 0.19-0.30 and different replies).
    """
    items = list(iter_items(tsv_factory(8)))
    prompts = [vlmevalkit_prompt(i) for i in items]
    for mode in ("loglik", "generate"):
        outs = {}
        for batch in (1, 8):
            model = load_model(f"hf:{path}?mode={mode}&batch={batch}&max_new_tokens=8")
            outs[batch] = [o for s in range(0, 8, batch)
                           for o in model.predict(items[s:s + batch], prompts[s:s + batch])]
        one, eight = outs[1], outs[8]
        if mode == "loglik":
            assert [o.letter for o in one] == [o.letter for o in eight], label
            for a, b in zip(one, eight, strict=True):
                assert a.scores == pytest.approx(b.scores, abs=1e-4), label
        else:
            assert [o.reply for o in one] == [o.reply for o in eight], label


def test_batch_invariance(family_ckpt: tuple[str, Path], tsv_factory) -> None:
    family, path = family_ckpt
    assert_batch_invariant(path, tsv_factory, family)


def test_batch_invariance_llava(tiny_ckpt: Path, tsv_factory) -> None:
    assert_batch_invariant(tiny_ckpt, tsv_factory, "llava")
