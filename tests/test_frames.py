"""The frame sampler on videos generated here: formats, backends, timestamps, resizing, errors, memory.

Every generated frame shows its own frame number as a 16-bit pattern of black/white cells in its top
half (the bottom half is pure red, to catch BGR/RGB mix-ups), so each test can check that the frame
returned for a time is the frame that the video shows at that time.
"""

from __future__ import annotations

import functools
import http.server
import logging
import math
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest

from streamer.video import opening
from streamer.errors import (
    ConfigError,
    NoFramesError,
    NotAVideoError,
    SourceNotFoundError,
    StreamerError,
    UnsupportedCodecError,
    WebcamError,
)
from streamer.frames import Chunk, SamplerConfig, chunk_frames, iter_chunks, open_source, sample_frames
from streamer.video.frame import Frame, PushSource

FPS, N, W, H = 30, 90, 96, 64  # the standard test clip: 3 s at 30 fps, 96x64
BACKENDS = ["decord", "pyav", "opencv"]
VFR_TIMES = [0.0, 0.1, 0.15, 0.5, 0.55, 0.6, 1.3, 1.31, 1.32, 2.0, 2.5, 2.9]  # irregular presentation times
MB = 1 << 20


def pattern(number: int, width: int = W, height: int = H) -> np.ndarray:
    """(height, width, 3) RGB frame showing `number` as 2 rows x 8 cells of bits, red below."""
    image = np.zeros((height, width, 3), np.uint8)
    image[height // 2 :] = (255, 0, 0)
    cell_h, cell_w = height / 4, width / 8
    for bit in range(16):
        if (number >> bit) & 1:
            r, c = divmod(bit, 8)
            image[round(r * cell_h) : round((r + 1) * cell_h), round(c * cell_w) : round((c + 1) * cell_w)] = 255
    return image


def frame_number(image: np.ndarray) -> int:
    """Read back the number drawn by `pattern` (cell centres only, so compression and resizing are fine)."""
    height, width = image.shape[:2]
    cell_h, cell_w = height / 4, width / 8
    number = 0
    for bit in range(16):
        r, c = divmod(bit, 8)
        y0, y1 = int((r + 0.3) * cell_h), max(int((r + 0.7) * cell_h), int((r + 0.3) * cell_h) + 1)
        x0, x1 = int((c + 0.3) * cell_w), max(int((c + 0.7) * cell_w), int((c + 0.3) * cell_w) + 1)
        if image[y0:y1, x0:x1, 1].mean() > 128:  # green is 0 in the red half and in black cells
            number |= 1 << bit
    return number


def assert_rgb_frame(frame: Frame, shape: tuple[int, int]):
    image = frame.image
    assert image.dtype == np.uint8 and image.shape == (*shape, 3) and image.flags.c_contiguous
    red = image[image.shape[0] * 3 // 4 :].reshape(-1, 3).mean(axis=0)  # lower quarter: pure red
    assert red[0] > 180 and red[1] < 70 and red[2] < 70, f"not RGB red: {red}"


def assert_on_grid(frames: list[Frame], fps: float, start: float, source_fps: float = FPS):
    """Frame k is the first source frame at or after tick start + k/fps, and shows that time."""
    for k, frame in enumerate(frames):
        tick = start + k / fps
        assert tick - 1e-3 <= frame.time_s < tick + 1 / source_fps, (k, frame.time_s)
        assert frame_number(frame.image) == round(frame.time_s * source_fps), (k, frame.time_s)


@pytest.fixture(scope="session")
def videos(video_dir: Path, video_writer, audio_writer) -> dict[str, Path]:
    """All small test videos, written once per session (about a second in total)."""
    d, write = video_dir, video_writer
    clip = [pattern(i) for i in range(N)]
    ten_s = [pattern(i) for i in range(10 * FPS)]
    v = {
        "h264.mp4": write(d / "h264.mp4", clip, fps=FPS, gop=15),
        "mpeg4.mp4": write(d / "mpeg4.mp4", clip, fps=FPS, codec="mpeg4", options={"qscale": "2"}),
        "h264.mkv": write(d / "h264.mkv", clip, fps=FPS, gop=15),
        "vp9.webm": write(d / "vp9.webm", clip, fps=FPS, codec="libvpx-vp9",
                          options={"deadline": "realtime", "cpu-used": "8"}),
        "vfr.mp4": write(d / "vfr.mp4", [pattern(i) for i in range(len(VFR_TIMES))], times=VFR_TIMES),
        "vfr.mkv": write(d / "vfr.mkv", [pattern(i) for i in range(len(VFR_TIMES))], times=VFR_TIMES),
        # H.264 in 4:2:0 refuses odd sizes (libx264 fails to open), so odd sizes use 4:4:4 and FFV1
        "odd.mp4": write(d / "odd.mp4", [pattern(i, 101, 37) for i in range(60)], pix_fmt="yuv444p"),
        "odd.mkv": write(d / "odd.mkv", [pattern(i, 101, 37) for i in range(60)], codec="ffv1", pix_fmt="yuv444p"),
        "portrait.mp4": write(d / "portrait.mp4", [pattern(i, 64, 96) for i in range(30)]),
        "one.mp4": write(d / "one.mp4", [pattern(0)]),
        "offset.mkv": write(d / "offset.mkv", clip[:30], times=[5 + i / FPS for i in range(30)]),
        "long.mp4": write(d / "long.mp4", ten_s, fps=FPS, gop=15),
        "long.mkv": write(d / "long.mkv", ten_s, fps=FPS, gop=15),
        "bframes.mp4": write(d / "bframes.mp4", ten_s, fps=FPS, gop=30, options={"preset": "veryfast"}),  # B-frames
        "faststart.mp4": write(d / "faststart.mp4", ten_s, fps=FPS, gop=15,
                               container_options={"movflags": "faststart"}),
        "audio.m4a": audio_writer(d / "audio.m4a"),
    }
    writer = cv2.VideoWriter(str(d / "mjpeg.avi"), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    for image in clip:
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()
    v["mjpeg.avi"] = d / "mjpeg.avi"
    cuts = [("trunc.mkv", "long.mkv", 0.6), ("trunc.mp4", "faststart.mp4", 0.6), ("cut_moov.mp4", "long.mp4", 0.6)]
    for name, source, keep in cuts:
        data = v[source].read_bytes()
        (d / name).write_bytes(data[: int(len(data) * keep)])  # the tail is cut off
        v[name] = d / name
    data = v["long.mkv"].read_bytes()
    (d / "header_only.mkv").write_bytes(data[: data.index(b"\x1f\x43\xb6\x75") + 20])  # cut in the first cluster
    v["header_only.mkv"] = d / "header_only.mkv"
    (d / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    v["random.mp4"] = d / "random.mp4"
    write(d / "fourcc.avi", clip[:10], codec="mpeg4")
    (d / "unknown_codec.avi").write_bytes((d / "fourcc.avi").read_bytes().replace(b"FMP4", b"ZZZZ"))
    v["unknown_codec.avi"] = d / "unknown_codec.avi"
    return v


# --- formats x backends: the right frame at the right time -------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["h264.mp4", "mpeg4.mp4", "h264.mkv", "vp9.webm", "mjpeg.avi"])
def test_every_backend_reads_every_format_on_the_time_grid(videos, name, backend):
    with open_source(videos[name], backend) as source:
        assert source.backend == backend
        assert (source.width, source.height) == (W, H)
        assert source.fps == pytest.approx(FPS, rel=0.01)
        assert source.duration_s == pytest.approx(N / FPS, abs=0.05)
        frames = list(sample_frames(source, SamplerConfig(fps=10, max_side=None)))
    assert len(frames) == 30
    assert_on_grid(frames, fps=10, start=0.0)
    for frame in frames:
        assert_rgb_frame(frame, (H, W))


@pytest.mark.parametrize("backend", BACKENDS)
def test_native_iteration_gives_every_frame_once_in_order(videos, backend):
    with open_source(videos["h264.mkv"], backend) as source:
        first = [(frame_number(f.image), f.time_s) for f in source]
        again = [(frame_number(f.image), f.time_s) for f in source]  # a file source can be read again
    assert [n for n, _ in first] == list(range(N))
    assert [t for _, t in first] == pytest.approx([i / FPS for i in range(N)], abs=1e-3)
    assert again == first


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["vfr.mp4", "vfr.mkv"])
def test_variable_frame_rate_keeps_true_times(videos, name, backend):
    with open_source(videos[name], backend) as source:
        native = list(source)
        sampled = list(sample_frames(source, SamplerConfig(fps=4, max_side=None)))
    assert [f.time_s for f in native] == pytest.approx(VFR_TIMES, abs=1e-3)
    assert [frame_number(f.image) for f in native] == list(range(len(VFR_TIMES)))
    # reference: for each tick k/4, the first frame at or after it; a frame counts once
    ticks = [k / 4 for k in range(math.ceil(VFR_TIMES[-1] * 4) + 1)]
    expected = sorted({next(t for t in VFR_TIMES if t >= tick) for tick in ticks if tick <= VFR_TIMES[-1]})
    assert [f.time_s for f in sampled] == pytest.approx(expected, abs=1e-3)
    assert [frame_number(f.image) for f in sampled] == [VFR_TIMES.index(t) for t in expected]


@pytest.mark.parametrize("backend", BACKENDS)
def test_start_and_end_select_a_window(videos, backend):
    cfg = SamplerConfig(fps=2, start_s=2.5, end_s=6.0, max_side=None, backend=backend)
    frames = list(sample_frames(str(videos["long.mp4"]), cfg))
    assert len(frames) == 7  # ticks 2.5, 3.0, ..., 5.5
    assert_on_grid(frames, fps=2, start=2.5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["long.mp4", "long.mkv"])
def test_sparse_sampling_skips_frames_cheaply(videos, name, backend):
    with open_source(videos[name], backend) as source:
        frames = list(sample_frames(source, SamplerConfig(fps=0.5, max_side=None)))
        decoded = source.frames_decoded
    assert [round(f.time_s, 3) for f in frames] == [0, 2, 4, 6, 8]
    assert_on_grid(frames, fps=0.5, start=0.0)
    if backend == "pyav":  # seeks to the keyframe before each tick (GOP = 0.5 s) instead of decoding all
        assert decoded < 10 * FPS / 3
    if backend == "opencv":  # grab() still decodes every frame; only 5 are converted
        assert decoded == 10 * FPS


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fps", [0.7, 3.0, 7.0, 29.0])
def test_any_rate_lands_on_the_right_frames_with_b_frames(videos, fps, backend):
    with open_source(videos["bframes.mp4"], backend) as source:
        frames = list(sample_frames(source, SamplerConfig(fps=fps, max_side=None)))
        decoded = source.frames_decoded
    assert len(frames) == math.ceil(10 * fps - 1e-9)
    assert_on_grid(frames, fps=fps, start=0.0)
    if backend == "pyav" and fps < 1:  # ticks 1.43 s apart, keyframes every 1 s: seeks past most frames
        assert decoded < 10 * FPS / 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_times_start_at_zero_when_the_stream_does_not(videos, backend):
    with open_source(videos["offset.mkv"], backend) as source:
        frames = list(source)
    assert frames[0].time_s == pytest.approx(0.0, abs=1e-3) and frame_number(frames[0].image) == 0
    assert frames[-1].time_s == pytest.approx(29 / FPS, abs=1e-3)


# --- sizes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,max_side,shape",
    [
        ("h264.mp4", 48, (32, 48)),
        ("h264.mp4", 96, (64, 96)),
        ("h264.mp4", 1000, (64, 96)),  # never upscaled
        ("h264.mp4", None, (64, 96)),
        ("odd.mp4", 50, (18, 50)),
        ("portrait.mp4", 48, (48, 32)),
    ],
)
def test_resize_limits_the_longer_side_and_keeps_aspect(videos, name, max_side, shape):
    frames = list(sample_frames(str(videos[name]), SamplerConfig(fps=5, max_side=max_side)))
    assert frames
    for frame in frames:
        assert_rgb_frame(frame, shape)
        assert frame_number(frame.image) == round(frame.time_s * FPS)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["odd.mp4", "odd.mkv"])
def test_odd_frame_sizes_are_kept(videos, name, backend):
    with open_source(videos[name], backend) as source:
        assert (source.width, source.height) == (101, 37)
        frames = list(source)
    assert len(frames) == 60
    for i, frame in enumerate(frames):
        assert_rgb_frame(frame, (37, 101))
        assert frame_number(frame.image) == i


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_frame_file(videos, backend):
    cfg = SamplerConfig(fps=1, chunk_frames=4, max_side=None, backend=backend)
    chunks = list(iter_chunks(str(videos["one.mp4"]), cfg))
    assert len(chunks) == 1 and chunks[0].index == 0 and chunks[0].times == [0.0]
    assert frame_number(chunks[0].frames[0].image) == 0


# --- damaged files and errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,backend,expect_backend",
    [("trunc.mkv", b, b) for b in BACKENDS] + [("trunc.mp4", "auto", "pyav"), ("trunc.mp4", "opencv", "opencv")],
)
def test_truncated_file_yields_what_decodes_then_warns(videos, name, backend, expect_backend, caplog):
    caplog.set_level(logging.WARNING)
    with open_source(videos[name], backend) as source:
        assert source.backend == expect_backend  # decord cannot open a cut mp4: auto falls back to PyAV
        frames = list(source)
    assert 4.0 < frames[-1].time_s < 8.0  # 60% of a 10 s file is kept (compressed sizes vary a little)
    assert [frame_number(f.image) for f in frames] == list(range(len(frames)))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("truncated" in r.getMessage() for r in warnings), [r.getMessage() for r in warnings]


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
@pytest.mark.parametrize(
    "name,error,words",
    [
        ("missing.mp4", SourceNotFoundError, "no such file"),
        ("random.mp4", NotAVideoError, "not a readable video"),
        ("cut_moov.mp4", NotAVideoError, "complete video"),  # mp4 index at the end: nothing left to read
        ("audio.m4a", NotAVideoError, "audio"),
        ("unknown_codec.avi", UnsupportedCodecError, "re-encode"),
        ("header_only.mkv", NoFramesError, "corrupt"),
        ("folder", NotAVideoError, "folder"),
    ],
)
def test_bad_sources_raise_one_line_errors_that_say_what_to_do(videos, video_dir, name, error, words, backend):
    path = videos.get(name, video_dir / name)
    if name == "folder":
        path.mkdir(exist_ok=True)
    with pytest.raises(error) as info:
        list(sample_frames(str(path), SamplerConfig(backend=backend)))
    message = str(info.value)
    assert isinstance(info.value, StreamerError)
    assert "\n" not in message and name in message and words in message, message


def test_start_after_the_end_says_how_long_the_video_is(videos):
    with pytest.raises(NoFramesError, match=r"video is 3\.00 s"):
        list(sample_frames(str(videos["h264.mp4"]), SamplerConfig(start_s=100)))


def test_cut_mp4_forced_on_decord_explains_instead_of_crashing(videos):
    with pytest.raises(UnsupportedCodecError, match="backend='auto'"):
        open_source(videos["trunc.mp4"], "decord")


def test_fallback_order_pyav_then_decord_then_opencv(videos, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="streamer.video.opening")
    assert opening.AUTO_ORDER == ("pyav", "decord", "opencv")
    with open_source(videos["h264.mp4"]) as source:
        assert source.backend == "pyav"

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(opening.PyAVSource, "__init__", broken)
    with open_source(videos["h264.mp4"]) as source:
        assert source.backend == "decord"
        assert_on_grid(list(sample_frames(source, SamplerConfig(fps=10, max_side=None))), 10, 0.0)
    assert "reading with decord" in caplog.text

    import decord

    monkeypatch.setattr(decord, "VideoReader", broken)
    with open_source(videos["h264.mp4"]) as source:
        assert source.backend == "opencv"
        assert_on_grid(list(sample_frames(source, SamplerConfig(fps=10, max_side=None))), 10, 0.0)
    assert "reading with opencv" in caplog.text

    monkeypatch.setattr(opening.OpenCVSource, "__init__", broken)
    with pytest.raises(UnsupportedCodecError, match="simulated failure"):
        open_source(videos["h264.mp4"])


def test_missing_decord_is_skipped_and_forcing_it_is_a_config_error(videos, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` now raises ImportError
    monkeypatch.setattr(opening.PyAVSource, "__init__", broken)
    with open_source(videos["h264.mp4"]) as source:
        assert source.backend == "opencv"
    with pytest.raises(ConfigError, match="not installed"):
        open_source(videos["h264.mp4"], "decord")


@pytest.mark.parametrize("device", ["/dev/video63", 63, "63"])
def test_missing_webcam_is_a_webcam_error(device):
    with pytest.raises(WebcamError, match="no webcam"):
        open_source(device)


def test_webcam_with_a_file_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="OpenCV"):
        open_source("/dev/video63", "pyav")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(fps=0), dict(fps=-1), dict(fps=float("nan")), dict(start_s=-1), dict(start_s=5, end_s=5),
        dict(max_side=0), dict(max_side=1.5), dict(chunk_frames=0), dict(chunk_frames=None),
        dict(chunk_seconds=2.0), dict(chunk_frames=None, chunk_seconds=0), dict(backend="ffmpeg"),
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError) as info:
        SamplerConfig(**kwargs)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


# --- network streams -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_server(video_dir):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(video_dir)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("name", ["h264.mkv", "long.mp4"])
def test_http_url_is_read_with_pyav(videos, http_server, name):
    with open_source(f"{http_server}/{videos[name].name}") as source:
        assert source.backend == "pyav"
        frames = list(sample_frames(source, SamplerConfig(fps=2, max_side=None)))
    assert len(frames) == round(source.duration_s * 2)
    assert_on_grid(frames, fps=2, start=0.0)


def test_unreachable_url_is_source_not_found(http_server):
    with pytest.raises(SourceNotFoundError, match="check the URL"):
        open_source(f"{http_server}/no-such-video.mp4")


# --- pacing, push source, chunking ---------------------------------------------------------------------


def test_realtime_releases_frames_at_wall_clock_rate(videos, wall):
    cfg = SamplerConfig(fps=30, end_s=2.0, max_side=None, realtime=True)
    start, lags = wall.now(), []
    for frame in sample_frames(str(videos["h264.mp4"]), cfg):
        lags.append(wall.now() - start - frame.time_s)  # 0: released at its video time, never early
    assert len(lags) == 60 and lags == pytest.approx([0.0] * 60, abs=1e-9)
    assert sum(wall.slept) == pytest.approx(59 / 30)  # the clip's length, waited frame by frame


def test_as_fast_as_possible_is_not_paced(videos, wall):
    frames = list(sample_frames(str(videos["h264.mp4"]), SamplerConfig(fps=30, end_s=2.0, max_side=None)))
    assert len(frames) == 60 and wall.slept == []


def test_push_source_from_a_thread_is_sampled_and_chunked():
    source = PushSource()
    got: list[Chunk] = []
    consumer = threading.Thread(
        target=lambda: got.extend(iter_chunks(source, SamplerConfig(fps=5, chunk_frames=3, max_side=None)))
    )
    consumer.start()  # blocks waiting for frames
    for i in range(30):  # 10 fps for 3 s of video time
        assert source.push(pattern(i), time_s=i / 10)
        if i % 7 == 0:
            time.sleep(0.01)
    source.close()
    consumer.join(timeout=10)
    assert not consumer.is_alive()
    assert [c.index for c in got] == [0, 1, 2, 3, 4]
    times = [t for c in got for t in c.times]
    assert times == pytest.approx([k / 5 for k in range(15)])
    assert [frame_number(f.image) for c in got for f in c.frames] == [2 * k for k in range(15)]
    assert not source.push(pattern(0))  # ignored after close


def test_push_source_default_times_are_wall_clock_since_first_push(wall):
    source = PushSource()
    for step in (0.1, 0.25, 0.0):
        source.push(pattern(0))
        wall.sleep(step)
    source.close()
    assert [f.time_s for f in source] == pytest.approx([0.0, 0.1, 0.35])


def test_push_source_drops_oldest_when_the_consumer_is_behind_and_checks_input():
    source = PushSource(max_pending=2)
    for i in range(5):
        source.push(pattern(i), time_s=float(i))
    source.close()
    assert [frame_number(f.image) for f in source] == [3, 4] and source.dropped == 3
    live = PushSource()
    live.push(pattern(0), time_s=1.0)
    with pytest.raises(ValueError, match="must not decrease"):
        live.push(pattern(1), time_s=0.5)
    with pytest.raises(ValueError, match="uint8"):
        live.push(np.zeros((4, 4, 3), np.float32))
    buffer = pattern(7)
    live.push(buffer, time_s=2.0)
    buffer[:] = 0  # the caller reuses its buffer: the queued frame must not change
    live.close()
    assert [frame_number(f.image) for f in live] == [0, 7]


def _frames_at(times):
    return [Frame(np.zeros((2, 2, 3), np.uint8), t) for t in times]


def test_chunks_by_count_and_by_duration():
    times = [0.0, 0.5, 0.9, 1.0, 2.5, 2.6, 4.0]
    by_count = list(chunk_frames(_frames_at(times), SamplerConfig(chunk_frames=3)))
    assert [c.times for c in by_count] == [[0.0, 0.5, 0.9], [1.0, 2.5, 2.6], [4.0]]
    by_time = list(chunk_frames(_frames_at(times), SamplerConfig(chunk_frames=None, chunk_seconds=1.0)))
    assert [c.times for c in by_time] == [[0.0, 0.5, 0.9], [1.0], [2.5, 2.6], [4.0]]
    assert [c.index for c in by_time] == [0, 1, 2, 3]
    late = SamplerConfig(chunk_frames=None, chunk_seconds=2.0, start_s=1.0)  # windows [1, 3), [3, 5)
    assert [c.times for c in chunk_frames(_frames_at(times[3:]), late)] == [[1.0, 2.5, 2.6], [4.0]]


def test_iter_chunks_on_a_file(videos):
    chunks = list(iter_chunks(str(videos["h264.mp4"]), SamplerConfig(fps=10, chunk_frames=4, max_side=48)))
    assert [len(c.frames) for c in chunks] == [4] * 7 + [2]
    assert [c.index for c in chunks] == list(range(8))
    assert [t for c in chunks for t in c.times] == pytest.approx([k / 10 for k in range(30)], abs=1 / FPS)
    assert all(f.image.shape == (32, 48, 3) for c in chunks for f in c.frames)


def test_video_source_is_the_common_type(videos):
    """A file and a push source are read one way: the file's frames, pushed, sample to the same frames."""
    cfg = SamplerConfig(fps=7, max_side=48)
    with open_source(videos["h264.mp4"]) as source:
        from_file = list(sample_frames(source, cfg))
        pushed = PushSource(max_pending=N)
        for frame in source:  # every frame at the native rate, as a webcam would hand them in
            pushed.push(frame.image, frame.time_s)
    pushed.close()
    from_push = list(sample_frames(pushed, cfg))
    assert len(from_file) == 21 and pushed.dropped == 0
    assert [f.time_s for f in from_push] == [f.time_s for f in from_file]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(from_push, from_file))


# --- an hour of video: count, times and flat memory ----------------------------------------------------


@pytest.fixture(scope="session")
def hour_video(video_dir, video_writer) -> Path:
    """One hour at 2 fps, 64x36, a keyframe every 2 s (7200 frames, a few seconds to write)."""
    return video_writer(video_dir / "hour.mp4", (pattern(i, 64, 36) for i in range(7200)), fps=2, gop=4)


# decord 0.6 reads every frame right but its memory creeps (48-185 MB over an hour here): that is why
# `auto` puts PyAV first, and why only the count and times are checked for decord
FLAT_MEMORY = {"auto": True, "pyav": True, "opencv": True, "decord": False}


@pytest.mark.parametrize("backend", list(FLAT_MEMORY))
def test_hour_long_file_at_1fps_has_3600_frames_and_flat_memory(hour_video, backend):
    process = psutil.Process()
    count, rss_warm, rss_peak = 0, None, 0
    for frame in sample_frames(str(hour_video), SamplerConfig(fps=1, max_side=None, backend=backend)):
        assert frame.time_s == pytest.approx(count, abs=1e-3)
        if count % 97 == 0:
            assert frame_number(frame.image) == 2 * count
        count += 1
        if count == 300:
            rss_warm = process.memory_info().rss
        if count % 300 == 0:
            rss_peak = max(rss_peak, process.memory_info().rss)
    assert count == 3600
    growth = max(rss_peak, process.memory_info().rss) - rss_warm
    if FLAT_MEMORY[backend]:
        assert growth < 30 * MB, f"RSS grew {growth / MB:.1f} MB after warm-up"


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_lag_meter_is_quiet_while_the_model_keeps_up():
    from streamer.frames import LagMeter

    clock = _Clock()
    meter = LagMeter(fps=1.0, clock=clock)
    for t in range(0, 60, 4):  # chunks of 4 frames, each ingested in 1 s, arriving in real time
        clock.now = 100.0 + t + 3 + 1.0
        assert meter.update([t, t + 1, t + 2, t + 3], 1.0) is None
    assert meter.lag_s < 2 and meter.missed == 0


def test_lag_meter_warns_when_behind_names_a_rate_that_keeps_up_and_does_not_repeat_itself():
    from streamer.frames import LagMeter

    clock = _Clock()
    meter = LagMeter(fps=1.0, warn_s=5.0, clock=clock)
    warnings = []
    for k in range(20):  # 3 s of model work per frame, one frame per chunk, no frames skipped
        clock.now += 3.0
        warnings.append(meter.update([float(k)], 3.0))
    said = [w for w in warnings if w]
    assert said and "behind" in said[0] and "0.25 fps" in said[0]
    assert 2 <= len(said) <= 4  # again when the lag doubles (5 -> 10 -> 20 -> 40 s), not at every chunk
    assert meter.lag_s == pytest.approx(20 * 3.0 - 19, abs=0.01)  # frame 19 (video 19 s) in the cache at wall 60 s


def test_lag_meter_counts_frames_the_source_skipped():
    from streamer.frames import LagMeter

    clock = _Clock()
    meter = LagMeter(fps=1.0, clock=clock)
    said = None
    for t in range(0, 40, 2):  # a webcam that hands over only every other second's frame, on time
        clock.now = 100.0 + t + 0.5
        said = meter.update([float(t)], 0.5) or said
    assert meter.missed == 19 and meter.lag_s < 1
    assert said is not None and "skipped" in said
