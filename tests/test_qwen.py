"""Qwen2.5-VL with 3-D M-RoPE in the bounded cache: the position rule, exactness, and staying bounded.

The rule (streamer/rope.py): a kept token moves by the same delta on all three axes; compaction lays
the kept position blocks (a text token, a video block) out again from 0, each where the previous ends.
"""

import math

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from streamer.frames import Chunk
from streamer.kv_window import POLICIES, KVWindowCache, WindowConfig, use_window_attention
from streamer.models.tiny_random import TinyRandomSettings, build_tiny_random_qwen, build_tiny_random_qwen3
from streamer.rope import is_mrope, mrope_gap_deltas, rope_inv_freq, rotate
from streamer.session import StreamSession
from streamer.video.frame import Frame
from streamer.shared_types import Conversation, MRopeLayout

MERGES = ("none", "average", "pivot", "weighted")


@pytest.fixture(scope="module")
def qwen():
    return build_tiny_random_qwen(settings=TinyRandomSettings(max_position_embeddings=256))


@pytest.fixture(scope="module")
def qwen3():
    return build_tiny_random_qwen3(settings=TinyRandomSettings(max_position_embeddings=256))


def _chunk(index: int, n: int = 4, seed: int = 0, hw=(48, 64), step: int = 4) -> Chunk:
    """Chunk `index` of a 1 fps stream: n frames from index x step seconds."""
    rng = np.random.default_rng(seed * 1000 + index)
    frames = tuple(Frame(rng.integers(0, 256, (*hw, 3), dtype=np.uint8), float(index * step + j)) for j in range(n))
    return Chunk(frames, index)


# ------------------------------------------------------------------ the rotation rule


def _qwen25_rotate(config, k, pos):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRotaryEmbedding, apply_rotary_pos_emb

    cos, sin = Qwen2_5_VLRotaryEmbedding(config)(k, pos)
    return apply_rotary_pos_emb(k, k, cos, sin)[1]


def _qwen3_rotate(config, k, pos):
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding, apply_rotary_pos_emb

    cos, sin = Qwen3VLTextRotaryEmbedding(config)(k, pos)
    return apply_rotary_pos_emb(k, k, cos, sin)[1]


def _text_config(kind: str):
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    if kind == "chunked":  # Qwen2.5-VL: sections [16, 24, 24] of 64 frequencies, contiguous
        params = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}
        return Qwen2_5_VLConfig(text_config=dict(hidden_size=256, num_attention_heads=2, rope_parameters=params))
    params = {"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20], "mrope_interleaved": True}
    return Qwen3VLConfig(text_config=dict(hidden_size=256, num_attention_heads=2, head_dim=128, rope_parameters=params))


@pytest.mark.parametrize("kind", ["chunked", "interleaved"])
def test_rerotating_by_d_on_every_axis_equals_rotating_at_p_plus_d(kind):
    config = _text_config(kind)
    text = config.get_text_config()
    rotate_at = _qwen25_rotate if kind == "chunked" else _qwen3_rotate
    g = torch.Generator().manual_seed(0)
    k = torch.randn(1, 2, 40, 128, generator=g)  # (B, H, T, D)
    pos = torch.randint(1000, 2000, (3, 1, 40), generator=g)  # (3, B, T): axes apart, as in a video block
    d = torch.randint(-1000, 1000, (40,), generator=g)  # one delta per token, the same on all axes
    want = rotate_at(text, k, pos + d)
    got = rotate(rotate_at(text, k, pos), d.expand(1, 2, 40), rope_inv_freq(config))
    assert is_mrope(config)
    # float32 angles of positions near 2000 carry ~1e-4 rad of rounding, in the model as here
    assert torch.allclose(got, want, atol=3e-4), (got - want).abs().max()
    # a delta on one axis only is not a rotation of the key: the rule needs the same delta on all three
    d_t = torch.zeros_like(pos)
    d_t[0] = 1000
    assert not torch.allclose(rotate_at(text, k, pos + d_t), rotate_at(text, k, pos), atol=1e-2)


def test_compaction_moves_whole_blocks_and_closes_only_evicted_blocks():
    # stream: text 0, 1; a video block at 2 taking 4 positions; text 6, 7; a block at 8 taking 3; text 11
    anchor = torch.tensor([0, 1, 2, 2, 2, 6, 7, 8, 8, 11])
    advance = torch.tensor([1, 1, 4, 4, 4, 1, 1, 3, 3, 1])
    kept = torch.tensor([0, 2, 4, 5, 7, 9])  # text 1 evicted, block 2 partly kept, text 7 evicted, ...
    delta, new = mrope_gap_deltas(anchor[kept].view(1, 1, -1), advance[kept].view(1, 1, -1))
    assert new.flatten().tolist() == [0, 1, 1, 5, 6, 9]
    assert delta.flatten().tolist() == [0, -1, -1, -1, -2, -2]
    # nothing evicted: nothing moves
    delta, _ = mrope_gap_deltas(anchor.view(1, 1, -1), advance.view(1, 1, -1))
    assert not delta.any()


# ------------------------------------------------------------------ exactness


def _run_prompts(model, cache, prompts):
    logits = []
    with torch.no_grad():
        for p in prompts:
            pos = cache.tag(p.modality, p.times, p.mrope)
            logits.append(model(**p.inputs, position_ids=pos, past_key_values=cache, use_cache=True).logits[0])
    return torch.cat(logits)


def _dynamic_cache_logits(model, ids, position_ids, videos):
    """The reference: the whole stream in one pass over a DynamicCache at the given positions, plain SDPA."""
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        return model(
            input_ids=ids, position_ids=position_ids, past_key_values=DynamicCache(config=model.config),
            pixel_values_videos=torch.cat([p.inputs["pixel_values_videos"] for p in videos]),
            video_grid_thw=torch.cat([p.inputs["video_grid_thw"] for p in videos]),
        ).logits[0]


def _stream_prompts(adapter, n_chunks=3):
    conv, prompts = Conversation(), []
    for i in range(n_chunks):
        p = adapter.chunk_prompt(_chunk(i, 4 if i < n_chunks - 1 else 3), conv)  # the last one odd: padded
        conv = p.after
        prompts.append(p)
    q = adapter.question_prompt("What is on the screen?", conv)
    prompts.append(q)
    return prompts, q.after


@pytest.mark.parametrize("policy", ["combined", "sink-recent"])
def test_budget_above_the_stream_gives_the_logits_of_dynamic_cache_with_get_rope_index(qwen, policy):
    model = qwen.model
    prompts, conv = _stream_prompts(qwen)
    answer = qwen.tokenizer("a red square", add_special_tokens=False)["input_ids"]
    end = qwen.answer_end(conv)
    use_window_attention(model)
    cache = KVWindowCache(model.config, WindowConfig(policy=policy, budget=200))
    got = _run_prompts(model, cache, prompts)
    with torch.no_grad():  # decode the answer one token at a time, positions from the cache
        for tok in answer:
            pos = cache.tag(torch.zeros(1))
            got = torch.cat([got, model(input_ids=torch.tensor([[tok]]), position_ids=pos, past_key_values=cache).logits[0]])
    got = torch.cat([got, _run_prompts(model, cache, [end])])

    ids = torch.cat([p.input_ids for p in prompts] + [torch.tensor([answer]), end.input_ids], dim=1)
    videos = [p for p in prompts if "video_grid_thw" in p.inputs]
    grid = torch.cat([p.inputs["video_grid_thw"] for p in videos])
    types = (ids == model.config.video_token_id).int() * 2  # mm_token_type_ids: video = 2
    pos, _ = model.model.get_rope_index(ids, types, video_grid_thw=grid, second_per_grid_ts=torch.full((3,), 8.0))
    # frames 1 s apart, temporal patches of 2 -> 2 s per patch; the helper takes seconds x tokens_per_second
    pos2, _ = model.model.get_rope_index(ids, types, video_grid_thw=grid, second_per_grid_ts=torch.full((3,), 2.0))
    assert not torch.equal(pos, pos2)  # the time spacing matters, so the next line checks it
    want = _dynamic_cache_logits(model, ids, pos2, videos)
    assert cache.stats()["evicted"] == 0 and got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert cache.next_position() == int(pos2.max()) + 1  # the stream ends in text: next = last + 1


# ------------------------------------------------------------------ bounded


def test_a_stream_four_times_longer_than_the_positions_runs_with_bounded_positions(qwen):
    max_pos = qwen.model.config.get_text_config().max_position_embeddings
    session = StreamSession(qwen, WindowConfig(policy="combined", budget=96))
    i = 0
    while session.cache.stats()["seen_tokens"] < 4 * max_pos:
        session.ingest(_chunk(i, n=8, seed=1, step=8))  # 4 temporal patches: fewer, larger passes
        assert session.cache.next_position() < max_pos // 2
        i += 1
        if i % 6 == 0:
            answer = session.answer("What changed?", max_new_tokens=4)
            assert isinstance(answer, str)
    logits = session._forward(qwen.question_prompt("And now?", session.conv))
    assert torch.isfinite(logits).all()
    stats = session.cache.stats()
    assert stats["seen_tokens"] >= 4 * max_pos and max(stats["tokens_per_layer"]) <= 96
    assert stats["evicted"] > 0


EVICTING = [p for p in POLICIES if p != "full"]


@pytest.mark.parametrize(  # every policy and every merge mode at least once (the full grid is 4x longer)
    "policy, merge", [(p, MERGES[i % len(MERGES)]) for i, p in enumerate(EVICTING)] + [("combined", "none")]
)
def test_every_policy_and_merge_mode_stays_within_budget(qwen, policy, merge):
    session = StreamSession(qwen, WindowConfig(policy=policy, budget=64, merge=merge))
    for i in range(6):
        session.ingest(_chunk(i, seed=2))
        assert max(session.cache.stats()["tokens_per_layer"]) <= 64
    answer = session.answer("Which colour?", max_new_tokens=3)
    stats = session.cache.stats()
    assert max(stats["tokens_per_layer"]) <= 64 and stats["evicted"] > 0 and isinstance(answer, str)
    for layer in session.cache.layers:  # kept blocks laid out from 0, in stream order, inside the next position
        assert int(layer.anchor.min()) >= 0 and (layer.anchor.diff(dim=-1) >= 0).all()
        assert layer.end <= session.cache.next_position()


def test_generate_runs_past_the_budget(qwen):
    model = qwen.model
    prompts, _ = _stream_prompts(qwen, n_chunks=4)
    ids = torch.cat([p.input_ids for p in prompts], dim=1)
    videos = [p for p in prompts if "video_grid_thw" in p.inputs]
    use_window_attention(model)
    cache = KVWindowCache(model.config, WindowConfig(policy="combined", budget=48))
    cache.tag(torch.cat([p.modality for p in prompts]), torch.cat([p.times for p in prompts]))
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, past_key_values=cache, max_new_tokens=40, min_new_tokens=40, do_sample=False,
            pixel_values_videos=torch.cat([p.inputs["pixel_values_videos"] for p in videos]),
            video_grid_thw=torch.cat([p.inputs["video_grid_thw"] for p in videos]),
            mm_token_type_ids=(ids == model.config.video_token_id).int() * 2,
        )  # fmt: skip
    assert out.shape[1] == ids.shape[1] + 40 and ids.shape[1] > 48
    stats = cache.stats()
    assert max(stats["tokens_per_layer"]) <= 48 and stats["evicted"] >= ids.shape[1] + 40 - 48 - 1
    assert cache.next_position() < ids.shape[1]  # positions were compacted, not grown with the tokens


def test_layout_is_text_positions_for_plain_text_and_validated():
    layout = MRopeLayout.text(3)
    assert layout.position_ids.tolist() == [[0, 1, 2]] * 3 and layout.length == 3
    with pytest.raises(ValueError):
        MRopeLayout(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long))


def test_chunk_prompt_is_one_video_block_with_the_official_token_count(qwen):
    p = qwen.chunk_prompt(_chunk(0, n=3, hw=(50, 70)), Conversation())
    h, w = qwen.frame_hw(50, 70)
    assert (h, w) == (48, 64)  # multiples of patch x merge = 16, the aspect kept
    n_video = int((p.input_ids == qwen.image_token_id).sum())
    assert n_video == 2 * (h // 8) * (w // 8) // 4  # 3 frames -> 2 temporal patches
    assert p.inputs["video_grid_thw"].tolist() == [[2, h // 8, w // 8]]
    text = qwen.tokenizer.decode(p.input_ids[0])
    assert text.count("<|vision_start|>") == 1 and text.endswith("<|vision_end|>")
    assert p.mrope.length == p.mrope.anchor[-1] + 1 and not math.isnan(float(p.times[-1]))


# ------------------------------------------------------------------ Qwen3-VL (interleaved M-RoPE, one block per frame pair)


def test_qwen3_vl_budget_above_the_stream_gives_the_logits_of_dynamic_cache_with_get_rope_index(qwen3):
    model = qwen3.model
    prompts, _ = _stream_prompts(qwen3)
    use_window_attention(model)
    cache = KVWindowCache(model.config, WindowConfig(policy="combined", budget=200))
    got = _run_prompts(model, cache, prompts)
    ids = torch.cat([p.input_ids for p in prompts], dim=1)
    videos = [p for p in prompts if "video_grid_thw" in p.inputs]
    grid = torch.cat([p.inputs["video_grid_thw"] for p in videos])
    pos, _ = model.model.get_rope_index(ids, (ids == model.config.video_token_id).int() * 2, video_grid_thw=grid)
    want = _dynamic_cache_logits(model, ids, pos, videos)
    assert cache.stats()["evicted"] == 0
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_qwen3_vl_stream_past_the_positions_stays_within_budget(qwen3):
    max_pos = qwen3.model.config.get_text_config().max_position_embeddings
    session = StreamSession(qwen3, WindowConfig(policy="combined", budget=96, merge="pivot"))
    i = 0
    while session.cache.stats()["seen_tokens"] < 2 * max_pos:
        session.ingest(_chunk(i, seed=3))
        i += 1
        assert session.cache.next_position() < max_pos // 2
    assert isinstance(session.answer("What is it?", max_new_tokens=3), str)
    assert max(session.cache.stats()["tokens_per_layer"]) <= 96
