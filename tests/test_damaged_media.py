"""Media that lie about themselves and servers that send what is not a video (issue 42, the session's own
round of probes): one clear error or a clean read, never a misleading message or a second error line.

- an mp4 cut at 90% (its video stream names no codec) was "no decoder for the video codec ...; re-encode it",
  after two OpenCV "[ERROR] ... VIDEOIO/FFMPEG" lines on stderr (probe M20);
- a PNG given as a video was read, then warned "the stream ended at 0.00 s (its server stopped sending)" (M3);
- a server that keeps sending bytes that are no video was reported as "no answer from URL" (class 9);
- API calls with the wrong types (A10, A11) raised AttributeError/TypeError, a blank policy meant "full" (A12)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import cv2
import numpy as np
import pytest

from streamer.video import decode as video_decode
from streamer.errors import ConfigError, NotAVideoError, SourceNotFoundError
from streamer.frames import SamplerConfig, open_source, sample_frames
from streamer.kv_window import WindowConfig
from streamer.world.sample_video import write_sample

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_sample(tmp_path_factory.mktemp("media") / "sample.mp4", seconds=4, fps=2)


def test_an_mp4_cut_short_is_damaged_not_an_unknown_codec_and_says_so_once(sample, tmp_path, capfd):
    data = sample.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.9)])
    with pytest.raises(NotAVideoError, match="damaged or cut short"):
        open_source(cut)
    assert "VIDEOIO" not in capfd.readouterr().err  # OpenCV was not tried, or said nothing


def test_a_still_image_reads_as_one_frame_without_a_stream_warning(tmp_path, caplog):
    image = tmp_path / "still.mp4"  # a PNG with a video's name
    cv2.imwrite(str(image.with_suffix(".png")), np.full((40, 60, 3), 200, np.uint8))
    image.with_suffix(".png").rename(image)
    with caplog.at_level(logging.WARNING):
        frames = list(sample_frames(image, SamplerConfig()))
    assert len(frames) == 1 and frames[0].image.shape == (40, 60, 3)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


@pytest.fixture
def noise_server():
    """URL of an HTTP server that answers at once, then keeps sending random bytes slowly, for ever."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve():
        try:
            conn = server.accept()[0]
        except OSError:
            return
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n\r\n")
            while not stop.is_set():
                try:
                    conn.sendall(os.urandom(512))
                except OSError:
                    return
                time.sleep(0.05)

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/live.ts"
    stop.set()
    server.close()


def test_a_server_that_keeps_sending_no_video_is_not_called_silent(noise_server, monkeypatch):
    monkeypatch.setattr(video_decode, "NETWORK_TIMEOUT_S", 1.0)
    with pytest.raises(SourceNotFoundError) as caught:
        open_source(noise_server).close()
    message = str(caught.value)
    assert "no answer" not in message and "not a video stream" in message and "\n" not in message


@pytest.mark.parametrize("source", [None, 3.5, True, ["a.mp4"]])
def test_a_source_of_the_wrong_type_is_a_config_error(source):
    with pytest.raises(ConfigError, match="path, URL or webcam index"):
        open_source(source)


def test_a_path_given_as_bytes_opens(sample):
    with open_source(os.fsencode(sample)) as source:
        assert source.duration_s == pytest.approx(4.0, abs=0.5)


def test_sampling_needs_a_sampler_config(sample):
    with pytest.raises(ConfigError, match="SamplerConfig"):
        next(sample_frames(sample, {"fps": 1}))


@pytest.mark.parametrize("policy", ["", "   ", None, 3])
def test_a_blank_policy_is_refused_not_taken_for_full(policy):
    with pytest.raises(ConfigError, match="policy must be a name"):
        WindowConfig(policy=policy, budget=256)


def test_a_live_stream_that_ends_before_its_first_frame_is_one_stream_message(caplog):
    from streamer.errors import NoFramesError
    from streamer.video.frame import VideoSource

    class Silent(VideoSource):  # a live source whose server hangs up before the first frame
        name, is_live, backend = "rtsp://cam/1", True, "pyav"

        def _read(self, grid):
            self._warn_if_cut(None)
            return iter(())

    with caplog.at_level(logging.WARNING), pytest.raises(NoFramesError) as caught:
        list(Silent().sample())
    assert "before the stream ended" in str(caught.value) and "corrupt" not in str(caught.value)
    assert not caplog.records, caplog.text  # no second line saying the same
