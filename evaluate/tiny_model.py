"""Build image-text-to-text models locally, from config dicts, with random weights and no downloads.

Why: the tests need a real checkpoint (weights + processor + chat template) that loads through
``hf:PATH`` exactly as a user's checkpoint would, and the throughput bench needs the same
architectures at real size (~2B parameters). Both come from here.

Families:
- ``llava``: LLaVA (CLIP vision tower + Qwen2 language model). Its processor needs only an image
  processor and a tokenizer, so it works without torchvision: the CPU tests use it.
- ``llava_onevision``: LLaVA-OneVision (SigLIP vision tower, anyres tiling with one 32x32 grid
  pinpoint, Qwen2 language model). Tiny size only. Its processor has a video part, built only
  with torchvision; without it, ``build_processor`` leaves it out (``no_video_processor``).
- ``internvl``: InternVL-hf (InternVL vision tower, pixel shuffle, Qwen2 language model; GotOcr2
  image processor, one tile per image). Tiny size only; video part as for LLaVA-OneVision.
- ``idefics3``: Idefics3 / SmolVLM (SigLIP-style vision tower, pixel shuffle, Llama language
  model), no image splitting. Tiny size only.
- ``gemma3``: Gemma 3 (SigLIP vision tower, pooled projector, Gemma 3 language model). Tiny size
  only.
- ``qwen2_vl``: Qwen2-VL. Its processor includes a video processor, which transformers 5.x only
  builds when torchvision is installed (typical on GPU machines, absent here). Without
  torchvision, ``build_processor`` builds it with no video processor (``no_video_processor``).
- ``qwen2_5_vl``: Qwen2.5-VL (windowed-attention vision tower), same processor setup. Tiny only.

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
# Family-specific special tokens (appended after SPECIAL_TOKENS, so shared ids do not move).
IDEFICS3_TOKENS = ["<fake_token_around_image>", "<global-img>", "<end_of_utterance>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
GEMMA3_TOKENS = ["<start_of_image>", "<image_soft_token>", "<end_of_image>"]
ONEVISION_TOKENS = ["<video>"]
INTERNVL_TOKENS = ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
EXTRA_TOKENS = {"idefics3": IDEFICS3_TOKENS, "gemma3": GEMMA3_TOKENS,
                "llava_onevision": ONEVISION_TOKENS, "internvl": INTERNVL_TOKENS}
# Processors that read their special tokens as tokenizer attributes (boi_token, ...).
NAMED_TOKENS = {
    "gemma3": {"boi_token": "<start_of_image>", "image_token": "<image_soft_token>",
               "eoi_token": "<end_of_image>"},
    "internvl": {"start_image_token": "<img>", "end_image_token": "</img>",
                 "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"},
}

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
    "llava_onevision": _CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", "<image>\n"),
    "idefics3": _CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", "<image>"),
    "gemma3": _CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", "<start_of_image>"),
    "internvl": _CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", "<IMG_CONTEXT>\n"),
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
# Tiny SigLIP-style towers: 32x32 images, 8x8 patches -> 16 patches.
# Idefics3: pixel shuffle with scale_factor 2 -> 16 / 2**2 = 4 image tokens.
# Gemma 3: average-pooled to mm_tokens_per_image = 4 image tokens.
SIGLIP_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=2, image_size=32, patch_size=8)
SIGLIP_IMAGE_TOKENS = 4
# LLaVA-OneVision: the same SigLIP tower ("full" features, no CLS: 4x4 = 16 per tile) and one
# grid pinpoint equal to the tile, so a 32x32 image is the base tile + one 32x32 crop:
# 16 (base) + 16 (crop) + 4 (image_newline per crop row) = 36 image tokens.
ONEVISION_PINPOINTS = [[32, 32]]
ONEVISION_IMAGE_TOKENS = 36
# InternVL: 32x32 images, 8x8 patches -> 16 patches, pixel shuffle (downsample_ratio 0.5) -> 4
# image tokens per tile; one tile (max_patches=1), framed by <img> ... </img>.
INTERNVL_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, image_size=[32, 32], patch_size=[8, 8])
INTERNVL_IMAGE_TOKENS = 4
QWEN25_VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                     out_hidden_size=64, fullatt_block_indexes=[1], window_size=56)
FAMILIES = ("llava", "llava_onevision", "internvl", "idefics3", "gemma3", "qwen2_vl",
            "qwen2_5_vl")


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
    named = NAMED_TOKENS.get(family, {})
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        **({"extra_special_tokens": named} if named else {}),
    )
    fast.add_special_tokens(
        {"additional_special_tokens": SPECIAL_TOKENS + EXTRA_TOKENS.get(family, [])})
    fast.chat_template = CHAT_TEMPLATES[_template_family(family)]
    fast.padding_side = "left"
    return fast


def build_processor(family: str = "llava", size: str = "tiny") -> Any:
    """The family's processor, from the local tokenizer and a PIL image processor."""
    tokenizer = build_tokenizer(family)
    template = CHAT_TEMPLATES[_template_family(family)]
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
    if family == "llava_onevision":
        from transformers import LlavaOnevisionImageProcessorPil, LlavaOnevisionProcessor

        _tiny_only(family, size)
        side = SIGLIP_VISION["image_size"]
        image_processor = LlavaOnevisionImageProcessorPil(
            size={"height": side, "width": side}, image_grid_pinpoints=ONEVISION_PINPOINTS)
        tiles = (side // SIGLIP_VISION["patch_size"]) ** 2
        return _maybe_no_video(LlavaOnevisionProcessor)(
            image_processor=image_processor, tokenizer=tokenizer, **_no_video_kwargs(),
            num_image_tokens=tiles, vision_feature_select_strategy="full",
            image_token="<image>", video_token="<video>", chat_template=template)
    if family == "internvl":
        from transformers import GotOcr2ImageProcessorPil, InternVLProcessor

        _tiny_only(family, size)
        side = INTERNVL_VISION["image_size"][0]
        image_processor = GotOcr2ImageProcessorPil(
            size={"height": side, "width": side}, crop_to_patches=False, min_patches=1,
            max_patches=1)
        return _maybe_no_video(InternVLProcessor)(
            image_processor=image_processor, tokenizer=tokenizer, **_no_video_kwargs(),
            image_seq_length=INTERNVL_IMAGE_TOKENS, chat_template=template)
    if family == "idefics3":
        from transformers import Idefics3ImageProcessorPil, Idefics3Processor

        _tiny_only(family, size)
        side = SIGLIP_VISION["image_size"]
        image_processor = Idefics3ImageProcessorPil(
            do_image_splitting=False, size={"longest_edge": side},
            max_image_size={"longest_edge": side},
        )
        return Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                 image_seq_len=SIGLIP_IMAGE_TOKENS, chat_template=template)
    if family == "gemma3":
        from transformers import Gemma3ImageProcessorPil, Gemma3Processor

        _tiny_only(family, size)
        side = SIGLIP_VISION["image_size"]
        image_processor = Gemma3ImageProcessorPil(
            size={"height": side, "width": side}, do_pan_and_scan=False)
        return Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer,
                               image_seq_length=SIGLIP_IMAGE_TOKENS, chat_template=template)
    if family not in ("qwen2_vl", "qwen2_5_vl"):
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessorPil, Qwen2VLProcessor

    if family == "qwen2_5_vl":
        _tiny_only(family, size)
    processor_cls = Qwen2VLProcessor if family == "qwen2_vl" else Qwen2_5_VLProcessor
    min_pixels, max_pixels = QWEN_PIXELS[size]
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels}
    )
    if not has_torchvision():
        # transformers 5.x builds Qwen2VLVideoProcessor only with torchvision, and rejects
        # video_processor=None; see hf_adapter.NoVideoProcessor.
        from .hf_adapter import no_video_processor

        return no_video_processor(processor_cls)(
            image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
            chat_template=template)
    from transformers import Qwen2VLVideoProcessor

    return processor_cls(image_processor=image_processor, tokenizer=tokenizer,
                         video_processor=Qwen2VLVideoProcessor(), chat_template=template)


def _maybe_no_video(cls: type) -> type:
    """``cls``, or without torchvision its video-less variant (see ``no_video_processor``)."""
    if has_torchvision():
        return cls
    from .hf_adapter import no_video_processor

    return no_video_processor(cls)


def _no_video_kwargs() -> dict[str, Any]:
    """``video_processor=None`` without torchvision: the processor then builds none."""
    return {} if has_torchvision() else {"video_processor": None}


def _template_family(family: str) -> str:
    return "qwen2_vl" if family == "qwen2_5_vl" else family


def _tiny_only(family: str, size: str) -> None:
    if size != "tiny":
        raise ValueError(f"family {family!r} is only built at size 'tiny', not {size!r}")


def build_config(family: str = "llava", size: str = "tiny", tokenizer: Any | None = None) -> Any:
    """A model config of the family and size whose special-token ids match ``build_tokenizer``."""
    tokenizer = tokenizer or build_tokenizer(family)
    ids = {t: tokenizer.convert_tokens_to_ids(t)
           for t in SPECIAL_TOKENS + EXTRA_TOKENS.get(family, [])}
    sizes = dict(TEXT_SIZES[size])
    if family in EXTRA_TOKENS:  # newer families: no unused ids, so every generated id decodes
        sizes["vocab_size"] = len(tokenizer)
    text = dict(sizes, bos_token_id=ids["<|endoftext|>"],
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
    if family == "llava_onevision":
        from transformers import LlavaOnevisionConfig

        _tiny_only(family, size)
        return LlavaOnevisionConfig(
            text_config=dict(text, model_type="qwen2", tie_word_embeddings=False),
            vision_config=dict(SIGLIP_VISION, model_type="siglip_vision_model"),
            image_token_index=ids["<image>"], video_token_index=ids["<video>"],
            vision_feature_select_strategy="full", vision_feature_layer=-1,
            image_grid_pinpoints=ONEVISION_PINPOINTS, vision_aspect_ratio="anyres_max_9",
            tie_word_embeddings=False,
        )
    if family == "internvl":
        from transformers import InternVLConfig

        _tiny_only(family, size)
        return InternVLConfig(
            text_config=dict(text, model_type="qwen2", tie_word_embeddings=False),
            vision_config=dict(INTERNVL_VISION), image_token_id=ids["<IMG_CONTEXT>"],
            image_seq_length=INTERNVL_IMAGE_TOKENS, downsample_ratio=0.5,
            vision_feature_layer=-1, vision_feature_select_strategy="default",
            tie_word_embeddings=False,
        )
    if family == "idefics3":
        from transformers import Idefics3Config

        _tiny_only(family, size)
        return Idefics3Config(
            text_config=dict(text, model_type="llama", tie_word_embeddings=False),
            vision_config=dict(SIGLIP_VISION), scale_factor=2,
            image_token_id=ids["<image>"], tie_word_embeddings=False,
        )
    if family == "gemma3":
        from transformers import Gemma3Config

        _tiny_only(family, size)
        return Gemma3Config(
            text_config=dict(text, model_type="gemma3_text", head_dim=16, sliding_window=16,
                             query_pre_attn_scalar=16),
            vision_config=dict(SIGLIP_VISION, model_type="siglip_vision_model"),
            mm_tokens_per_image=SIGLIP_IMAGE_TOKENS,
            boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
            image_token_index=ids["<image_soft_token>"],
        )
    if family not in ("qwen2_vl", "qwen2_5_vl"):
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0,
                               "mrope_section": MROPE[size]}
    if family == "qwen2_5_vl":
        _tiny_only(family, size)
        config_cls, vision = Qwen2_5_VLConfig, QWEN25_VISION
    else:
        config_cls, vision = Qwen2VLConfig, QWEN_VISION[size]
    return config_cls(
        text_config=text,
        vision_config=dict(vision, patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
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
