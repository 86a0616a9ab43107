"""The overlapped stages (`streamer.pipeline`): same answers and cache as the serial loop on a file, questions see
only the frames before their time, errors reach the caller, and a live source that the model cannot keep up with
drops frames (counted) at a rate that keeps up."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from conftest import assert_same_state, cache_state
from streamer.errors import ConfigError, SourceError
from streamer.frames import SamplerConfig, chunks_and_stops, sample_frames
from streamer.kv_window import WindowConfig
from streamer.models.registry import load_model
from streamer.pipeline import Pipeline, _Queue
from streamer.session import StreamSession
from streamer.shared_types import PreparedChunk
from streamer.video.frame import Chunk, Frame


@pytest.fixture(scope="module")
def adapter():
    return load_model("tiny-random")


def _session(adapter) -> StreamSession:
    return StreamSession(adapter, WindowConfig(policy="combined", budget=200))


def _frames(n: int, step: float = 1.0, moving: bool = True):
    rng = np.random.default_rng(0)
    still = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    for i in range(n):  # every third frame repeats the one before (the skip holds it back)
        image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) if moving and i % 3 else still
        yield Frame(image, i * step)


def test_a_file_through_the_pipeline_gives_the_serial_answers_and_cache(adapter, video):
    cfg = SamplerConfig(fps=2, chunk_frames=2)
    stops = [1.2, 2.6]
    serial, piped = _session(adapter), _session(adapter)
    answers = {"serial": [], "piped": []}
    for item in chunks_and_stops(sample_frames(video, cfg), cfg, stops):
        if isinstance(item, int):
            answers["serial"].append((serial.video_time_s, serial.answer(f"what at stop {item}?", 6)))
        else:
            serial.ingest(item)
    with Pipeline(piped, sample_frames(video, cfg), cfg, stops) as pipeline:
        for item in pipeline:
            if isinstance(item, int):
                # a question at a stop sees exactly the frames up to its time
                assert piped.video_time_s <= stops[item]
                answers["piped"].append((piped.video_time_s, piped.answer(f"what at stop {item}?", 6)))
            else:
                assert isinstance(item, PreparedChunk) and item.pixels is not None or not item.chunk.frames
                pipeline.ingested(item, piped.ingest(item))
    assert answers["piped"] == answers["serial"] and len(answers["serial"]) == 2
    assert piped.stats()["frames_skipped"] == serial.stats()["frames_skipped"]
    assert piped.frames_ingested == serial.frames_ingested > 0 and pipeline.frames_dropped == 0
    assert_same_state(cache_state(piped), cache_state(serial))


def test_prepared_chunks_equal_plain_ones_for_every_family():
    """The vision tower run ahead (`frame_inputs(..., encode=True)`) gives the cache the model's own pass gives."""
    for name in ("tiny-random-llava", "tiny-random-qwen"):
        adapter = load_model(name)
        plain, prepared = _session(adapter), _session(adapter)
        frames = list(_frames(6))
        for i in range(0, 6, 3):
            chunk = Chunk(tuple(frames[i:i + 3]), i // 3)
            plain.ingest(chunk)
            prepared.ingest(prepared.prepare(chunk))
        assert_same_state(cache_state(plain), cache_state(prepared))
        assert plain.answer("what?", 4) == prepared.answer("what?", 4)


def test_an_error_in_a_stage_reaches_the_caller_after_the_chunks_before_it(adapter):
    def broken():
        yield from _frames(4)
        raise SourceError("clip.mp4 is damaged or cut short")

    cfg = SamplerConfig(fps=1, chunk_frames=2)
    session, seen = _session(adapter), []
    with pytest.raises(SourceError, match="damaged or cut short"), Pipeline(session, broken(), cfg) as pipeline:
        for item in pipeline:
            seen.append(item.times)
            session.ingest(item)
    assert seen == [(0.0, 1.0), (2.0, 3.0)] and session.frames_ingested + session.frames_skipped == 4
    with pytest.raises(ConfigError):
        Pipeline(session, broken(), "1 fps")


def test_closing_stops_the_stages_of_an_endless_source(adapter):
    def endless():
        i = 0
        while True:
            yield Frame(np.zeros((16, 16, 3), np.uint8), float(i))
            i += 1

    pipeline = Pipeline(_session(adapter), endless(), SamplerConfig(fps=1, chunk_frames=1))
    first = next(iter(pipeline))
    assert first.times == (0.0,)
    pipeline.close(timeout=10)
    assert not any(t.is_alive() for t in pipeline._threads) and pipeline.session is None


def test_a_full_live_queue_drops_its_oldest_chunk_never_a_stop():
    queue = _Queue(2, threading.Event())
    chunk = lambda *times: Chunk(tuple(Frame(np.zeros((2, 2, 3), np.uint8), t) for t in times))  # noqa: E731
    queue.put(chunk(0, 1), drop_oldest=True)
    queue.put(0, drop_oldest=True)  # a stop
    queue.put(chunk(2), drop_oldest=True)  # full: the oldest chunk (two frames) goes
    assert queue.dropped == 2
    assert [queue.get(), queue.get().times] == [0, [2]]


def test_a_live_source_is_sampled_at_the_rate_that_keeps_up_said_once(adapter, wall):
    """On the test's clock: a model at 2.5 s a frame is 2.5 s behind a 1 fps stream after its first frame (behind: 1 s
    or more); from then on the stream is sampled at 0.9 / 2.5 = 0.36 fps (said once), the frames passed over
    counted."""
    pipeline = Pipeline(_session(adapter), iter(()), SamplerConfig(fps=1, chunk_frames=1), live=True)
    said = []
    for i in range(4):
        wall.sleep(2.5)  # the model's time for this frame
        said.append(pipeline.ingested(PreparedChunk(Chunk(()), (float(i),), None, 0.0), 2.5))
    assert "2.50 s per frame, so this live stream is sampled at 0.36 fps instead of 1" in said[0]
    assert said[1:] == [None, None, None]  # said once
    assert pipeline.rate_fps == pytest.approx(0.36) and pipeline.lag_s == pytest.approx(7.0)
    kept = [f.time_s for f in pipeline._thin(Frame(np.zeros((2, 2, 3), np.uint8), float(t)) for t in range(10))]
    assert kept == [0, 3, 6, 9] and pipeline.frames_dropped == 6
    assert pipeline.live_stats() == {"lag_s": 7.0, "frames_dropped": 6, "sampling_fps": 0.36}
    pipeline.close(timeout=10)

def test_a_file_is_never_dropped_from_however_slow_the_model(adapter):
    cfg = SamplerConfig(fps=1, chunk_frames=1)
    session = _session(adapter)
    with Pipeline(session, _frames(6, moving=False), cfg) as pipeline:
        for item in pipeline:
            time.sleep(0.05)  # slower than the reader: it waits instead of dropping
            assert pipeline.ingested(item, session.ingest(item)) is None
    assert session.frames_ingested + session.frames_skipped == 6 and pipeline.frames_dropped == 0
