"""The cache's temporal-redundancy signal (`WindowConfig.redundancy`): properties, parametrized over the policies
like the other cache tests; random tensors, a tiny random model. The skip of unchanged frames before the model is
tests/test_frame_skip.py."""

import numpy as np
import pytest
import torch

from streamer.errors import ConfigError
from streamer.kv_scoring import frame_redundancy
from streamer.kv_window import POLICIES, KVWindowCache, WindowConfig
from streamer.models.registry import load_model
from streamer.session import StreamSession
from streamer.shared_types import Modality

from conftest import tiny_config, world_chunks

EVICTING = [p for p in POLICIES if p != "full"]
P, H, D = 8, 2, 16  # image tokens per frame, KV heads, head dim


class FrameStream:
    """Appends text and frames (1 timestamp token + P image tokens) to a cache the way a model does."""

    def __init__(self, cache: KVWindowCache, seed: int = 0):
        self.cache, self.gen = cache, torch.Generator().manual_seed(seed)

    def _append(self, kv: torch.Tensor, modality: torch.Tensor, times: torch.Tensor) -> None:
        self.cache.tag(modality, times)
        for i, layer in enumerate(self.cache.layers):
            self.cache.update(kv, kv.clone(), i)  # keys = values: a repeat is a repeat for both
            layer.observe(torch.randn(1, 2 * H, kv.shape[2], D, generator=self.gen), D**-0.5)

    def text(self, n: int) -> None:
        self._append(torch.randn(1, H, n, D, generator=self.gen), torch.full((n,), int(Modality.TEXT)),
                     torch.full((n,), float("nan")))

    def frame(self, image: torch.Tensor, t: float) -> None:
        """image: (1, H, P, D) the frame's image-token values."""
        stamp = torch.randn(1, H, 1, D, generator=self.gen)
        modality = torch.tensor([int(Modality.OTHER)] + [int(Modality.IMAGE)] * P)
        self._append(torch.cat([stamp, image], dim=2), modality, torch.full((P + 1,), t))

    def new_image(self) -> torch.Tensor:
        return torch.randn(1, H, P, D, generator=self.gen)


def kept_times(cache: KVWindowCache, layer: int = 0) -> set[float]:
    lay = cache.layers[layer]
    t = lay.times[0][(lay.modality[0] == Modality.IMAGE)]
    return {round(float(x), 3) for x in t}


@pytest.mark.parametrize("policy", EVICTING)
def test_identical_consecutive_frames_are_evicted_before_distinct_ones(policy):
    n_text, frame_tokens = 4, P + 1
    # A A A B B C: the repeats (three frames) must go first, whatever the policy would otherwise keep
    budget = n_text + 3 * frame_tokens
    cache = KVWindowCache(tiny_config(num_hidden_layers=1), WindowConfig(policy=policy, budget=budget, n_sink=4,
                                                                         recent=4, redundancy=0.95, merge="none"))
    stream = FrameStream(cache)
    stream.text(n_text)
    a, b, c = stream.new_image(), stream.new_image(), stream.new_image()
    for t, image in enumerate([a, a, a, b, b, c]):
        stream.frame(image, float(t))
    assert cache.layers[0].get_seq_length() <= budget
    assert kept_times(cache) == {0.0, 3.0, 5.0}  # the first A, the first B, C: every distinct frame once
    # the timestamp tokens of the repeated frames went with them
    lay = cache.layers[0]
    assert set(lay.times[0][lay.modality[0] == Modality.OTHER].tolist()) == {0.0, 3.0, 5.0}


@pytest.mark.parametrize("policy", EVICTING)
def test_without_the_signal_the_policy_decides(policy):
    """Control: the same stream without `redundancy` keeps some repeat (sink-recent: the newest frames)."""
    budget = 4 + 3 * (P + 1)
    cache = KVWindowCache(tiny_config(num_hidden_layers=1), WindowConfig(policy=policy, budget=budget, n_sink=4,
                                                                         recent=4, merge="none"))
    stream = FrameStream(cache)
    stream.text(4)
    a, b, c = stream.new_image(), stream.new_image(), stream.new_image()
    for t, image in enumerate([a, a, a, b, b, c]):
        stream.frame(image, float(t))
    if policy == "sink-recent":
        assert kept_times(cache) == {3.0, 4.0, 5.0}


@pytest.mark.parametrize("policy", EVICTING)
def test_a_token_that_differs_from_its_neighbours_survives(policy):
    budget = 4 + 2 * (P + 1) + 2 - P  # room for everything but the second frame's P - 1 repeats and its timestamp
    cache = KVWindowCache(tiny_config(num_hidden_layers=1), WindowConfig(policy=policy, budget=budget,
                                                                         n_sink=4, recent=1, redundancy=0.95, merge="none"))  # fmt: skip
    stream = FrameStream(cache)
    stream.text(4)
    a = stream.new_image()
    changed = a.clone()
    changed[:, :, 5] = torch.randn(1, H, D, generator=torch.Generator().manual_seed(9))  # one token moved
    stream.frame(a, 0.0)
    stream.frame(changed, 1.0)
    stream.text(2)  # a question (2 tokens: 1 would be a decoding step, cut deeper by decode_slack)
    lay = cache.layers[0]
    second = (lay.times[0] == 1.0) & (lay.modality[0] == Modality.IMAGE)  # (H, T)
    assert (second.sum(-1) == 1).all()  # only one image token of the second frame is left, in every head
    assert torch.allclose(lay.values[0][second].view(H, D), changed[0, :, 5])  # and it is the changed one
    assert ((lay.times[0] == 0.0) & (lay.modality[0] == Modality.IMAGE)).sum(-1).eq(P).all()  # first frame whole
    # one changed place of eight does not make the frame's timestamp new: it went with the repeats
    assert not ((lay.times[0] == 1.0) & (lay.modality[0] == Modality.OTHER)).any()


@pytest.mark.parametrize("policy", EVICTING)
@pytest.mark.parametrize("merge", ["none", "pivot"])
def test_budget_never_exceeded_with_the_signal(policy, merge):
    cache = KVWindowCache(tiny_config(), WindowConfig(policy=policy, budget=64, n_sink=4, recent=8, redundancy=0.9,
                                                      merge=merge))  # fmt: skip
    stream = FrameStream(cache, seed=3)
    rng = np.random.default_rng(0)
    image = stream.new_image()
    for t in range(60):
        if rng.random() < 0.3:
            image = stream.new_image()  # a scene change now and then; otherwise the same frame again
        stream.frame(image + 0.01 * torch.randn(image.shape, generator=stream.gen), float(t))
        if t % 10 == 9:
            stream.text(5)
        for lay in cache.layers:
            assert lay.get_seq_length() <= 64 and lay.similar.shape == lay.times.shape


def test_frame_redundancy_matches_places_and_the_timestamp_follows_its_frame():
    values = torch.randn(1, H, 2 * (P + 1), D)
    values[:, :, P + 2:] = values[:, :, 1:P + 1]  # the second frame repeats the first
    times = torch.tensor([0.0] * (P + 1) + [1.0] * (P + 1))
    is_image = torch.tensor(([False] + [True] * P) * 2)
    sim, last = frame_redundancy(values, times, is_image, None)
    assert torch.allclose(sim[:, :, P + 2:], torch.ones(1, H, P)) and (sim[:, :, : P + 1] == 0).all()
    assert torch.allclose(sim[:, :, P + 1], torch.ones(1, H))  # the repeated frame's timestamp: its image similarity
    assert torch.equal(last, values[:, :, P + 2:])
    # the next append's first frame is compared with the last frame of this one
    sim2, _ = frame_redundancy(values[:, :, : P + 1], times[: P + 1] + 2, is_image[: P + 1], last)
    assert torch.allclose(sim2[:, :, 1:], torch.ones(1, H, P))
    # image tokens with no video time (an image in the conversation, not a frame) are never repeats
    untimed, kept = frame_redundancy(values, torch.full_like(times, float("nan")), is_image, last)
    assert (untimed == 0).all() and kept is last


@pytest.mark.parametrize("changed", [0, 1, P // 4, P // 2, P])
def test_a_frame_text_is_new_once_a_quarter_of_its_image_changed(changed):
    """The timestamp takes the lower quartile of its image tokens' similarities: camera noise or a distractor
    on one place does not keep every frame's text, a quarter of the frame changing does."""
    gen = torch.Generator().manual_seed(changed)
    first = torch.randn(1, H, P + 1, D, generator=gen)
    second = first.clone()
    second[:, :, 1:changed + 1] = torch.randn(1, H, changed, D, generator=gen)  # `changed` places differ
    times = torch.tensor([0.0] * (P + 1) + [1.0] * (P + 1))
    is_image = torch.tensor(([False] + [True] * P) * 2)
    sim, _ = frame_redundancy(torch.cat([first, second], dim=2), times, is_image, None)
    stamp = sim[:, :, P + 1]  # (1, H)
    image = sim[:, :, P + 2:]  # (1, H, P)
    assert (image[..., :changed] < 0.9).all() and torch.allclose(image[..., changed:], torch.ones(1, H, P - changed))
    if changed < P // 4:
        assert torch.allclose(stamp, torch.ones(1, H))  # a repeat
    else:
        assert (stamp < 0.9).all()  # new


def test_redundancy_setting_is_checked():
    with pytest.raises(ConfigError, match="redundancy"):
        WindowConfig(redundancy=1.5)
    with pytest.raises(ConfigError, match="redundancy"):
        WindowConfig(redundancy="on")


def test_combined_uses_the_signal_by_default_and_every_policy_can_turn_it_on_or_off():
    import argparse
    import dataclasses

    from streamer.options import add_cache_options, window_config

    assert WindowConfig(policy="combined").resolved.redundancy == 0.9  # measured better (BENCHMARKS.md section 11)
    for policy in ("sink-recent", "saddle", "text-prior", "full"):
        assert WindowConfig(policy=policy, budget=None if policy == "full" else 64).resolved.redundancy is None
    assert WindowConfig(policy="combined", redundancy=None).resolved.redundancy is None
    assert WindowConfig(policy="saddle", redundancy=0.8).resolved.redundancy == 0.8
    off = WindowConfig(policy="combined", redundancy=None)
    assert dataclasses.replace(off, merge="none").resolved.redundancy is None  # a resolved "off" stays off
    p = argparse.ArgumentParser()
    add_cache_options(p)
    assert window_config(p.parse_args([])).resolved.redundancy == 0.9
    assert window_config(p.parse_args(["--redundancy", "off"])).resolved.redundancy is None
    assert window_config(p.parse_args(["--policy", "saddle"])).resolved.redundancy is None
    assert window_config(p.parse_args(["--policy", "saddle", "--redundancy", "0.95"])).resolved.redundancy == 0.95


# ---- through a real (tiny random) model --------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter():
    return load_model("tiny-random")


@pytest.mark.parametrize("policy", EVICTING)
def test_budget_above_the_stream_gives_the_full_cache_logits(adapter, policy):
    """The signal only reorders evictions: with nothing to evict, the answer's logits are the full cache's."""
    _, chunks = world_chunks(12)
    logits = []
    for window in (WindowConfig(policy="full", budget=None), WindowConfig(policy=policy, budget=1900, redundancy=0.9)):
        session = StreamSession(adapter, window, skip=None)  # every frame fed
        for c in chunks:
            session.ingest(c)
        logits.append(session._forward(session._question_prompt("What is on screen?", 4)))
        assert session.cache.stats()["evicted"] == 0
    torch.testing.assert_close(logits[1], logits[0], atol=1e-5, rtol=0)
