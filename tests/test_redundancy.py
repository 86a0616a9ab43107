"""Redundancy-aware streaming: the cache's temporal-redundancy signal (`WindowConfig.redundancy`) and the
skip of unchanged frames before the model, on by default (`streamer.change`). Properties, parametrized over the
policies like the other cache tests; random tensors, tiny random models, frames made in the test."""

import numpy as np
import pytest
import torch

from streamer.change import SkipConfig, StaticSkipper, changed_area, signature
from streamer.errors import ConfigError
from streamer.frames import Chunk
from streamer.kv_scoring import frame_redundancy
from streamer.kv_window import POLICIES, KVWindowCache, WindowConfig
from streamer.models.registry import load_model
from streamer.session import StreamSession
from streamer.sources import Frame
from streamer.vocab import Modality
from streamer.world.scene import Realism, random_script

from test_kv_window import tiny_config

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


def world_chunks(seconds: int = 24, per_chunk: int = 4):
    script = random_script(5, duration_s=seconds, n_events=2, event_s=(3, 4))
    frames = list(script.frames(1.0))
    return script, [Chunk(tuple(frames[i:i + per_chunk]), i // per_chunk) for i in range(0, len(frames), per_chunk)]


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


# ---- skipping unchanged frames before the model -------------------------------------------------------


def noisy(image: np.ndarray, rng: np.random.Generator, noise: float = 6.0, gain: float = 1.0) -> np.ndarray:
    return np.clip(image.astype(np.float32) * gain + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("camera", ["added here", "world"])
def test_noise_flicker_pans_and_the_drifting_ball_are_not_change_but_an_object_is(camera):
    # "world": the synthetic world's own sensor noise, flicker and a textured background panning 2 px/s
    realism = Realism(noise_std=6.0, flicker=0.05, texture=20.0, pan_px_s=2.0) if camera == "world" else None
    script = random_script(11, duration_s=30, n_events=1, event_s=(4, 4), realism=realism)
    event = script.events[0]
    rng = np.random.default_rng(0)
    skipper = StaticSkipper()
    kept = []
    for f in script.frames(1.0):
        image = noisy(f.image, rng, gain=1.0 + 0.05 * np.sin(f.time_s)) if realism is None else f.image  # noise, 5% flicker
        kept.append((f.time_s, skipper.keep(Frame(image, f.time_s))))
    fed = [t for t, k in kept if k]
    assert fed[0] == 0.0
    assert event.start_s in fed and any(t >= event.end_s for t in fed)  # it came, it went: both fed
    assert skipper.skipped >= len(kept) - 8  # the rest (empty background, ball drifting) mostly skipped
    assert all(b - a <= SkipConfig().max_gap_s for a, b in zip(fed, fed[1:]))  # time still moves on


def test_a_frame_that_changes_is_never_skipped():
    rng = np.random.default_rng(1)
    skipper = StaticSkipper()
    base = np.full((96, 96, 3), 200, np.uint8)
    assert skipper.keep(Frame(base, 0.0))
    for t in range(1, 20):
        image = base.copy()
        y, x = rng.integers(0, 60, 2)
        image[y:y + 30, x:x + 30] = (200, 30, 30)  # a square at a new place every frame
        assert skipper.keep(Frame(image, float(t)))
        assert not skipper.keep(Frame(noisy(image, rng), t + 0.5))  # the same picture again, with sensor noise
    assert skipper.skipped == 19


@pytest.mark.parametrize("side, first_fed", [(0.10, 10), (0.15, 10), (0.25, 1)])
def test_a_small_object_that_stays_reaches_the_model_within_the_gap(side, first_fed):
    """The skip's known blind spot (an object under its area) costs at most `max_gap_s` of delay."""
    cfg = SkipConfig()
    skipper = StaticSkipper(cfg)
    base = np.full((192, 192, 3), 120, np.uint8)
    assert skipper.keep(Frame(base, 0.0))
    with_object = base.copy()
    s = int(192 * side)
    with_object[50:50 + s, 50:50 + s] = (230, 40, 40)  # appears at 1 s and stays
    fed = [t for t in range(1, 30) if skipper.keep(Frame(with_object, float(t)))]
    assert fed[0] == first_fed  # a large object at once, one under the area when the gap forces a frame
    assert all(b - a == cfg.max_gap_s for a, b in zip(fed, fed[1:]))  # then nothing changes: one every gap


def test_signature_cancels_a_global_gain():
    image = np.random.default_rng(2).integers(40, 200, (64, 64, 3)).astype(np.uint8)
    brighter = np.clip(image.astype(np.float32) * 1.1, 0, 255).astype(np.uint8)
    assert changed_area(signature(image, 24), signature(brighter, 24), 0.08) == 0.0


def test_skip_settings_are_checked():
    for kw in ({"min_area": 1.0}, {"level": 0}, {"max_gap_s": 0}, {"cells": 2}):
        with pytest.raises(ConfigError):
            SkipConfig(**kw)


def test_session_with_skip_feeds_fewer_frames_keeps_times_increasing_and_answers(adapter):
    script, chunks = world_chunks(24)
    session = StreamSession(adapter, WindowConfig(policy="combined", budget=512))  # the skip is on by default
    fed_times = []
    for c in chunks:
        before = session.frames_ingested
        session.ingest(c)
        fed_times += [None] * (session.frames_ingested - before)
    stats = session.stats()
    assert stats["frames_skipped"] > 0 and stats["frames_ingested"] + stats["frames_skipped"] == 24
    assert stats["skip_static"] == SkipConfig.min_area
    assert StreamSession(adapter, WindowConfig(policy="combined", budget=512), skip=None).stats()["skip_static"] is None
    assert session.video_time_s == 23.0  # time moved on to the last frame, fed or not
    lay = session.cache.layers[0]
    times = lay.times[0, 0][~lay.times[0, 0].isnan()]
    assert (times[1:] >= times[:-1]).all()  # the prompt's frame times only go forward
    assert session.answer("What is on screen?", max_new_tokens=3) is not None
    session.reset()
    assert session.stats()["frames_skipped"] == 0
    every = StreamSession(adapter, WindowConfig(policy="combined", budget=512), skip=None)  # None: feed them all
    for c in chunks:
        every.ingest(c)
    assert every.stats()["frames_skipped"] == 0 and every.frames_ingested == 24


def test_cli_flags_reach_the_session_and_bad_values_exit_2(tmp_path, capsys):
    from streamer.cli import main
    from streamer.world.sample_video import write_sample

    video = str(write_sample(tmp_path / "static.mp4", seconds=30, fps=2))
    common = [video, "--model", "tiny-random", "-q", "what?", "--json", "--max-new-tokens", "2", "--budget", "256"]
    for flags in ([], ["--skip-static", "--redundancy", "0.9"], ["--skip-static", "0.5"], ["--skip-static", "off"]):
        assert main(common + flags) == 0
        row = __import__("json").loads(capsys.readouterr().out.splitlines()[0])
        assert row["frames_ingested"] + row["frames_skipped"] == 30 and row["video_time_s"] == pytest.approx(29.0, abs=0.6)
        if flags[-1:] == ["off"]:  # every sampled frame fed
            assert row["skip_static"] is None and row["frames_skipped"] == 0
        else:  # on by default, and with the bare flag: the static stretches are not fed
            assert row["skip_static"] == (0.5 if "0.5" in flags else SkipConfig.min_area) and row["frames_ingested"] < 30
    assert row["redundancy"] == 0.9 and row["policy"] == "recall"  # the default policy
    for bad, says in ((["--skip-static", "1.5"], "[0, 1) or off"), (["--skip-static", "of"], "[0, 1) or off"),
                      (["--redundancy", "2"], "(-1, 1], off or policy"), (["--redundancy", "-1"], "(-1, 1], off or policy"),
                      (["--redundancy", "polcy"], "(-1, 1], off or policy")):
        with pytest.raises(SystemExit) as err:
            main([video, "--model", "tiny-random", *bad])
        assert err.value.code == 2 and f"must be a number in {says}, got" in capsys.readouterr().err


@pytest.mark.parametrize("settings, skips", [({}, True), ({"skip": None}, False)])
def test_ui_sessions_skip_unless_the_server_says_not_to(adapter, settings, skips):
    from streamer.app.registry import SessionRegistry
    from streamer.app.state import UiSettings

    registry = SessionRegistry(adapter, WindowConfig(budget=256), UiSettings(**settings))
    user = registry.get("static")
    _, chunks = world_chunks(24)
    for c in chunks:
        user.session.ingest(c)
    user.refresh_stats()
    assert (user.stats["frames_skipped"] > 0) == skips
    assert user.stats["frames_ingested"] + user.stats["frames_skipped"] == 24
    registry.drop("static")
