"""Prompt parity with the official transformers processors, offline.

For the same frames and question, each test builds what the official video path feeds the model (the
chat template of the hub repository, the processor's own `replace_video_token` expansion, its frame
times, its pixel layout, the model's own `get_rope_index`) and compares it with what our adapter
feeds, asserting equality except for exactly the difference streaming forces (each adapter's
docstring says why). The official video processors need torchvision, which this project does not
install, so pixels are checked on frames already at the tower's size (no resize: only rescale,
normalise and layout, which must then be equal) and the Qwen patch layout against the official PIL
image processor's patchify; the resize kernel itself (PIL here, torchvision there) is not compared.
"""

from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from num2words import num2words
from transformers import LlavaOnevisionProcessor, Qwen2_5_VLProcessor, Qwen3VLProcessor, SmolVLMProcessor
from transformers.models.smolvlm import processing_smolvlm
from transformers.video_utils import VideoMetadata

from streamer.frames import Chunk
from streamer.models.hub_layout import LLAVA_OV_TEMPLATE, QWEN25_VL_TEMPLATE, special_token_ids
from streamer.models.registry import load_model
from streamer.models.tiny_random import build_tiny_random_qwen, build_tiny_random_qwen3
from streamer.video.frame import Frame
from streamer.shared_types import Conversation

QUESTION = "What is happening?"
USER_VIDEO = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]


@pytest.fixture(scope="module")
def smolvlm():
    return load_model("tiny-random")


@pytest.fixture(scope="module")
def llava():
    return load_model("tiny-random-llava")


@pytest.fixture(scope="module")
def qwen():
    return build_tiny_random_qwen()


def _frames(n: int, hw: tuple[int, int], start: int = 0) -> list[Frame]:
    """n distinct frames 1 s apart (a 1 fps sample), already at size hw."""
    rng = np.random.default_rng(n * 7 + start)
    return [Frame(rng.integers(0, 256, (*hw, 3), dtype=np.uint8), float(start + i)) for i in range(n)]


def _stream_ids(adapter, chunks: list[list[Frame]]) -> tuple[torch.Tensor, list]:
    """Our ids for these chunks then the question, and the prompts."""
    conv, prompts = Conversation(), []
    for i, frames in enumerate(chunks):
        prompts.append(adapter.chunk_prompt(Chunk(tuple(frames), i), conv))
        conv = prompts[-1].after
    prompts.append(adapter.question_prompt(QUESTION, conv))
    return torch.cat([p.input_ids[0] for p in prompts]), prompts


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _metadata(frames: list[Frame]) -> VideoMetadata:
    """A 1 fps video whose sampled frames are these (its frame i shown at i seconds)."""
    end = int(frames[-1].time_s) + 1
    return VideoMetadata(total_num_frames=end, fps=1.0, frames_indices=[int(f.time_s) for f in frames], duration=end)


def _normalised(frames: list[Frame], mean, std) -> torch.Tensor:
    """The video processors' rescale + normalise of frames that need no resize: (n, 3, H, W)."""
    x = np.stack([f.image for f in frames]).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    return torch.from_numpy((x - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1))).float()


# ------------------------------------------------------------------ SmolVLM2


def _smolvlm_official(adapter, frames: list[Frame]) -> tuple[str, str]:
    """(the official prompt text, its intro line) for `frames` as one video and the question."""
    tok = adapter.tokenizer
    text = tok.apply_chat_template(
        USER_VIDEO, chat_template=processing_smolvlm.DEFAULT_CHAT_TEMPLATE, tokenize=False, add_generation_prompt=True
    )
    me = SimpleNamespace(  # the processor's fields replace_video_token reads (its __init__ needs a video processor)
        image_seq_len=adapter.tokens_per_frame, image_token="<image>", fake_image_token="<fake_token_around_image>",
        global_image_token="<global-img>",
    )  # fmt: skip
    n = len(frames)
    video_inputs = {"pixel_values": torch.zeros(1, n), "video_metadata": [_metadata(frames)]}
    video = SmolVLMProcessor.replace_video_token(me, video_inputs, 0)
    intro = processing_smolvlm.DEFAULT_VIDEO_INTRO.format(
        frame_count=num2words(n), video_duration=str(timedelta(seconds=int(frames[-1].time_s) + 1))
    )
    assert video.startswith(intro)
    return text.replace("<video>", video), intro


def test_smolvlm2_tokens_are_the_official_ones_without_the_intro_line(smolvlm):
    size = smolvlm.frame_size
    frames = _frames(4, (size, size), start=58)  # 00:58 .. 01:01: minutes roll over
    ids, prompts = _stream_ids(smolvlm, [frames])
    official, intro = _smolvlm_official(smolvlm, frames)
    assert "Frame from 01:01:" in official and official.count(intro) == 1
    assert ids.tolist() == _ids(smolvlm.tokenizer, official.replace(intro, "", 1))  # the one difference
    assert ids.tolist() != _ids(smolvlm.tokenizer, official)
    # pixels: the video processor squares each frame to the tower's size, rescales and normalises
    ip = smolvlm.image_processor
    want = _normalised(frames, ip.image_mean, ip.image_std).unsqueeze(0)  # (1, n, 3, S, S)
    got = prompts[0].inputs["pixel_values"]
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-6)
    assert prompts[0].inputs["pixel_attention_mask"].all()


def test_smolvlm2_stream_in_chunks_is_the_same_tokens(smolvlm):
    size = smolvlm.frame_size
    frames = _frames(4, (size, size))
    whole, _ = _stream_ids(smolvlm, [frames])
    pieces, _ = _stream_ids(smolvlm, [frames[:1], frames[1:3], frames[3:]])
    assert torch.equal(whole, pieces)


def test_smolvlm2_frame_times_are_minutes_and_seconds_past_an_hour(smolvlm):
    frame = Frame(np.zeros((8, 8, 3), np.uint8), 4530.0)  # 1:15:30
    assert smolvlm._frame_text(frame).startswith("\nFrame from 75:30:")


# ------------------------------------------------------------------ LLaVA-OneVision


def _llava_official(adapter, n_frames: int) -> str:
    text = adapter.tokenizer.apply_chat_template(
        USER_VIDEO, chat_template=LLAVA_OV_TEMPLATE, tokenize=False, add_generation_prompt=True
    )
    side = adapter.frame_size // adapter.model.config.vision_config.patch_size
    me = SimpleNamespace(num_image_tokens=side * side, video_token="<video>")
    video = LlavaOnevisionProcessor.replace_video_token(me, {"pixel_values_videos": [torch.zeros(n_frames)]}, 0)
    return text.replace("<video>", video, 1)


def test_llava_onevision_one_chunk_is_exactly_the_official_video(llava):
    size = llava.frame_size
    frames = _frames(3, (size, size))
    ids, prompts = _stream_ids(llava, [frames])
    official = _llava_official(llava, 3)
    assert official.count("<video>") == 3 * llava.tokens_per_frame + 1  # one newline vector per video
    assert ids.tolist() == _ids(llava.tokenizer, official)
    ip = llava.image_processor
    want = _normalised(frames, ip.image_mean, ip.image_std).unsqueeze(0)  # (1 video, n, 3, H, W)
    got = prompts[0].inputs["pixel_values_videos"]
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-6)


def test_llava_onevision_each_further_chunk_adds_exactly_one_newline_vector_and_line(llava):
    size, n = llava.frame_size, llava.tokens_per_frame
    frames = _frames(3, (size, size))
    ids, _ = _stream_ids(llava, [frames[:2], frames[2:]])
    official = _llava_official(llava, 3)
    first, rest = "<video>" * (2 * n), "<video>" * (n + 1) + "\n"
    streamed = official.replace("<video>" * (3 * n + 1) + "\n", first + "<video>\n" + rest, 1)
    assert streamed != official and ids.tolist() == _ids(llava.tokenizer, streamed)


# ------------------------------------------------------------------ Qwen2.5-VL


def _qwen_official(adapter, grids: torch.Tensor) -> str:
    text = adapter.tokenizer.apply_chat_template(
        USER_VIDEO, chat_template=QWEN25_VL_TEMPLATE, tokenize=False, add_generation_prompt=True
    )
    me = SimpleNamespace(video_processor=SimpleNamespace(merge_size=adapter.merge), video_token="<|video_pad|>")
    video = Qwen2_5_VLProcessor.replace_video_token(me, {"video_grid_thw": grids}, 0)
    return text.replace("<|video_pad|>", video, 1)


def test_qwen25_vl_one_chunk_is_exactly_the_official_video_tokens_and_positions(qwen):
    frames = _frames(4, (48, 64))  # multiples of 28 px scaled to the tiny tower: 16 px
    ids, prompts = _stream_ids(qwen, [frames])
    grid = prompts[0].inputs["video_grid_thw"]
    assert grid.tolist() == [[2, 6, 8]]
    official = _qwen_official(qwen, grid)
    assert ids.tolist() == _ids(qwen.tokenizer, official)
    # positions: the model's own get_rope_index, seconds per temporal patch = temporal_patch_size / fps
    model = qwen.model.model
    types = (ids == qwen.image_token_id).int()[None] * 2
    want, _ = model.get_rope_index(ids[None], types, video_grid_thw=grid, second_per_grid_ts=torch.tensor([2.0]))
    got = torch.cat([prompts[0].mrope.position_ids, prompts[0].mrope.length + torch.arange(prompts[1].n_tokens).expand(3, -1)], 1)
    assert torch.equal(got, want[:, 0])


def test_qwen25_vl_patches_have_the_official_layout(qwen):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    frames = _frames(2, (48, 64))
    got = qwen._pixel_inputs([f.image for f in frames])["pixel_values_videos"]  # (N, C*T*P*P)
    ip = qwen.image_processor
    official = Qwen2VLImageProcessorPil(patch_size=qwen.patch, merge_size=qwen.merge, temporal_patch_size=2, size=ip.size)
    p = qwen.patch
    got = got.view(-1, 3, 2, p, p)  # (N, C, T, P, P)
    for t, frame in enumerate(frames):  # the image path repeats one frame on the T axis, same patch order
        one = official(images=[frame.image], return_tensors="pt")
        assert one["image_grid_thw"].tolist() == [[1, 6, 8]]
        want = one["pixel_values"].view(-1, 3, 2, p, p)[:, :, 0]
        assert torch.allclose(got[:, :, t], want, atol=1e-6)


def test_qwen25_vl_each_further_chunk_is_its_own_video_block(qwen):
    frames = _frames(4, (48, 64))
    ids, prompts = _stream_ids(qwen, [frames[:2], frames[2:]])
    official = _qwen_official(qwen, torch.tensor([[2, 6, 8]]))
    pads = "<|video_pad|>" * 12
    streamed = official.replace(pads * 2, pads + "<|vision_end|><|vision_start|>" + pads, 1)
    assert streamed != official and ids.tolist() == _ids(qwen.tokenizer, streamed)
    # the second block starts where the first ends, its t axis from 0 again: the model's rule for two videos
    first, second = prompts[0].mrope, prompts[1].mrope
    assert int(second.position_ids.min()) == 0 and first.length > int(first.anchor.max())


def test_tiny_keeps_the_layout_it_was_trained_on(smolvlm):
    from streamer.models.tiny import TinyAdapter

    tiny = TinyAdapter("tiny", smolvlm.model, smolvlm.tokenizer, smolvlm.image_processor)
    size = smolvlm.frame_size
    prompt = tiny.chunk_prompt(Chunk(tuple(_frames(1, (size, size), start=61)), 0), Conversation())
    text = tiny.tokenizer.decode(prompt.input_ids[0])
    # the time after the frame's tokens, closed by a full stop (docs/training.md, stage W2)
    assert text.startswith("<|im_start|>User:\nFrame<fake") and text.endswith("<fake_token_around_image> at 00:01:01.")


# ------------------------------------------------------------------ Qwen3-VL


def test_qwen3_vl_stream_is_exactly_the_official_video_in_any_chunking():
    """Qwen3VLProcessor writes each temporal patch as `<t seconds>` + its own block, t the mean time of
    its two frames; the reference processor (qwen-vl-utils, transformers 4.5x) replaces the template's
    whole `<|vision_start|><|video_pad|><|vision_end|>` with that, so a stream in chunks is the same."""
    qwen3 = build_tiny_random_qwen3()
    frames = _frames(6, (48, 64), start=10)
    ids, prompts = _stream_ids(qwen3, [frames])
    pieces, _ = _stream_ids(qwen3, [frames[:2], frames[2:]])
    assert torch.equal(ids, pieces)
    grid = prompts[0].inputs["video_grid_thw"]
    me = SimpleNamespace(
        video_processor=SimpleNamespace(merge_size=qwen3.merge, temporal_patch_size=2), video_token="<|video_pad|>",
        vision_start_token="<|vision_start|>", vision_end_token="<|vision_end|>",
        _calculate_timestamps=lambda *a: Qwen3VLProcessor._calculate_timestamps(None, *a),
    )  # fmt: skip
    video = Qwen3VLProcessor.replace_video_token(me, {"video_grid_thw": grid, "video_metadata": [_metadata(frames)]}, 0)
    assert video.startswith("<10.5 seconds><|vision_start|>") and "<14.5 seconds>" in video
    official = f"<|im_start|>user\n{video}{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    assert ids.tolist() == _ids(qwen3.tokenizer, official)
    model = qwen3.model.model
    types = (ids == qwen3.image_token_id).int()[None] * 2
    want, _ = model.get_rope_index(ids[None], types, video_grid_thw=grid)
    got = torch.cat([prompts[0].mrope.position_ids, prompts[0].mrope.length + torch.arange(prompts[1].n_tokens).expand(3, -1)], 1)
    assert torch.equal(got, want[:, 0])


# ------------------------------------------------------------------ hub-layout directories (hub token ids)


@pytest.mark.parametrize("family", ["smolvlm", "llava", "qwen"])
def test_a_hub_layout_directory_feeds_the_official_prompt_with_the_hub_ids(hub_dirs, family):
    """Loaded from a directory laid out like the hub repository (its chat template, its special-token ids),
    an adapter feeds the official video prompt tokenized by that directory's tokenizer, with the same one
    streaming difference as above; every special token in it carries the hub's id."""
    adapter = load_model(hub_dirs[family])
    hub = special_token_ids(family)
    if family == "qwen":
        frames = _frames(2, (224, 392))  # multiples of 28 px: no resize; 8 x 14 merged patches per frame
        ids, prompts = _stream_ids(adapter, [frames])
        assert adapter.tokenizer.chat_template == QWEN25_VL_TEMPLATE
        official = _qwen_official(adapter, prompts[0].inputs["video_grid_thw"])
    else:
        size = adapter.frame_size
        frames = _frames(3, (size, size))
        ids, _ = _stream_ids(adapter, [frames])
        if family == "smolvlm":
            assert adapter.tokenizer.chat_template == processing_smolvlm.DEFAULT_CHAT_TEMPLATE
            official, intro = _smolvlm_official(adapter, frames)
            official = official.replace(intro, "", 1)
        else:
            assert adapter.tokenizer.chat_template == LLAVA_OV_TEMPLATE
            official = _llava_official(adapter, 3)
    assert ids.tolist() == _ids(adapter.tokenizer, official)
    image_token = {"smolvlm": "<image>", "llava": "<video>", "qwen": "<|video_pad|>"}[family]
    assert adapter.image_token_id == hub[image_token]
    used = {hub_id for name, hub_id in hub.items() if name in official}
    assert used and used <= set(ids.tolist())  # each special the official text holds, fed at the hub's id
