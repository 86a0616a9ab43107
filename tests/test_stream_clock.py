"""A stream whose clock goes back or leaps ahead (issue 42, class 2): the stream time keeps moving.

Probes: one short MPEG-TS segment written three times into one file (`cat seg.ts seg.ts seg.ts`), whose
timestamps restart at each copy; an HTTP stream that repeats a segment without end (a camera whose encoder
restarts), with and without a leap of its timestamps far ahead. Each jump is a discontinuity, as players
treat it: the stream time goes on one frame after the last, a warning says so once, and `--end` / `--at`
work on that time. Videos are written inside the tests; the model is the random-weight `tiny-random`.
"""

from __future__ import annotations

import http.server
import json
import logging
import subprocess
import sys
import threading

import numpy as np
import pytest

from streamer.errors import UnsupportedCodecError
from streamer.frames import SamplerConfig, open_source, sample_frames

from conftest import write_video

pytestmark = pytest.mark.timeout(120)

SEG_FPS, SEG_FRAMES = 10, 20  # each segment: 2 s at 10 fps
COPIES = 3


def shade(i: int) -> np.ndarray:
    """Frame i of a segment: one grey level per frame, so a decoded frame says where in its segment it is."""
    return np.full((24, 32, 3), 30 + 10 * i, np.uint8)


def index_of(image: np.ndarray) -> int:
    return round((float(image.mean()) - 30) / 10)


@pytest.fixture(scope="module")
def segments(tmp_path_factory):
    d = tmp_path_factory.mktemp("clock")
    frames = [shade(i) for i in range(SEG_FRAMES)]
    seg = write_video(d / "seg.ts", frames, fps=SEG_FPS, gop=SEG_FPS)
    # the same segment with its timestamps 1000 s later: an encoder that restarted on another clock
    later = write_video(d / "later.ts", frames, times=[1000 + i / SEG_FPS for i in range(SEG_FRAMES)])
    three = d / "three.ts"
    three.write_bytes(seg.read_bytes() * COPIES)
    return {"seg": seg, "later": later, "three": three}


def sampled(path, backend="pyav", **kw):
    with open_source(path, backend) as source:
        return [(f.time_s, index_of(f.image)) for f in sample_frames(source, SamplerConfig(max_side=None, **kw))]


def jump_warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING and "discontinuity" in r.getMessage()]


# --- a file of joined segments ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
def test_joined_segments_give_every_copy_on_a_moving_clock_and_say_so_once(segments, backend, caplog):
    one = sampled(segments["seg"], backend, fps=2)
    with caplog.at_level(logging.WARNING):
        three = sampled(segments["three"], backend, fps=2)
    times = [t for t, _ in three]
    assert len(three) == COPIES * len(one), times  # no copy dropped
    assert all(b > a for a, b in zip(times, times[1:])), times  # the clock only moves forward
    assert [i for _, i in three] == [i for _, i in one] * COPIES  # each copy shows its frames again, in order
    assert times[-1] >= (COPIES - 1) * SEG_FRAMES / SEG_FPS  # the last copy is at its place on the clock
    assert len(jump_warnings(caplog)) == 1, [r.getMessage() for r in caplog.records]


def test_joined_segments_give_the_same_frames_every_run_and_from_any_start(segments):
    with open_source(segments["three"], "pyav") as source:
        runs = [[(f.time_s, index_of(f.image)) for f in source.sample(2)] for _ in range(2)]
    assert runs[0] == runs[1] == sampled(segments["three"], fps=2)
    seg_s = SEG_FRAMES / SEG_FPS
    start, end = seg_s + 1, 2 * seg_s + 1  # inside the second and third copies: a seek by timestamp lands elsewhere
    assert sampled(segments["three"], fps=2, start_s=start) == [(t, i) for t, i in runs[0] if t >= start - 1e-3]
    assert sampled(segments["three"], fps=2, end_s=end) == [(t, i) for t, i in runs[0] if t < end - 1e-3]


def test_decord_refuses_joined_segments_instead_of_scrambling_them(segments):
    with pytest.raises(UnsupportedCodecError, match="pyav"):
        open_source(segments["three"], "decord")


# --- a live stream that restarts its clock ---------------------------------------------------------------


@pytest.fixture(scope="module")
def repeating_server(segments):
    """http://.../seg or /later-seg: the segment again and again (bounded), with no length: a live stream."""
    playlists = {"/seg": [segments["seg"].read_bytes()],
                 "/later-seg": [segments["seg"].read_bytes(), segments["later"].read_bytes()]}

    class Repeat(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            parts = playlists.get(self.path)
            if parts is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.end_headers()
            try:
                for k in range(300):  # 10 minutes of video at most: the client stops long before
                    self.wfile.write(parts[k % len(parts)])
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Repeat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["/seg", "/later-seg"])
def test_a_live_stream_that_restarts_its_clock_keeps_moving(repeating_server, path, caplog):
    end = 2.5 * SEG_FRAMES / SEG_FPS
    with caplog.at_level(logging.WARNING), open_source(repeating_server + path) as source:
        assert source.is_live
        frames = [(f.time_s, index_of(f.image)) for f in source.sample(2, end_s=end)]
    times = [t for t, _ in frames]
    assert len(frames) == round(end * 2), times  # every tick up to end_s, none lost at a jump
    assert all(b > a for a, b in zip(times, times[1:])) and times[-1] < end
    assert [i for _, i in frames][: SEG_FRAMES // 5] == [i for _, i in frames][SEG_FRAMES // 5:][: SEG_FRAMES // 5]
    assert len(jump_warnings(caplog)) == 1


def test_cli_end_and_at_work_on_a_live_stream_that_restarts(repeating_server):
    out = subprocess.run(
        [sys.executable, "-m", "streamer.cli", repeating_server + "/seg", "--model", "tiny-random", "--json",
         "-q", "early?", "--at", "2.5", "-q", "late?", "--at", "4.5", "--end", "5", "--max-new-tokens", "2",
         "--chunk-frames", "1", "--skip-static", "off"],
        capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["question"] for r in rows] == ["early?", "late?"]
    for row, at in zip(rows, (2.5, 4.5)):  # each question sees the frames up to its time, and no later one
        assert at - 1 < row["video_time_s"] <= at, row
        assert row["frames_ingested"] == int(at) + 1, row
    assert "discontinuity" in out.stderr and "Traceback" not in out.stderr
