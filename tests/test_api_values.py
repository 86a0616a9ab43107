"""Public constructors and methods refuse a wrong type or range with a ConfigError naming the field
(issue 42, class 4). Each case below raised a bare ValueError, TypeError, OverflowError or torch's
"probability tensor contains inf/nan" (or was accepted silently) before the shared `check_number`."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamer.video.skip import SkipConfig
from streamer.errors import ConfigError, check_number
from streamer.frames import Chunk, LagMeter, SamplerConfig
from streamer.kv_window import WindowConfig
from streamer.models.registry import load_model
from streamer.session import StreamSession
from streamer.video.frame import Frame, PushSource

IMAGE = np.full((32, 32, 3), 90, np.uint8)
BAD_TIMES = [math.nan, math.inf, -math.inf, -1.0, 1e300, "3", None, True]


@pytest.fixture(scope="module")
def adapter():
    return load_model("tiny-random")


@pytest.fixture
def session(adapter):
    return StreamSession(adapter, WindowConfig(policy="combined", budget=256), skip=None)


@pytest.mark.parametrize("time_s", BAD_TIMES)
def test_a_frame_time_that_is_not_a_time_is_refused(time_s):
    with pytest.raises(ConfigError, match="Frame.time_s"):
        Frame(IMAGE, time_s)


@pytest.mark.parametrize("time_s", [math.nan, math.inf, -5.0, "x", 1e300])
def test_a_pushed_frame_time_that_is_not_a_time_is_refused_and_the_source_goes_on(time_s):
    source = PushSource(max_pending=4)
    assert source.push(IMAGE, 1.0)
    with pytest.raises(ConfigError, match="time_s"):
        source.push(IMAGE, time_s)
    assert source.push(IMAGE, 2.0)  # the refused frame changed nothing
    source.close()
    assert [f.time_s for f in source] == [1.0, 2.0]


@pytest.mark.parametrize("kwargs, field", [
    ({"max_pending": 2.5}, "max_pending"), ({"max_pending": 0}, "max_pending"), ({"max_pending": "8"}, "max_pending"),
])
def test_push_source_settings_are_checked(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        PushSource(**kwargs)


def test_a_pushed_image_of_the_wrong_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="uint8 RGB"):
        PushSource().push(np.zeros((4, 4, 3), np.float64), 0.0)


@pytest.mark.parametrize("kwargs, field", [
    ({"max_gap_s": "10"}, "max_gap_s"), ({"min_area": math.nan}, "min_area"), ({"level": None}, "level"),
    ({"cells": 8.0}, "cells"), ({"min_area": True}, "min_area"),
])
def test_skip_settings_are_checked(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        SkipConfig(**kwargs)


@pytest.mark.parametrize("kwargs, field", [
    ({"fps": "1"}, "fps"), ({"start_s": "0"}, "start_s"), ({"end_s": math.inf}, "end_s"),
    ({"chunk_frames": None, "chunk_seconds": "2"}, "chunk_seconds"), ({"realtime": "yes"}, "realtime"),
    ({"max_side": 384.0}, "max_side"),
])
def test_sampler_settings_are_checked(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        SamplerConfig(**kwargs)


@pytest.mark.parametrize("kwargs, field", [({"fps": 0}, "fps"), ({"fps": 1, "warn_s": math.nan}, "warn_s")])
def test_lag_meter_settings_are_checked(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        LagMeter(**kwargs)


@pytest.mark.parametrize("frames, index, field", [
    (["not a frame"], 0, "Chunk.frames"), ("frames", 0, "Chunk.frames"), ((), -1, "Chunk.index"), ((), 1.5, "Chunk.index"),
])
def test_a_chunk_holds_frames(frames, index, field):
    with pytest.raises(ConfigError, match=field):
        Chunk(frames, index)


@pytest.mark.parametrize("kwargs, field", [
    ({"window": "combined"}, "window"), ({"window": {"budget": 64}}, "window"), ({"skip": 0.04}, "skip"),
])
def test_a_session_takes_its_settings_as_config_objects(adapter, kwargs, field):
    with pytest.raises(ConfigError, match=field):
        StreamSession(adapter, **kwargs)


def test_ingest_takes_a_chunk_and_a_refusal_keeps_the_session(session):
    session.ingest(Chunk((Frame(IMAGE, 0.0),)))
    before = session.stats()
    with pytest.raises(ConfigError, match="Chunk"):
        session.ingest([Frame(IMAGE, 1.0)])
    with pytest.raises(ConfigError, match="window"):
        session.reset("saddle")
    after = session.stats()
    assert after["frames_ingested"] == before["frames_ingested"] == 1
    assert after["kv_bytes"] == before["kv_bytes"] > 0


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-40])
def test_a_tiny_temperature_samples_the_greedy_answer(adapter, temperature):
    greedy = StreamSession(adapter, WindowConfig(policy="combined", budget=256), skip=None)
    tiny = StreamSession(adapter, WindowConfig(policy="combined", budget=256), skip=None)
    expected = greedy.answer("What is on screen?", max_new_tokens=6)
    assert tiny.answer("What is on screen?", max_new_tokens=6, temperature=temperature) == expected


@pytest.mark.parametrize("temperature", [math.nan, math.inf, -1, "0.5", True])
def test_a_temperature_that_is_not_one_is_refused_before_the_cache_moves(session, temperature):
    before = session.cache.next_position()
    with pytest.raises(ConfigError, match="temperature"):
        session.ask("What is on screen?", temperature=temperature)
    assert session.cache.next_position() == before and session.history == []


def test_check_number_names_the_field_and_the_range():
    assert check_number("x", np.float32(0.5), 0, 1) == np.float32(0.5)
    assert check_number("x", None, 0, none_ok=True) is None
    with pytest.raises(ConfigError, match=r"^budget must be an integer >= 8, got 2.5$"):
        check_number("budget", 2.5, 8, integer=True)
    with pytest.raises(ConfigError, match=r"level must be a finite number > 0 and < 1, got 1"):
        check_number("level", 1, 0, 1, low_open=True, high_open=True)


@pytest.mark.parametrize("kwargs, field", [
    ({"fps": "1"}, "fps"), ({"max_side": 384.0}, "max_side"), ({"idle_timeout_s": None}, "idle_timeout_s"),
    ({"reconnect_grace_s": math.nan}, "reconnect_grace_s"), ({"skip": 0.04}, "skip"), ({"realtime": "no"}, "realtime"),
    ({"max_sessions_per_client": 99}, "max_sessions_per_client"),
])
def test_ui_settings_are_checked(kwargs, field):
    from streamer.app.state import UiSettings

    with pytest.raises(ConfigError, match=field):
        UiSettings(**kwargs)
