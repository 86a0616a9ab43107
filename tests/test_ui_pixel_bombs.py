"""Pixel bombs against the web UI (issue 42, class 5): a small file that declares a huge image.

The probe: a PNG of 8000x8000 black pixels (about 0.2 MB; 192 MB once decoded) sent as webcam frames by six
browser-less clients at once, twice each, through Gradio's REST API; and the same file, and a 6000x6000
H.264 video, uploaded by three clients at once. Before the fix every frame was decoded at full size
(six clients took the server up by GBs and it kept most of it); now each is refused from its header
with a message that names the bound (`UiSettings.max_frame_pixels`), no session is made, and the
server's RSS barely moves. The RSS is this process's (the server runs in-process), with a generous bound.
"""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image, ImageFile

from streamer.app import limits
from streamer.app.state import UiSettings
from streamer.app.ui import build_demo, launch
from streamer.kv_window import WindowConfig
from streamer.models.registry import load_model

from conftest import write_video
from test_ui import call_api, free_port, upload

pytestmark = pytest.mark.timeout(300)
MB = 2**20


def png_bomb(path: Path, side: int) -> Path:
    """A black RGB PNG of side x side pixels, compressed row by row (never held decoded here)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row, parts = zlib.compressobj(9), b"\0" * (1 + 3 * side), []
    for _ in range(side):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return path


def data_url(image: np.ndarray | Path) -> dict:
    if isinstance(image, Path):
        raw = image.read_bytes()
    else:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "PNG")
        raw = buffer.getvalue()
    return {"url": "data:image/png;base64," + base64.b64encode(raw).decode(), "meta": {"_type": "gradio.FileData"}}


class Watch:
    """Peak RSS of this process (the in-process server) while the block runs, and every image PIL decodes."""

    def __init__(self, monkeypatch):
        self.decoded: list[tuple[int, int]] = []
        load = ImageFile.ImageFile.load

        def spy(image):
            self.decoded.append(image.size)
            return load(image)

        monkeypatch.setattr(ImageFile.ImageFile, "load", spy)

    def __enter__(self):
        self.process, self.stop = psutil.Process(), threading.Event()
        self.before = self.peak = self.process.memory_info().rss
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.after = self.process.memory_info().rss


def at_once(calls: list) -> list:
    results: list = [None] * len(calls)
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, calls[i]())) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


@pytest.fixture(scope="module")
def app():
    settings = UiSettings(chunk_frames=2, max_new_tokens=4, max_sessions_per_client=16, skip=None)
    demo = build_demo(load_model("tiny-random"), window=WindowConfig(budget=128), settings=settings)
    port = free_port()
    launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    return png_bomb(tmp_path_factory.mktemp("bombs") / "bomb.png", 8000)


def test_six_clients_sending_a_pixel_bomb_as_webcam_frames(app, bomb, monkeypatch):
    demo, url = app
    frame = data_url(bomb)
    assert len(frame["url"]) < 400_000  # a small request...
    with Watch(monkeypatch) as watch:  # ...that declares 64 megapixels (192 MB decoded)
        results = at_once([lambda i=i: [call_api(url, "webcam_frame", [frame, None, None], f"bomb-{i}")
                                        for _ in range(2)] for i in range(6)])  # each client, two frames
    for kind, data in sum(results, []):
        assert kind == "error" and "8000x8000 pixels" in data and "at most 16.8 megapixels" in data, (kind, data)
        assert "Frame too large" in data
    assert not watch.decoded  # refused from the header: not one pixel decoded
    assert all(demo.registry.get(f"bomb-{i}", create=False) is None for i in range(6))  # no slot taken
    assert watch.peak - watch.before < 150 * MB, (watch.before / MB, watch.peak / MB)  # before the fix: GBs
    assert watch.after - watch.before < 100 * MB


def test_three_clients_uploading_huge_frames(app, bomb, tmp_path, monkeypatch):
    demo, url = app
    video = write_video(tmp_path / "wide.mp4", [np.zeros((6000, 6000, 3), np.uint8)] * 2, fps=2)
    for path, size in ((bomb, "8000x8000"), (video, "6000x6000")):
        sent = upload(url, path)
        with Watch(monkeypatch) as watch:
            results = at_once([lambda i=i: call_api(url, "load_video", [sent, None, None], f"up-{path.name}-{i}")
                               for i in range(3)])
        for kind, data in results:
            assert kind == "error" and f"{path.name} is {size} pixels" in data and "16.8 megapixels" in data, data
        assert not watch.decoded and not any(u.key.startswith("up-") for u in demo.registry.users())
        # an upload's first frame is decoded by FFmpeg as it opens (a video's size is known only then), at
        # most MAX_DECODES at a time; before the fix every frame of every upload was decoded (+1.2 GB here)
        assert watch.peak - watch.before < 400 * MB, (path.name, watch.before / MB, watch.peak / MB)


def test_frames_under_the_bound_still_stream(app):
    """A frame as the page sends it (a data: URL) is decoded, shrunk and ingested; garbage is skipped. (The
    browser's own webcam stream is in test_ui_browser.py; a webcam_frame REST call returns only after
    Gradio's stream times out, 30 s, so this one calls the decoder and the session directly.)"""
    demo, _ = app
    image = np.zeros((480, 640, 3), np.uint8)
    image[:, :320] = (200, 30, 30)
    frame = limits.decode_frame(data_url(image), demo.registry.settings.max_frame_pixels, 384)
    assert frame.shape == (288, 384, 3) and tuple(frame[0, 0]) == (200, 30, 30)
    user = demo.registry.get("camera")
    assert user.push_webcam(frame) == "started"
    deadline = time.monotonic() + 60
    while not user.stats.get("frames_ingested") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert user.stats["frames_ingested"] == 1
    with pytest.raises(ValueError, match="not a readable image"):
        limits.decode_frame({"url": "data:image/png;base64,bm90IGFuIGltYWdl"}, limits.MAX_FRAME_PIXELS, 384)
    demo.registry.drop("camera")


def test_decoding_is_bounded_in_size_and_in_number(monkeypatch):
    photo = io.BytesIO()
    Image.new("RGB", (4000, 3000), (10, 200, 10)).save(photo, "JPEG")
    payload = {"url": "data:image/jpeg;base64," + base64.b64encode(photo.getvalue()).decode()}
    image = limits.decode_frame(payload, limits.MAX_FRAME_PIXELS, 384)
    assert image.shape == (288, 384, 3) and image.dtype == np.uint8  # shrunk before it is queued

    running, most, count = [0], [0], threading.Lock()
    transpose = limits.ImageOps.exif_transpose

    def slow(image):  # inside the decode slot: count how many run at once
        with count:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.2)
        with count:
            running[0] -= 1
        return transpose(image)

    monkeypatch.setattr(limits.ImageOps, "exif_transpose", slow)
    at_once([lambda: limits.decode_frame(payload, limits.MAX_FRAME_PIXELS, 384)] * 6)
    assert most[0] == limits.MAX_DECODES == 2


def test_the_bound_is_a_setting():
    with pytest.raises(ValueError, match="max_frame_pixels"):
        UiSettings(max_frame_pixels=0)
    with pytest.raises(limits.FrameTooLargeError, match="1000x1000 pixels .* at most 0.5 megapixels"):
        limits.check_size(1000, 1000, 500_000, "this frame")
    limits.check_size(700, 700, 500_000, "this frame")  # 0.49 megapixels: fine
