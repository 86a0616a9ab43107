"""Loading as a user does: a checkpoint directory written like a hub download, then `--model DIR`.

The tiny random Qwen2.5-VL (and Qwen3-VL) is saved with the files a hub repository holds (config.json with model_type
qwen2_5_vl, safetensors weights, tokenizer files with the Qwen special tokens, preprocessor_config.json
with the Qwen2-VL image-processor settings, the chat template) and loaded back through
`load_model(DIR)` (what `--model DIR` calls), which must pick the Qwen adapter and reproduce the same prompts, positions
and logits. SmolVLM and LLaVA-OneVision directories are covered in tests/test_models.py.
"""

import json

import numpy as np
import pytest
import torch

from streamer.frames import Chunk
from streamer.kv_window import KVWindowCache, WindowConfig
from streamer.models.qwen_vl import Qwen3VLAdapter, QwenVLAdapter
from streamer.models.registry import load_model
from streamer.models.tiny_random import build_tiny_random_qwen, build_tiny_random_qwen3
from streamer.sources import Frame
from streamer.vocab import Conversation


def _chunk() -> Chunk:
    rng = np.random.default_rng(3)
    return Chunk(tuple(Frame(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), float(i)) for i in range(4)), 0)


@pytest.mark.parametrize("build, model_type", [(build_tiny_random_qwen, "qwen2_5_vl"), (build_tiny_random_qwen3, "qwen3_vl")])
def test_a_qwen_vl_directory_loads_like_a_downloaded_checkpoint(tmp_path, build, model_type):
    original = build()
    original.model.save_pretrained(tmp_path)
    original.tokenizer.save_pretrained(tmp_path)
    original.image_processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == model_type and config["video_token_id"] == original.image_token_id
    pre = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert pre["image_processor_type"].startswith("Qwen2VLImageProcessor") and pre["temporal_patch_size"] == 2

    loaded = load_model(str(tmp_path))
    assert type(loaded) is type(original) and not loaded.is_random and loaded.name == str(tmp_path)
    assert (loaded.min_pixels, loaded.max_pixels) == (original.min_pixels, original.max_pixels)
    p_orig = original.chunk_prompt(_chunk(), Conversation())
    p_new = loaded.chunk_prompt(_chunk(), Conversation())
    assert torch.equal(p_orig.input_ids, p_new.input_ids)
    assert torch.equal(p_orig.mrope.position_ids, p_new.mrope.position_ids)
    assert torch.equal(p_orig.inputs["pixel_values_videos"], p_new.inputs["pixel_values_videos"])
    logits = []
    for adapter, prompt in ((original, p_orig), (loaded, p_new)):
        cache = KVWindowCache(adapter.model.config, WindowConfig(budget=128))
        with torch.no_grad():
            pos = cache.tag(prompt.modality, prompt.times, prompt.mrope)
            logits.append(adapter.model(**prompt.inputs, position_ids=pos, past_key_values=cache).logits)
    torch.testing.assert_close(logits[1], logits[0])


def test_qwen_hub_ids_resolve_to_the_qwen_adapter():
    from streamer.models.registry import FAMILIES, _HUB_ID

    assert _HUB_ID.match("Qwen/Qwen2.5-VL-3B-Instruct")
    assert FAMILIES["qwen2_5_vl"] is QwenVLAdapter and FAMILIES["qwen3_vl"] is Qwen3VLAdapter
