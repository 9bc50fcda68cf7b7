"""Build image-text-to-text models locally, from config dicts, with random weights and no downloads.

Why: the tests need a real checkpoint (weights + processor + chat template) that loads through
``hf:PATH`` exactly as a user's checkpoint would, and the throughput bench needs the same
architectures at real size (~2B parameters). Both come from here.

Two families:
- ``llava``: LLaVA (CLIP vision tower + Qwen2 language model). Its processor needs only an image
  processor and a tokenizer, so it works without torchvision: the CPU tests use it.
- ``qwen2_vl``: Qwen2-VL. Its processor includes a video processor, which transformers 5.x only
  builds when torchvision is installed (typical on GPU machines, absent here).

The tokenizer is a byte-level BPE with no merges (one token per byte) plus ChatML special
tokens, wrapped in ``PreTrainedTokenizerFast``; it encodes any text, and every option letter
is a single token.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<image>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# ChatML template; the image placeholder depends on the family.
_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}IMAGE_PLACEHOLDER"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT_TEMPLATES = {
    "llava": _CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", "<image>\n"),
    "qwen2_vl": _CHAT_TEMPLATE.replace(
        "IMAGE_PLACEHOLDER", "<|vision_start|><|image_pad|><|vision_end|>"
    ),
}

# "tiny" for CPU tests; "2b" mirrors published ~2B models (Qwen2-VL-2B; LLaVA = CLIP-L/336 +
# Qwen2-1.5B, the LLaVA-OneVision-0.5B/Qwen2 recipe scaled to 1.5B).
TEXT_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=512),
    "2b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
               num_attention_heads=12, num_key_value_heads=2, vocab_size=151936),
}
MROPE = {"tiny": [2, 3, 3], "2b": [16, 24, 24]}
QWEN_VISION = {
    "tiny": dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2),
    "2b": dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4),
}
CLIP_VISION = {
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=2, image_size=56, patch_size=14, projection_dim=32),
    "2b": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
               num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768),
}
QWEN_PIXELS = {"tiny": (56 * 56, 112 * 112), "2b": (448 * 448, 448 * 448)}


def has_torchvision() -> bool:
    """True when torchvision is importable (needed by transformers 5.x's Qwen2-VL processor)."""
    return importlib.util.find_spec("torchvision") is not None


def default_family() -> str:
    """Qwen2-VL when its processor can be built here, else LLaVA."""
    return "qwen2_vl" if has_torchvision() else "llava"


def build_tokenizer(family: str = "llava") -> Any:
    """A byte-level BPE tokenizer (no merges) with ChatML special tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    fast.chat_template = CHAT_TEMPLATES[family]
    fast.padding_side = "left"
    return fast


def build_processor(family: str = "llava", size: str = "tiny") -> Any:
    """The family's processor, from the local tokenizer and a PIL image processor."""
    tokenizer = build_tokenizer(family)
    template = CHAT_TEMPLATES[family]
    if family == "llava":
        from transformers import CLIPImageProcessorPil, LlavaProcessor

        side = CLIP_VISION[size]["image_size"]
        image_processor = CLIPImageProcessorPil(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}
        )
        return LlavaProcessor(
            image_processor=image_processor, tokenizer=tokenizer, chat_template=template,
            patch_size=CLIP_VISION[size]["patch_size"], vision_feature_select_strategy="default",
            image_token="<image>", num_additional_image_tokens=1,
        )
    from transformers import Qwen2VLImageProcessorPil, Qwen2VLProcessor, Qwen2VLVideoProcessor

    min_pixels, max_pixels = QWEN_PIXELS[size]
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels}
    )
    # The processor type-checks every component, so the (unused) video processor must exist;
    # transformers 5.x builds it only with torchvision installed.
    return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                            video_processor=Qwen2VLVideoProcessor(), chat_template=template)


def build_config(family: str = "llava", size: str = "tiny", tokenizer: Any | None = None) -> Any:
    """A model config of the family and size whose special-token ids match ``build_tokenizer``."""
    tokenizer = tokenizer or build_tokenizer(family)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(TEXT_SIZES[size], bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                max_position_embeddings=32768)
    if family == "llava":
        from transformers import LlavaConfig

        return LlavaConfig(
            text_config=dict(text, model_type="qwen2", tie_word_embeddings=False),
            vision_config=dict(CLIP_VISION[size], model_type="clip_vision_model"),
            image_token_id=ids["<image>"], vision_feature_select_strategy="default",
            vision_feature_layer=-2, projector_hidden_act="gelu", tie_word_embeddings=False,
        )
    from transformers import Qwen2VLConfig

    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0,
                               "mrope_section": MROPE[size]}
    return Qwen2VLConfig(
        text_config=text,
        vision_config=dict(QWEN_VISION[size], patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False,
    )


def build_model(family: str = "llava", size: str = "tiny", seed: int = 0,
                dtype: Any = None, device: str | None = None) -> tuple[Any, Any]:
    """Return ``(model, processor)`` with random weights for the given family and size."""
    import torch
    from transformers import AutoModelForImageTextToText

    processor = build_processor(family, size)
    config = build_config(family, size, processor.tokenizer)
    torch.manual_seed(seed)
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = AutoModelForImageTextToText.from_config(config, **kwargs)
    if device is not None:
        model = model.to(device)
    gen = model.generation_config
    gen.pad_token_id = processor.tokenizer.pad_token_id
    gen.eos_token_id = processor.tokenizer.eos_token_id
    return model.eval(), processor


def save_tiny_checkpoint(path: str | Path, family: str = "llava", seed: int = 0) -> Path:
    """Save a tiny random model + processor with ``save_pretrained``; return the directory."""
    path = Path(path)
    model, processor = build_model(family, "tiny", seed=seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
