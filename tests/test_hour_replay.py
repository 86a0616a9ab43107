"""The promise users asked for by name: an hour of video costs the same KV memory as a minute."""

import pytest

from streamer.models.registry import load_model
from streamer.frames import SamplerConfig, iter_chunks
from streamer.kv_window import WindowConfig
from streamer.world.sample_video import write_sample
from streamer.session import StreamSession

MB = 1 << 20


@pytest.fixture(scope="module")
def hour_video(tmp_path_factory):
    # one frame per second keeps the file and its encoding small; the sampler still decodes a real H.264 file
    return write_sample(tmp_path_factory.mktemp("hour") / "hour.mp4", seconds=3600, fps=1, frame_size=96)


def test_hour_long_replay_keeps_memory_flat(hour_video):
    # every frame fed (skip=None): the cache's worst case, 3,600 frames through a 192-token budget
    session = StreamSession(load_model("tiny-random"), WindowConfig(policy="combined", budget=192), skip=None)
    trace = []  # (video time, kv bytes, rss)
    for chunk in iter_chunks(str(hour_video), SamplerConfig(fps=1.0, max_side=96, chunk_frames=8)):
        session.ingest(chunk)
        s = session.stats()
        trace.append((s["video_time_s"], s["kv_bytes"], s["rss_bytes"]))
    budget_bytes = session.stats()["budget_bytes"]

    assert session.frames_ingested == 3600
    assert trace[-1][0] == pytest.approx(3599, abs=1)
    assert max(kv for _, kv, _ in trace) <= budget_bytes
    warm = next(i for i, (_, kv, _) in enumerate(trace) if kv == budget_bytes)
    assert trace[warm][0] < 600  # the budget fills within the first minutes
    assert {kv for _, kv, _ in trace[warm:]} == {budget_bytes}  # exactly flat afterwards

    rss_at = lambda minute: next(rss for t, _, rss in trace if t >= minute * 60)  # noqa: E731
    growth = trace[-1][2] - rss_at(10)
    assert growth < 30 * MB, f"RSS grew {growth / MB:.1f} MB between minute 10 and minute 60"

    answer = session.answer("What happened in the last minute?", max_new_tokens=8)
    assert answer and session.history[-1].answer == answer
    assert session.stats()["kv_bytes"] <= budget_bytes
