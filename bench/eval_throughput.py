"""Questions per second of gmai-eval's hf adapter: generate vs loglik, batch 1 vs batched.

The model is a realistic architecture at real size with random weights, built locally from a
config dict (no downloads) by ``gmai_eval.tiny_model``: Qwen2-VL-2B-class when torchvision is
installed (transformers 5.x needs it for Qwen2-VL's processor), else LLaVA-class (CLIP-L/336 +
Qwen2-1.5B, ~1.9B parameters); ``--family`` forces one. The tokenizer is a local byte-level BPE
with a ChatML chat template. Images are 512x512 random PNGs; questions have 4 options.

Configurations, all on the same items, measured in one run:
- ``vlmevalkit-loop``: the baseline, a VLMEvalKit-style loop: one item at a time, chat template
  + processor + ``generate`` + decode (what VLMEvalKit's HF wrappers do);
- ``generate b1`` / ``generate bN``: gmai-eval's adapter, greedy generation, batch 1 / N;
- ``loglik b1`` / ``loglik bN``: one forward pass, option letter by next-token probability.
EOS is disabled, so every generated reply is exactly ``--max-new-tokens`` long (random weights
would otherwise stop at random points): this is the worst case for generate.

GPU (lead engineer; ~5 minutes on one H100, bf16):
    python bench/eval_throughput.py --device cuda --n 64 --batch 16 --max-new-tokens 32
CPU smoke run (seconds):
    python bench/eval_throughput.py --tiny --device cpu
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from gmai_eval.adapters import Output
from gmai_eval.data import Item
from gmai_eval.hf_adapter import HFModel
from gmai_eval.prompt import vlmevalkit_prompt
from gmai_eval.tiny_model import build_model, default_family


def make_items(n: int, side: int) -> list[Item]:
    """n questions with distinct random PNG images (4 options each)."""
    import base64

    import cv2
    import numpy as np

    items = []
    for i in range(n):
        img = np.random.default_rng(i).integers(0, 255, (side, side, 3), dtype=np.uint8)
        ok, buf = cv2.imencode(".png", img)
        assert ok
        items.append(Item(
            index=i, ordinal=i,
            question=f"This is a CT image. Which organ is marked in the image? (case {i})",
            options={"A": "liver", "B": "kidney", "C": "spleen", "D": "pancreas"},
            answer="ABCD"[i % 4], image_b64=base64.b64encode(buf.tobytes()).decode()))
    return items


def vlmevalkit_loop(model: Any, processor: Any, items: list[Item], max_new_tokens: int,
                    device: str) -> list[Output]:
    """Baseline: VLMEvalKit-style batch-1 generation, one item after another."""
    import torch

    outs = []
    for item in items:
        messages = [{"role": "user", "content": [
            {"type": "image"}, {"type": "text", "text": vlmevalkit_prompt(item)}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True,
                                             tokenize=False)
        inputs = processor(text=[text], images=[item.image()], return_tensors="pt").to(device)
        inputs = {k: (v.to(model.dtype) if v.is_floating_point() else v)
                  for k, v in inputs.items()}
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        reply = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:],
                                       skip_special_tokens=True)[0]
        outs.append(Output(reply=reply))
    return outs


def timed(fn: Callable[[], Any], device: str) -> float:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t


def run_adapter(adapter: HFModel, items: list[Item]) -> None:
    prompts = [vlmevalkit_prompt(i) for i in items]
    for s in range(0, len(items), adapter.batch_size):
        adapter.predict(items[s:s + adapter.batch_size], prompts[s:s + adapter.batch_size])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny dims: quick CPU smoke run")
    p.add_argument("--family", choices=["llava", "qwen2_vl"], default=None)
    p.add_argument("--n", type=int, default=None, help="questions per configuration")
    p.add_argument("--batch", type=int, default=None, help="batch size of the batched runs")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--image-side", type=int, default=512)
    args = p.parse_args()

    import torch

    family = args.family or default_family()
    size = "tiny" if args.tiny else "2b"
    n = args.n or (16 if args.tiny else 64)
    batch = args.batch or (4 if args.tiny else 16)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    t = time.perf_counter()
    try:
        model, processor = build_model(family, size, dtype=dtype, device=args.device)
    except Exception as err:  # noqa: BLE001 - e.g. Qwen2-VL's processor without torchvision
        if family == "llava":
            raise
        print(f"could not build {family} ({type(err).__name__}: {err}); using llava instead")
        family = "llava"
        model, processor = build_model(family, size, dtype=dtype, device=args.device)
    model.generation_config.eos_token_id = None  # fixed-length replies (see docstring)
    params = sum(p.numel() for p in model.parameters()) / 1e9
    print(f"{family} ({size}), {params:.2f}B parameters, {dtype}, {args.device}; built in "
          f"{time.perf_counter() - t:.1f} s; {n} questions, max_new_tokens "
          f"{args.max_new_tokens}, batch {batch}", flush=True)
    items = make_items(n, args.image_side)
    warm = items[: max(2, batch)]

    configs: dict[str, Callable[[list[Item]], Any]] = {
        "vlmevalkit-loop (baseline)": lambda its: vlmevalkit_loop(
            model, processor, its, args.max_new_tokens, args.device),
    }
    for mode in ("generate", "loglik"):
        for b in (1, batch):
            adapter = HFModel("", mode=mode, batch_size=b, max_new_tokens=args.max_new_tokens,
                              device=args.device, model=model, processor=processor)
            configs[f"{mode} b{b}"] = lambda its, a=adapter: run_adapter(a, its)

    rates: dict[str, float] = {}
    for name, fn in configs.items():
        fn(warm)  # warm-up (kernels, allocator)
        seconds = timed(lambda f=fn: f(items), args.device)
        rates[name] = n / seconds
        print(f"{name:28s} {rates[name]:8.2f} questions/s ({seconds:.2f} s)", flush=True)
    base = rates["vlmevalkit-loop (baseline)"]
    print("\nratios vs the VLMEvalKit-style batch-1 generate loop:")
    for name, rate in rates.items():
        print(f"  {name:28s} {rate / base:6.2f}x")
    if args.device == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
