"""Loading as a user does: a checkpoint directory written like a hub download, then `--model DIR`.

The tiny random Qwen2.5-VL (and Qwen3-VL) is saved with the files a hub repository holds (config.json with model_type
qwen2_5_vl, safetensors weights, tokenizer files with the Qwen special tokens, preprocessor_config.json
with the Qwen2-VL image-processor settings, the chat template) and loaded back through
`load_model(DIR)` (what `--model DIR` calls), which must pick the Qwen adapter and reproduce the same prompts, positions
and logits. SmolVLM and LLaVA-OneVision directories are covered in tests/test_models.py.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from streamer.frames import Chunk
from streamer.kv_window import KVWindowCache, WindowConfig
from streamer.models.qwen_vl import Qwen3VLAdapter, QwenVLAdapter
from streamer.models.registry import load_model
from streamer.models.tiny_random import build_tiny_random_qwen, build_tiny_random_qwen3
from streamer.video.frame import Frame
from streamer.shared_types import Conversation


def _chunk() -> Chunk:
    rng = np.random.default_rng(3)
    return Chunk(tuple(Frame(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), float(i)) for i in range(4)), 0)


@pytest.mark.parametrize("build, model_type", [(build_tiny_random_qwen, "qwen2_5_vl"), (build_tiny_random_qwen3, "qwen3_vl")])
def test_a_qwen_vl_directory_loads_like_a_downloaded_checkpoint(tmp_path, build, model_type):
    original = build()
    _save(original, tmp_path)
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
    from streamer.models.registry import ADAPTERS, _HUB_ID

    assert _HUB_ID.match("Qwen/Qwen2.5-VL-3B-Instruct")
    assert ADAPTERS["qwen2_5_vl"] is QwenVLAdapter and ADAPTERS["qwen3_vl"] is Qwen3VLAdapter


# ---- `--model DIR` through the CLI and the web UI, for every family ------------------------------------


def _save(adapter, path):
    adapter.model.save_pretrained(path)
    adapter.tokenizer.save_pretrained(path)
    adapter.image_processor.save_pretrained(path)
    return str(path)


HUB_LAYOUTS = ["tiny-random", "tiny-random-llava", "tiny-random-qwen", "tiny-random-qwen3"]


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    return {name: _save(load_model(name), tmp_path_factory.mktemp(name)) for name in HUB_LAYOUTS}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from streamer.world.sample_video import write_sample

    return str(write_sample(tmp_path_factory.mktemp("dirclip") / "clip.mp4", seconds=6, fps=2))


@pytest.mark.parametrize("name", HUB_LAYOUTS)
def test_cli_model_dir_answers_like_the_built_in(family_dirs, clip, name, capsys):
    from streamer.cli import main

    answers = []
    for model in (name, family_dirs[name]):
        assert main([clip, "--model", model, "-q", "What is on screen?", "--json", "--max-new-tokens", "4",
                     "--budget", "64"]) == 0
        answers.append(json.loads(capsys.readouterr().out.splitlines()[-1]))
    assert answers[1]["model"] == family_dirs[name]
    assert answers[1]["answer"] == answers[0]["answer"]  # same weights, same prompts: the same greedy answer
    assert answers[1]["frames_ingested"] == answers[0]["frames_ingested"] and answers[1]["kv_tokens"] <= 64
    assert answers[1]["frames_ingested"] + answers[1]["frames_skipped"] == 6  # every sampled frame, fed or skipped


@pytest.mark.parametrize("family, model_type, ids", [
    ("smolvlm", "smolvlm", {"image_token_id": 49190}),
    ("llava", "llava_onevision", {"image_token_index": 151646, "video_token_index": 151647}),
    ("qwen", "qwen2_5_vl", {"image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
                            "vision_end_token_id": 151653}),
])  # fmt: skip
def test_a_hub_layout_dir_has_the_hub_files_and_loads_like_a_download(hub_dirs, family, model_type, ids):
    from streamer.models.hub_layout import HUB_LAYOUTS, special_token_ids

    path = Path(hub_dirs[family])
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
            "preprocessor_config.json"} <= {f.name for f in path.iterdir()}  # fmt: skip
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == model_type and {k: config[k] for k in ids} == ids
    assert config["text_config"]["vocab_size"] == HUB_LAYOUTS[family].config["text_config"]["vocab_size"]
    pre = json.loads((path / "preprocessor_config.json").read_text())
    assert pre == HUB_LAYOUTS[family].preprocessor  # the hub's processor type (needs torchvision) and settings

    adapter = load_model(str(path))
    assert adapter.family == {"smolvlm": "smolvlm", "llava": "llava_onevision", "qwen": "qwen2_5_vl"}[family]
    assert type(adapter.image_processor).__name__ == pre["image_processor_type"] + "Pil"  # no torchvision here
    vocab = adapter.tokenizer.get_vocab()
    assert all(vocab[name] == i for name, i in special_token_ids(family).items())
    prompt = adapter.chunk_prompt(_chunk(), Conversation())
    # the hub's tokens per frame: 64; 196 + one newline vector per video; a 48x64 frame -> 56x56 px -> 2x2
    # merged patches per temporal patch of 2 frames
    assert int((prompt.input_ids == adapter.image_token_id).sum()) == {"smolvlm": 4 * 64, "llava": 4 * 196 + 1,
                                                                       "qwen": 2 * 4}[family]  # fmt: skip


@pytest.mark.parametrize("family", ["smolvlm", "llava", "qwen"])
def test_cli_answers_with_a_hub_layout_dir(hub_dirs, clip, family, capsys):
    from streamer.cli import main

    assert main([clip, "--model", hub_dirs[family], "-q", "What is on screen?", "--json", "--max-new-tokens", "4",
                 "--budget", "300", "--skip-static", "off"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert out["model"] == hub_dirs[family] and out["frames_ingested"] == 6 and 0 < out["kv_tokens"] <= 300  # all fed
    assert out["question"] == "What is on screen?" and isinstance(out["answer"], str)  # random weights: any text


@pytest.mark.parametrize("family", ["qwen"])
def test_ui_server_started_with_a_hub_layout_dir_answers(hub_dirs, clip, family):
    """`python -m streamer.app.ui --model DIR` as a user starts it on a directory laid out like the hub
    repository, then a video and a question over the REST API. One family (the M-RoPE one): the server's path
    does not depend on it, and every family's directory is loaded and answered by the CLI test above."""
    import socket
    import subprocess
    import sys
    import time

    from gradio_client import Client, handle_file

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "streamer.app.ui", "--model", hub_dirs[family],
                               "--port", str(port), "--budget", "64", "--max-new-tokens", "4"],
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        line = ""
        while "serving on" not in line:
            line = server.stderr.readline()
            assert line or server.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not start"
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        client.predict(handle_file(clip), api_name="/load_video")
        status, stats = "", {}
        seen = lambda: stats.get("frames_ingested", 0) + stats.get("frames_skipped", 0)  # noqa: E731
        while not ("Watched all" in status and seen() == 6) and time.monotonic() < deadline:
            status, _, _, _, _, stats = client.predict(api_name="/refresh")
            time.sleep(0.3)
        assert seen() == 6 and stats["frames_ingested"] >= 1, status  # the unchanged frames were skipped
        assert stats["kv_tokens"] <= 64 and stats["model"] == hub_dirs[family]
        chat, _ = client.predict("What is on screen?", api_name="/ask")
        assert [m["role"] for m in chat] == ["user", "assistant"] and chat[1]["content"]
    finally:
        server.terminate()
        server.wait(30)


@pytest.mark.parametrize("family, key", [("smolvlm", "image_token_id"), ("llava", "video_token_index"),
                                         ("qwen", "video_token_id")])
def test_a_directory_whose_config_and_tokenizer_disagree_is_refused_clearly(hub_dirs, tmp_path, family, key):
    """A config whose placeholder id is not the tokenizer's (a mixed-up download) is one ModelLoadError naming
    both ids, not a shape error deep in the first forward pass."""
    import shutil

    from streamer.errors import ModelLoadError

    broken = tmp_path / family
    shutil.copytree(hub_dirs[family], broken)
    config = json.loads((broken / "config.json").read_text())
    right = config[key]
    config[key] = right - 1
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=rf"id {right} != config {key} {right - 1}"):
        load_model(str(broken))
