"""What a hostile user still broke after issue 15 (issue 42), one section per class of failure:

1. an upload that names other files (an HLS playlist, a concat list, an image sequence) or is text;
3. a full disk on stdout;
7. chat text rendered as HTML;
9. smaller ones: an empty frame, a feed error naming the server's temporary path, a truncated file shown
   as watched in full.

Each test failed on the code before its fix. Models are the random-weight `tiny-random` ones; videos
are written inside the tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from streamer.app.state import UiSettings
from streamer.app.ui import build_demo, feed_status, launch
from streamer.errors import NotAVideoError, NotOneFileError
from streamer.frames import Chunk, open_source
from streamer.kv_window import WindowConfig
from streamer.models.registry import load_model
from streamer.session import StreamSession
from streamer.video.frame import Frame, PushSource
from streamer.world.sample_video import write_sample

from conftest import write_video

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def adapter():
    return load_model("tiny-random")


@pytest.fixture(scope="module")
def app(adapter):
    settings = UiSettings(chunk_frames=2, max_new_tokens=4, max_sessions_per_client=16, skip=None)
    demo = build_demo(adapter, window=WindowConfig(policy="combined", budget=128), settings=settings)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def secret(tmp_path_factory) -> Path:
    """A video on the server that no upload may make it read (MPEG-TS, as HLS segments are)."""
    frames = [np.full((64, 64, 3), 40 * i, np.uint8) for i in range(6)]
    return write_video(tmp_path_factory.mktemp("server") / "secret.ts", frames, fps=2)


def playlist(folder: Path, entry: str) -> Path:
    path = folder / "list.m3u8"
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:3\n#EXTINF:3,\n{entry}\n#EXT-X-ENDLIST\n")
    return path


# --- 1. an upload that names other files ----------------------------------------------------------------


@pytest.mark.parametrize("url", [False, True], ids=["path", "file-url"])
def test_an_uploaded_playlist_is_refused_while_the_cli_reads_it(tmp_path, secret, url):
    m3u8 = playlist(tmp_path, f"file://{secret}" if url else str(secret))
    with open_source(m3u8) as chosen:  # the CLI reads a playlist the user named: it does reach the file
        assert next(iter(chosen)).image.shape == (64, 64, 3)
    with pytest.raises(NotOneFileError, match="not a single video file"):
        open_source(m3u8, single_file=True)


def test_an_uploaded_playlist_never_opens_what_it_names(tmp_path):
    fifo = tmp_path / "pipe.ts"
    os.mkfifo(fifo)  # a demuxer that opened it would wait for a writer for ever
    m3u8 = playlist(tmp_path, str(fifo))
    result: list[BaseException] = []
    thread = threading.Thread(target=lambda: result.append(pytest.raises(NotOneFileError, open_source, m3u8,
                                                                         single_file=True).value), daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        with open(fifo, "wb"):  # unblock it, so the thread ends
            pass
        pytest.fail("the upload opened the file its playlist names")
    assert result


def make_refused(tmp_path: Path, secret: Path, kind: str) -> str:
    if kind == "concat":
        (tmp_path / "list.ffconcat").write_text(f"ffconcat version 1.0\nfile '{secret}'\n")
        return str(tmp_path / "list.ffconcat")
    if kind == "image-sequence":  # image2 reads frame0.png, frame1.png, ... beside the upload
        for i in range(3):
            write_video(tmp_path / f"frame{i}.png", [np.zeros((8, 8, 3), np.uint8)], codec="png", pix_fmt="rgb24")
        named = tmp_path / "frame%d.png"
        named.write_bytes((tmp_path / "frame0.png").read_bytes())
        return str(named)
    return f"file://{secret}"  # a URL, even to a local file


@pytest.mark.parametrize("kind", ["concat", "image-sequence", "url"])
def test_an_upload_that_reads_other_files_or_a_url_is_refused(tmp_path, secret, kind):
    with pytest.raises(NotOneFileError):
        open_source(make_refused(tmp_path, secret, kind), single_file=True)


def test_the_web_ui_refuses_an_uploaded_playlist_with_one_message(app, tmp_path, secret):
    demo, url = app
    client = Client(url, verbose=False)
    with pytest.raises(AppError) as refused:
        client.predict(handle_file(str(playlist(tmp_path, str(secret)))), api_name="/load_video")
    message = str(refused.value)
    assert "list.m3u8 is not a single video file" in message and str(tmp_path) not in message
    assert demo.registry.get(client.session_hash, create=False) is None  # no session, nothing fed


@pytest.mark.parametrize("backend", ["auto", "pyav", "decord", "opencv", "upload"])
def test_a_text_file_is_not_a_video(tmp_path, backend):
    text = tmp_path / "notes.txt"
    text.write_text("meeting notes\n" * 50)
    with pytest.raises(NotAVideoError, match="is a text file"):
        open_source(text, single_file=True) if backend == "upload" else open_source(text, backend)


def test_a_single_image_or_video_upload_still_opens(tmp_path, secret):
    image = write_video(tmp_path / "photo.png", [np.zeros((8, 8, 3), np.uint8)], codec="png", pix_fmt="rgb24")
    for path in (secret, image):
        with open_source(path, single_file=True) as source:
            assert next(iter(source)).image.shape[2] == 3


# --- 3. a full disk on stdout ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [["-q", "what?"], ["--json", "-q", "what?"], []], ids=["text", "json", "prompt"])
def test_a_full_disk_on_stdout_is_one_line(tmp_path, mode):
    video = write_sample(tmp_path / "sample.mp4", seconds=2, fps=2)
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "streamer.cli", str(video), "--model", "tiny-random",
                               "--max-new-tokens", "2", *mode], stdout=full, stderr=subprocess.PIPE,
                              input=b"what now?\n", timeout=150)
    err = done.stderr.decode()
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("note:", "watched"))]
    assert done.returncode == 2 and "Traceback" not in err and "Exception ignored" not in err, err
    assert len(lines) == 1 and "cannot write to stdout (No space left on device)" in lines[0], err


# --- 7. chat text rendered as HTML ----------------------------------------------------------------------


def test_questions_and_answers_are_shown_as_text(app, tmp_path, monkeypatch):
    demo, url = app
    monkeypatch.setattr(StreamSession, "ask", lambda self, question, *a, **k: iter(["<details>", "<b>x</b>\n&"]))
    client = Client(url, verbose=False)
    client.predict(handle_file(str(write_sample(tmp_path / "clip.mp4", seconds=2, fps=2))), api_name="/load_video")
    user = demo.registry.get(client.session_hash, create=False)
    assert user.feed.join(60)
    chat, _ = client.predict('see <a href="x">link</a> <details>', api_name="/ask")
    asked, answered = (m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for m in chat)
    assert asked == 'see &lt;a href=&quot;x&quot;&gt;link&lt;/a&gt; &lt;details&gt;'
    assert answered == "&lt;details&gt;&lt;b&gt;x&lt;/b&gt;<br>&amp;"
    assert [m["content"] for m in user.chat] == [asked, answered]  # the chat the page gets on its next update


# --- 9. smaller ones ------------------------------------------------------------------------------------


def test_an_empty_frame_is_refused_with_a_message(adapter):
    with pytest.raises(ValueError, match="at least 1x1"):
        Frame(np.zeros((0, 0, 3), np.uint8), 0.0)
    with pytest.raises(ValueError, match="expects an"):
        PushSource().push(np.zeros((0, 0, 3), np.uint8), 0.0)
    session = StreamSession(adapter, WindowConfig(policy="combined", budget=128), skip=None)
    with pytest.raises(ValueError, match="at least 1x1"):
        session.ingest(Chunk((Frame(np.zeros((0, 4, 3), np.uint8), 0.0),)))


def test_a_feed_error_names_the_upload_not_the_server_path(app, tmp_path, monkeypatch):
    demo, url = app
    broken = tmp_path / "late.mp4"
    write_sample(broken, seconds=2, fps=2)
    client = Client(url, verbose=False)
    def fails(source, cfg):  # as a decoder does, naming the file by its path
        raise NotAVideoError(f"cannot read {source.name}: it changed")
        yield

    monkeypatch.setattr("streamer.app.state.sample_frames", fails)
    client.predict(handle_file(str(broken)), api_name="/load_video")
    user = demo.registry.get(client.session_hash, create=False)
    assert user.feed.join(60) and user.feed.state == "error"
    assert user.feed.error == "cannot read late.mp4: it changed", user.feed.error
    assert all(user.feed.source.name not in e for e in user.pop_errors())


def test_a_truncated_upload_is_not_watched_in_full(app, tmp_path):
    demo, url = app
    frames = [np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8) for i in range(20)]
    whole = write_video(tmp_path / "whole.mkv", frames, fps=2)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    client = Client(url, verbose=False)
    client.predict(handle_file(str(cut)), api_name="/load_video")
    user = demo.registry.get(client.session_hash, create=False)
    assert user.feed.join(60) and user.feed.state == "done"
    status = feed_status(user)
    assert "Watched all" not in status and "cut short" in status, status
    assert any("cut.mkv is cut short" in e and str(tmp_path) not in e for e in user.pop_errors())
