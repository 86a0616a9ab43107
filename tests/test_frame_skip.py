"""The frame skip (`streamer.video.skip`, on by default): frames that barely differ from the last one fed never reach
the model. Noise, flicker, pans and the drifting ball are not change, an object is; a small object that stays is
fed within the gap; the setting reaches the session from the CLI and the UI. Frames are made in the test."""

import numpy as np
import pytest

from streamer.video.skip import SkipConfig, FrameSkipper, changed_area, signature
from streamer.errors import ConfigError
from streamer.kv_window import WindowConfig
from streamer.models.registry import load_model
from streamer.session import StreamSession
from streamer.video.frame import Frame
from streamer.world.scene import Realism, random_script

from conftest import world_chunks


@pytest.fixture(scope="module")
def adapter():
    return load_model("tiny-random")


def noisy(image: np.ndarray, rng: np.random.Generator, noise: float = 6.0, gain: float = 1.0) -> np.ndarray:
    return np.clip(image.astype(np.float32) * gain + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("camera", ["added here", "world"])
def test_noise_flicker_pans_and_the_drifting_ball_are_not_change_but_an_object_is(camera):
    # "world": the synthetic world's own sensor noise, flicker and a textured background panning 2 px/s
    realism = Realism(noise_std=6.0, flicker=0.05, texture=20.0, pan_px_s=2.0) if camera == "world" else None
    script = random_script(11, duration_s=30, n_events=1, event_s=(4, 4), realism=realism)
    event = script.events[0]
    rng = np.random.default_rng(0)
    skipper = FrameSkipper()
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
    skipper = FrameSkipper()
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
    skipper = FrameSkipper(cfg)
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
    from streamer.app.sessions import SessionRegistry
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
