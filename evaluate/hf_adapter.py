"""``hf:PATH``: local Hugging Face image-text-to-text checkpoints through transformers' auto classes.

Any family that ``AutoModelForImageTextToText`` + ``AutoProcessor`` load and whose chat template
accepts ``{"type": "image"}`` content works (Qwen2/2.5-VL, LLaVA/LLaVA-OneVision, InternVL-hf,
Idefics3/SmolVLM, Gemma 3). Batches are left-padded. Without torchvision, processors with a video
part (Qwen2/2.5-VL, ...) are loaded without it (``no_video_processor``); images need none.

Modes:
- ``generate``: greedy decoding of up to ``max_new_tokens``; the text is extracted afterwards.
- ``loglik``: one forward pass over prompt + assistant-turn start; the answer is the option
  letter whose token has the highest next-token log-probability (no generation). A letter's
  score is the max over its single-token spellings ``"A"`` and ``" A"``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from .adapters import Output, safe_name
from .data import Item

DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
          "fp32": "float32", "float32": "float32"}


def pick_device(device: str | None = None) -> str:
    """``cuda:LOCAL_RANK`` under torchrun, ``cuda`` when available, else ``cpu``."""
    import torch

    if device:
        return device
    if torch.cuda.is_available():
        local = os.environ.get("LOCAL_RANK")
        return f"cuda:{local}" if local is not None else "cuda"
    return "cpu"


class HFModel:
    """A transformers checkpoint answering in ``generate`` or ``loglik`` mode."""

    def __init__(self, path: str, mode: str = "generate", batch_size: int = 8,
                 max_new_tokens: int = 64, dtype: str | None = None, device: str | None = None,
                 model: Any = None, processor: Any = None) -> None:
        import torch

        if mode not in ("generate", "loglik"):
            raise ValueError(f"mode must be 'generate' or 'loglik', not {mode!r}")
        self.mode = mode
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.device = pick_device(device)
        on_gpu = self.device.startswith("cuda")
        self.dtype = getattr(torch, DTYPES[dtype]) if dtype else (
            torch.bfloat16 if on_gpu else torch.float32)
        base = safe_name(Path(str(path).rstrip("/")).name) if path else "hf-model"
        self.name = base if mode == "generate" else f"{base}-loglik"
        self.model = model if model is not None else self._load_model(path, on_gpu)
        self.processor = processor if processor is not None else self._load_processor(path)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._letter_ids: dict[str, list[int]] = {}

    def _load_model(self, path: str, on_gpu: bool) -> Any:
        from transformers import AutoModelForImageTextToText

        kwargs: dict[str, Any] = {"dtype": self.dtype}
        world = int(os.environ.get("WORLD_SIZE", "1"))
        has_accelerate = importlib.util.find_spec("accelerate") is not None
        if on_gpu and has_accelerate:
            # Data parallel: one full replica per rank; single process: shard over all GPUs.
            kwargs["device_map"] = {"": self.device} if world > 1 else "auto"
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
        if "device_map" not in kwargs:
            model = model.to(self.device)
        return model.eval()

    def _load_processor(self, path: str) -> Any:
        from transformers import AutoProcessor

        try:
            return AutoProcessor.from_pretrained(path)
        except (ImportError, OSError):
            # Families whose processor has a video part (Qwen2/2.5-VL, LLaVA-OneVision, ...) need
            # torchvision for it; images-only evaluation can do without (see no_video_processor).
            # (A checkpoint saved without torchvision has no video config: OSError.)
            if importlib.util.find_spec("torchvision") is not None:
                raise
            import transformers

            name = processor_class_name(path)
            cls = getattr(transformers, name, None) if name else None
            if cls is None or not any(_is_video(a) for a in cls.get_attributes()):
                raise
            return no_video_processor(cls).from_pretrained(path)

    # -- inputs -------------------------------------------------------------------------------
    def encode(self, items: list[Item], prompts: list[str]) -> Any:
        """Chat-template the prompts (image first, then text) and run the processor."""
        texts = []
        for prompt in prompts:
            messages = [{"role": "user", "content": [
                {"type": "image"}, {"type": "text", "text": prompt}]}]
            texts.append(self.processor.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False))
        images = [[item.image()] for item in items]
        inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt")
        inputs = inputs.to(self._input_device())
        for key, value in inputs.items():
            if hasattr(value, "is_floating_point") and value.is_floating_point():
                inputs[key] = value.to(self.dtype)
        return inputs

    def _input_device(self) -> Any:
        try:
            return self.model.get_input_embeddings().weight.device
        except AttributeError:  # pragma: no cover - unusual models
            return self.device

    def letter_token_ids(self, letter: str) -> list[int]:
        """Token ids that spell ``letter`` as one token (``"A"`` and/or ``" A"``)."""
        if letter not in self._letter_ids:
            ids = []
            for text in (letter, " " + letter):
                toks = self.tokenizer.encode(text, add_special_tokens=False)
                if len(toks) == 1 and toks[0] not in ids:
                    ids.append(toks[0])
            if not ids:
                raise ValueError(f"no single-token spelling of option letter {letter!r}")
            self._letter_ids[letter] = ids
        return self._letter_ids[letter]

    # -- prediction ---------------------------------------------------------------------------
    def predict(self, items: list[Item], prompts: list[str]) -> list[Output]:
        """One forward pass (loglik) or one batched ``generate`` call for the whole batch."""
        import torch

        inputs = self.encode(items, prompts)
        with torch.inference_mode():
            if self.mode == "loglik":
                return self._loglik(items, inputs)
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                      do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:]
        replies = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [Output(reply=r.strip()) for r in replies]

    def next_token_logprobs(self, inputs: Any) -> Any:
        """Log-softmax of the logits at the last position (left padding: same for all rows)."""
        try:
            out = self.model(**inputs, logits_to_keep=1)
        except TypeError:  # models without logits_to_keep
            out = self.model(**inputs)
        return out.logits[:, -1, :].float().log_softmax(dim=-1)

    def _loglik(self, items: list[Item], inputs: Any) -> list[Output]:
        logprobs = self.next_token_logprobs(inputs).cpu()
        outs = []
        for row, item in zip(logprobs, items, strict=True):
            scores = {
                letter: max(float(row[i]) for i in self.letter_token_ids(letter))
                for letter in item.options
            }
            best = max(scores, key=lambda k: scores[k]) if scores else "Z"
            outs.append(Output(letter=best, method="loglik", scores=scores))
        return outs



def _is_video(attribute_name: str) -> bool:
    return "video" in attribute_name


def no_video_processor(cls: type) -> type:
    """``cls`` (a processor class) without its video processor, for use without torchvision.

    In transformers 5.x the video processors (``Qwen2VLVideoProcessor``, ...) require
    torchvision, and a processor cannot be built with ``video_processor=None`` either: every
    component, ``None`` included, is type-checked, and that check fails without torchvision
    (``AttributeError: type object 'VIDEO_PROCESSOR_MAPPING' has no attribute '_extra_content'``);
    ``save_pretrained`` then fails on the ``None`` too. Images-only use needs no video processor,
    so this subclass drops the video components from the processor's attributes. Its
    ``__name__`` is the original's, so ``save_pretrained`` records the original
    ``processor_class``.
    """

    class NoVideoProcessor(cls):  # type: ignore[misc, valid-type]
        @classmethod
        def get_attributes(klass) -> list[str]:
            return [a for a in super().get_attributes() if not _is_video(a)]

        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument is None and _is_video(argument_name):
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    NoVideoProcessor.__name__ = cls.__name__
    NoVideoProcessor.__qualname__ = cls.__qualname__
    return NoVideoProcessor


def processor_class_name(path: str) -> str | None:
    """The checkpoint's processor class: ``processor_class`` of its configs, else by model type."""
    import json

    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        file = Path(path) / name
        if file.is_file():
            found = json.loads(file.read_text(encoding="utf-8")).get("processor_class")
            if found:
                return str(found)
    from transformers import AutoConfig
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    return PROCESSOR_MAPPING_NAMES.get(AutoConfig.from_pretrained(path).model_type)
