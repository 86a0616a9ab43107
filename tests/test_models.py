"""Model adapters on tiny random models: prompt layouts, token tagging, cache-incremental equality, loading.

Everything runs offline on CPU: `tiny-random` (SmolVLM) and `tiny-random-llava` (LLaVA-OneVision) are
built in-process; real loading code (`AutoModelForImageTextToText.from_pretrained` etc.) is exercised
on checkpoints the tests save into tmp_path.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from streamer.models import registry
from streamer.models.base import ModelAdapter
from streamer.models.llava_onevision import LlavaOnevisionAdapter
from streamer.shared_types import Conversation, Phase, Prompt, format_timestamp
from streamer.models.registry import list_builtin, load_model
from streamer.models import smollm2_tokenizer
from streamer.models.smollm2_tokenizer import _store, cache_root
from streamer.models.smolvlm import SmolVLMAdapter
from streamer.models.tiny_random import TinyRandomSettings, build_tiny_random
from streamer.errors import ConfigError, ModelLoadError
from streamer.frames import Chunk
from streamer.video.frame import Frame
from streamer.shared_types import Modality


@pytest.fixture(scope="session")
def tiny() -> SmolVLMAdapter:
    return load_model("tiny-random")


@pytest.fixture(scope="session")
def tiny_llava() -> LlavaOnevisionAdapter:
    return load_model("tiny-random-llava")


@pytest.fixture(params=["tiny-random", "tiny-random-llava"])
def adapter(request, tiny, tiny_llava) -> ModelAdapter:
    return tiny if request.param == "tiny-random" else tiny_llava


def make_chunk(index: int, times: list[float], seed: int | None = None, hw=(40, 56)) -> Chunk:
    rng = np.random.default_rng(index if seed is None else seed)
    frames = tuple(Frame(rng.integers(0, 256, (*hw, 3), dtype=np.uint8), t) for t in times)
    return Chunk(frames, index)


def chat(adapter: ModelAdapter, *steps) -> list[Prompt]:
    """Prompts for a conversation from its start: a step is a Chunk, a question str, or None (answer end)."""
    conv, prompts = Conversation(), []
    for step in steps:
        if isinstance(step, Chunk):
            prompt = adapter.chunk_prompt(step, conv)
        elif step is None:
            prompt = adapter.answer_end(conv)
        else:
            prompt = adapter.question_prompt(step, conv)
        prompts.append(prompt)
        conv = prompt.after
    return prompts


def text_of(adapter: ModelAdapter, prompt: Prompt) -> str:
    return adapter.tokenizer.decode(prompt.input_ids[0].tolist(), skip_special_tokens=False)


def full_inputs(adapter: ModelAdapter, prompts: list[Prompt]) -> dict[str, torch.Tensor]:
    """One forward's inputs equivalent to feeding `prompts` one after the other."""
    inputs = {"input_ids": torch.cat([p.input_ids for p in prompts], dim=1)}  # (1, sum T)
    with_pixels = [p for p in prompts if len(p.inputs) > 1]
    for key in with_pixels[0].inputs:
        if key == "input_ids":
            continue
        # SmolVLM: (1, n_images, ...) -> concatenate images; LLaVA: (1 video, n_frames, ...) -> videos
        dim = 1 if isinstance(adapter, SmolVLMAdapter) else 0
        inputs[key] = torch.cat([p.inputs[key] for p in with_pixels], dim=dim)
    return inputs


# ---------------------------------------------------------------------------------- tiny-random


def test_tiny_random_describe_matches_model_and_cache(tiny):
    d = tiny.describe()
    assert d["name"] == "tiny-random" and d["family"] == "smolvlm" and d["is_random"] is True
    assert (d["n_layers"], d["n_kv_heads"], d["head_dim"]) == (2, 2, 16)
    assert d["tokens_per_frame"] == 16 and d["max_position_embeddings"] == 2048
    assert d["image_token_id"] == tiny.tokenizer.convert_tokens_to_ids("<image>")
    assert (d["dtype"], d["device"]) == ("float32", "cpu")
    assert tiny.model.config.get_text_config().vocab_size >= len(tiny.tokenizer)
    # the numbers are what the KV cache really holds
    prompt = tiny.chunk_prompt(make_chunk(0, [0.0, 1.0]), Conversation())
    cache = DynamicCache(config=tiny.model.config)
    with torch.no_grad():
        tiny.model(**prompt.inputs, past_key_values=cache, use_cache=True)
    assert len(cache.layers) == d["n_layers"]
    assert tuple(cache.layers[0].keys.shape) == (1, d["n_kv_heads"], prompt.n_tokens, d["head_dim"])


def test_tiny_random_is_deterministic_and_leaves_global_rng_alone(tiny):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    again = build_tiny_random()
    assert torch.equal(torch.rand(3), expected)  # building did not consume the global RNG
    other = build_tiny_random(settings=TinyRandomSettings(seed=1))
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        base, same, diff = (m.model(input_ids=ids).logits for m in (tiny, again, other))
    assert torch.equal(base, same)
    assert (base - diff).abs().max() > 1e-3


def test_tokenizer_cache_is_written_then_read_back(tmp_path, monkeypatch):
    """In an empty cache directory the first load converts the GGUF vocabulary and caches it; the second
    load reads the cache (converting again would fail here) and gives the same tokenizer."""
    monkeypatch.setenv("STREAMER_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    first = smollm2_tokenizer.load_smollm2_tokenizer()
    cached = list((tmp_path / "tokenizers").glob("smollm2-*/tokenizer.json"))
    assert len(cached) == 1, "the first load should have cached the converted tokenizer"

    def convert_again():
        raise AssertionError("the tokenizer was converted again instead of read from the cache")

    monkeypatch.setattr(smollm2_tokenizer, "_convert_from_gguf", convert_again)
    again = smollm2_tokenizer.load_smollm2_tokenizer()
    text = "What digit was on the red circle? 0.5 s"
    assert again(text).input_ids == first(text).input_ids and len(again) == len(first) > 49000


def test_tokenizer_cache_store_is_atomic_first_writer_wins(tmp_path):
    class FakeTokenizer:
        def __init__(self, tag):
            self.tag = tag

        def save_pretrained(self, path):
            (tmp_path / "written").mkdir(exist_ok=True)
            with open(f"{path}/tokenizer.json", "w") as f:
                f.write(self.tag)

    target = tmp_path / "tok"
    _store(FakeTokenizer("first"), target)
    _store(FakeTokenizer("second"), target)  # target exists: the rename fails, the copy is discarded
    assert (target / "tokenizer.json").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok", "written"]  # no temp dirs left behind


def test_tiny_random_settings_validation():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        TinyRandomSettings(image_size=60, patch_size=8)
    with pytest.raises(ValueError, match="text_kv_heads"):
        TinyRandomSettings(text_heads=4, text_kv_heads=3)
    with pytest.raises(ValueError, match="positive integer"):
        TinyRandomSettings(text_layers=0)


# ---------------------------------------------------------------------------------- prompt layouts


@pytest.mark.parametrize(
    "seconds, text",
    [(0.0, "00:00:00"), (1.0, "00:00:01"), (59.99, "00:00:59"), (751.4, "00:12:31"), (3725.0, "01:02:05")],
)
def test_format_timestamp(seconds, text):
    assert format_timestamp(seconds) == text


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_format_timestamp_rejects_bad_times(bad):
    with pytest.raises(ValueError):
        format_timestamp(bad)


def test_smolvlm_conversation_layout(tiny):
    n = tiny.tokens_per_frame
    img = "<fake_token_around_image><global-img>" + "<image>" * n + "<fake_token_around_image>"
    parts = chat(
        tiny,
        make_chunk(0, [1.0, 2.0]),
        make_chunk(1, [3.5]),
        "  What happens?  ",
        None,
        make_chunk(2, [3725.2]),
        "And now?",
        "Anything else?",  # no answer_end: closed implicitly
    )
    texts = [text_of(tiny, p) for p in parts]
    assert texts == [
        f"<|im_start|>User: \nFrame from 00:01:{img}\nFrame from 00:02:{img}",
        f"\nFrame from 00:03:{img}",
        "\n\nWhat happens?<end_of_utterance>\nAssistant:",
        "<end_of_utterance>\n",
        f"User: \nFrame from 62:05:{img}",
        "\n\nAnd now?<end_of_utterance>\nAssistant:",
        "<end_of_utterance>\nUser: Anything else?<end_of_utterance>\nAssistant:",
    ]
    # a question as the very first content, and a fresh Conversation starting over
    assert text_of(tiny, tiny.question_prompt("Hi?", Conversation())) == "<|im_start|>User: Hi?<end_of_utterance>\nAssistant:"
    assert text_of(tiny, tiny.chunk_prompt(make_chunk(0, [0.0]), Conversation())).startswith("<|im_start|>User: \nFrame")
    eou = tiny.tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    assert tiny.eos_token_ids[0] == eou


def test_llava_onevision_conversation_layout(tiny_llava):
    a = tiny_llava
    vid = "<video>" * a.tokens_per_frame
    parts = chat(a, make_chunk(0, [1.0, 2.0]), "What happens?", None, make_chunk(1, [61.0]),
                 make_chunk(2, [62.0]), "And now?")
    assert [text_of(a, p) for p in parts] == [  # one video per chunk, closed by its newline vector
        f"<|im_start|>user\n{vid}{vid}<video>\n",
        "What happens?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_end|>\n",
        f"<|im_start|>user\n{vid}<video>\n",
        f"{vid}<video>\n",
        "And now?<|im_end|>\n<|im_start|>assistant\n",
    ]
    assert a.tokens_per_frame == 16  # (64 px / 8 px patches / 2 pooling)^2; + 1 newline vector per chunk
    assert a.eos_token_ids[0] == a.tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_tokens_are_tagged_one_to_one(adapter):
    times = [1.0, 2.25, 7.0]
    prompt = adapter.chunk_prompt(make_chunk(0, times), Conversation())
    ids = prompt.input_ids[0]
    assert prompt.modality.dtype == torch.int8 and prompt.times.dtype == torch.float32
    assert prompt.modality.shape == prompt.times.shape == (prompt.n_tokens,)
    is_image = ids == adapter.image_token_id
    assert torch.equal(prompt.modality == Modality.IMAGE, is_image)
    other = torch.isin(ids, torch.tensor(adapter.other_token_ids, dtype=torch.long))
    assert torch.equal(prompt.modality == Modality.OTHER, other)
    if isinstance(adapter, SmolVLMAdapter):
        assert int(other.sum()) == 3 * len(times)  # <fake> <global-img> ... <fake> per frame
    per_chunk = 1 if isinstance(adapter, LlavaOnevisionAdapter) else 0  # the video's newline vector
    assert int(is_image.sum()) == adapter.describe()["tokens_per_frame"] * len(times) + per_chunk

    on_frame = ~torch.isnan(prompt.times)
    assert not on_frame[0]  # the opening is plain text
    assert bool(on_frame[is_image].all()) and bool(on_frame[other].all())
    assert sorted(set(prompt.times[on_frame].tolist())) == times
    assert bool((prompt.times[on_frame].diff() >= 0).all())  # frames in order, contiguous
    for t in times:
        mine = prompt.times == t
        assert int((mine & is_image).sum()) == adapter.tokens_per_frame + (per_chunk if t == times[-1] else 0)
        text = adapter.tokenizer.decode(ids[mine].tolist(), skip_special_tokens=False)
        if isinstance(adapter, SmolVLMAdapter):  # LLaVA-OneVision writes no frame times
            assert format_timestamp(t, hours=False) in text  # the timestamp text belongs to its frame

    question = adapter.question_prompt("What is it?", prompt.after)
    assert bool(torch.isnan(question.times).all())
    assert bool((question.modality == Modality.TEXT).all())


def test_pixel_inputs_hold_one_entry_per_frame(adapter):
    prompt = adapter.chunk_prompt(make_chunk(0, [0.0, 1.0, 2.0], hw=(30, 90)), Conversation())
    size = adapter.frame_size
    if isinstance(adapter, SmolVLMAdapter):
        assert tuple(prompt.inputs["pixel_values"].shape) == (1, 3, 3, size, size)
        assert bool(prompt.inputs["pixel_attention_mask"].all())
    else:
        assert tuple(prompt.inputs["pixel_values_videos"].shape) == (1, 3, 3, size, size)  # one video
    assert all(v.device == adapter.device for v in prompt.inputs.values())


def test_pixels_are_normalised_and_in_frame_order(adapter):
    levels = [255, 0, 128]  # one flat grey level per frame
    frames = tuple(Frame(np.full((24, 40, 3), v, np.uint8), float(i)) for i, v in enumerate(levels))
    prompt = adapter.chunk_prompt(Chunk(frames, 0), Conversation())
    if isinstance(adapter, SmolVLMAdapter):
        per_frame = prompt.inputs["pixel_values"][0]  # (n, 3, S, S)
    else:
        per_frame = prompt.inputs["pixel_values_videos"][0]  # (n, 3, S, S)
    mean = torch.tensor(adapter.image_processor.image_mean).view(3, 1, 1)
    std = torch.tensor(adapter.image_processor.image_std).view(3, 1, 1)
    for k, level in enumerate(levels):
        expected = ((level / 255 - mean) / std).expand_as(per_frame[k])
        torch.testing.assert_close(per_frame[k], expected.float(), atol=1e-5, rtol=0)


def test_turn_state_moves_only_with_fed_prompts(adapter):
    with pytest.raises(RuntimeError):
        adapter.answer_end(Conversation())  # no question yet
    frames = adapter.chunk_prompt(make_chunk(0, [0.0]), Conversation())
    assert frames.after == Conversation(Phase.USER, has_frames=True)
    refused = adapter.question_prompt("Why?", frames.after)  # e.g. it did not fit the budget: not fed
    assert refused.after.phase is Phase.ASSISTANT
    again = adapter.question_prompt("Why?", frames.after)
    assert text_of(adapter, again) == text_of(adapter, refused)
    assert text_of(adapter, again).startswith("\n\nWhy?" if isinstance(adapter, SmolVLMAdapter) else "Why?")
    assert adapter.answer_end(again.after).after.phase is Phase.CLOSED


def test_bad_inputs_are_rejected(adapter):
    with pytest.raises(ValueError, match="no frames"):
        adapter.chunk_prompt(Chunk((), 0), Conversation())
    with pytest.raises(ValueError, match="uint8"):
        adapter.chunk_prompt(Chunk((Frame(np.zeros((8, 8, 3), np.float32), 0.0),), 0), Conversation())
    with pytest.raises(ValueError, match="empty"):
        adapter.question_prompt("   ", Conversation())


# ---------------------------------------------------------------------------------- forward equality


def test_incremental_prefill_equals_one_full_forward(adapter):
    """chunk 1, chunk 2 (pixels while the cache is non-empty), question, 3 greedy tokens == one forward."""
    prompts = chat(adapter, make_chunk(0, [0.0, 1.0]), make_chunk(1, [2.0, 3.0]), "What changed?")
    model = adapter.model
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        for p in prompts:
            logits = model(**p.inputs, past_key_values=cache, use_cache=True).logits[0, -1]
        generated = []
        for _ in range(3):  # decoding steps: text only, positions from the cache length
            token = int(logits.argmax())
            generated.append(token)
            logits = model(input_ids=torch.tensor([[token]]), past_key_values=cache, use_cache=True).logits[0, -1]
        assert cache.get_seq_length() == sum(p.n_tokens for p in prompts) + 3

        inputs = full_inputs(adapter, prompts)
        full_prefill = model(**inputs).logits[0]  # (T, V)
        inputs["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([generated])], dim=1)
        full = model(**inputs).logits[0, -1]
        torch.testing.assert_close(logits, full, atol=1e-4, rtol=1e-4)
        assert int(full_prefill[-1].argmax()) == generated[0]

        # the test has teeth: the pixels of chunk 2 move the answer logits far beyond the tolerance
        key = next(k for k in inputs if k.startswith("pixel_values"))
        changed = dict(inputs)
        changed[key] = inputs[key].clone()
        if isinstance(adapter, SmolVLMAdapter):
            changed[key][:, 2:] = -inputs[key][:, 2:]  # (1, n_images, 3, S, S): frames of chunk 2
        else:
            changed[key][1:] = -inputs[key][1:]  # (n_videos, n_frames, 3, S, S): chunk 2's video
        assert (model(**changed).logits[0, -1] - full).abs().max() > 1e-2


def test_bfloat16_prompts_follow_the_model_dtype():
    a = load_model("tiny-random", dtype="bfloat16")
    assert a.describe()["dtype"] == "bfloat16"
    prompt = a.chunk_prompt(make_chunk(0, [0.0]), Conversation())
    assert prompt.inputs["pixel_values"].dtype == torch.bfloat16
    with torch.no_grad():
        logits = a.model(**prompt.inputs).logits
    assert logits.dtype == torch.bfloat16 and bool(torch.isfinite(logits).all())


# ---------------------------------------------------------------------------------- loading


def test_list_builtin():
    names = list_builtin()
    assert {"tiny-random", "tiny-random-llava", "tiny"} <= set(names)


def _save(adapter: ModelAdapter, path) -> None:
    adapter.model.save_pretrained(path)
    adapter.tokenizer.save_pretrained(path)
    adapter.image_processor.save_pretrained(path)


def test_local_checkpoint_directories_load_through_the_real_loading_code(tiny, tiny_llava, tmp_path):
    for original in (tiny, tiny_llava):
        path = tmp_path / original.name
        _save(original, path)
        loaded = load_model(str(path))
        assert type(loaded) is type(original) and not loaded.is_random
        assert loaded.describe()["tokens_per_frame"] == original.tokens_per_frame
        chunk = make_chunk(0, [0.0, 1.0])
        p_orig = original.chunk_prompt(chunk, Conversation())
        p_new = loaded.chunk_prompt(chunk, Conversation())
        assert torch.equal(p_orig.input_ids, p_new.input_ids)
        assert torch.equal(p_orig.modality, p_new.modality)
        with torch.no_grad():
            torch.testing.assert_close(loaded.model(**p_new.inputs).logits, original.model(**p_orig.inputs).logits)


def test_idefics3_checkpoints_use_the_smolvlm_adapter(tiny, tmp_path):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    tc = tiny.model.config
    config = Idefics3Config(
        vision_config=tc.vision_config.to_dict(),
        text_config=tc.text_config.to_dict(),
        scale_factor=tc.scale_factor,
        image_token_id=tc.image_token_id,
    )
    torch.manual_seed(0)
    Idefics3ForConditionalGeneration(config).save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    tiny.image_processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "idefics3"
    a = load_model(str(tmp_path))
    assert isinstance(a, SmolVLMAdapter) and a.tokens_per_frame == tiny.tokens_per_frame
    prompt = a.chunk_prompt(make_chunk(0, [0.0]), Conversation())
    with torch.no_grad():
        assert a.model(**prompt.inputs).logits.shape[1] == prompt.n_tokens


def _config_dir(tmp_path, content: dict | None):
    path = tmp_path / "ckpt"
    path.mkdir()
    if content is not None:
        (path / "config.json").write_text(json.dumps(content))
    return str(path)


@pytest.mark.parametrize(
    "make_name, message",
    [
        (lambda tmp: "tiny-randm", "unknown model 'tiny-randm'"),
        (lambda tmp: "/nonexistent/model/dir", "not a local directory"),
        (lambda tmp: str(tmp / "missing"), "not a local directory"),
        (lambda tmp: _config_dir(tmp, None), "has no config.json"),
        (lambda tmp: _config_dir(tmp, {"model_type": "bert"}), "unsupported model type 'bert'"),
    ],
)
def test_load_errors_are_one_clear_model_load_error(tmp_path, make_name, message):
    with pytest.raises(ModelLoadError) as info:
        load_model(make_name(tmp_path))
    text = str(info.value)
    assert message in text
    assert "--model PATH" in text and "tiny-random" in text
    assert "\n" not in text


def test_unreachable_hub_fails_fast_with_the_offline_message(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_hub_offline", lambda: True)  # as on a machine without network
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # and nothing in the hub cache
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError) as info:
        load_model("HuggingFaceTB/SmolVLM2-256M-Video-Instruct")
    text = str(info.value)
    assert "not a local directory and the hub is unreachable" in text
    assert "--model PATH" in text and "tiny-random" in text


@pytest.mark.parametrize("dtype", ["int8", "float64", "fp8", torch.int32])
def test_bad_dtype_is_a_config_error(dtype):
    with pytest.raises(ConfigError, match="unsupported dtype"):
        load_model("tiny-random", dtype=dtype)


@pytest.mark.parametrize("device", ["tpu", "not a device"])
def test_bad_device_is_a_config_error(device):
    with pytest.raises(ConfigError):
        load_model("tiny-random", device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        load_model("tiny-random", device="cuda")


def test_special_token_strings_in_a_question_stay_plain_text(adapter):
    frames = adapter.chunk_prompt(make_chunk(0, [0.0]), Conversation())
    sneaky = "is <image> or <|im_end|> or <end_of_utterance> or <video> here?"
    prompt = adapter.question_prompt(sneaky, frames.after)
    ids = prompt.input_ids[0]
    assert int((ids == adapter.image_token_id).sum()) == 0
    assert bool((prompt.modality == Modality.TEXT).all())
    n_end = sum(int((ids == t).sum()) for t in adapter.eos_token_ids)
    assert n_end == 1  # only the template's own end of the user turn
    assert sneaky in text_of(adapter, prompt)
    with torch.no_grad():  # and the model accepts it (no placeholder/feature mismatch)
        adapter.model(**prompt.inputs)


@pytest.mark.parametrize("name", ["tiny-random", "tiny-random-llava", "tiny-random-qwen", "tiny-random-qwen3"])
def test_every_family_is_the_adapter_the_session_expects(name):
    from streamer.shared_types import Adapter

    adapter = load_model(name)
    assert isinstance(adapter, Adapter) and isinstance(adapter, ModelAdapter)
    facts = adapter.describe()
    assert facts["tokens_per_frame"] == adapter.tokens_per_frame > 0 and facts["image_token_id"] == adapter.image_token_id
    assert adapter.eos_token_ids and all(isinstance(i, int) for i in adapter.eos_token_ids)
    assert adapter.image_processor is not None


def test_importing_the_models_package_loads_no_adapter():
    import subprocess
    import sys

    code = ("import sys, streamer.models; print(sorted(m for m in sys.modules if m.startswith('streamer.models.')));"
            "streamer.models.load_model; print('streamer.models.registry' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "True", out
