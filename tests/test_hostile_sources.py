"""Sources that never open (issue 15, class 1): a FIFO, a socket, a device, a folder, a stalled server, and
Ctrl-C while one opens or stalls. Each test failed on the code before its fix."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from streamer import errors
from streamer.errors import SourceError
from streamer.frames import open_source

from conftest import cli_process, one_line

BACKENDS = ["auto", "pyav", "decord", "opencv"]


def open_within(source: str, backend: str, fifo: Path | None = None, seconds: float = 20.0) -> BaseException:
    """The error open_source raises, failing the test if it blocks (a FIFO is then unblocked by a writer)."""
    result: list[BaseException] = []

    def attempt():
        try:
            open_source(source, backend).close()
        except BaseException as error:  # noqa: BLE001 - the test inspects it
            result.append(error)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive() and fifo is not None:
        with open(fifo, "wb"):  # a writer lets the blocked open go on, so the thread ends
            pass
        thread.join(seconds)
        pytest.fail(f"opening {source} with {backend} blocked for {seconds} s")
    assert not thread.is_alive(), f"opening {source} with {backend} blocked for {seconds} s"
    assert result, f"{source} opened as a video"
    return result[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_named_pipe_is_refused_at_once_by_every_backend(tmp_path, backend):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    error = open_within(str(fifo), backend, fifo)
    assert isinstance(error, SourceError) and "named pipe" in str(error) and "\n" not in str(error)


def test_a_socket_a_device_and_a_folder_are_refused_with_what_they_are(tmp_path):
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "video.sock"))
    try:
        for path, kind in [(tmp_path / "video.sock", "socket"), ("/dev/null", "device"), (tmp_path, "folder")]:
            error = open_within(str(path), "auto")
            assert isinstance(error, SourceError) and kind in str(error), (path, error)
    finally:
        server.close()


def test_cli_given_a_named_pipe_exits_2_with_one_line(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    proc = cli_process(str(fifo), "--model", "tiny-random", "-q", "what?")
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        with open(fifo, "wb"):
            pass
        proc.kill()
        proc.communicate()
        pytest.fail("the CLI hung on a named pipe")
    assert proc.returncode == 2 and "named pipe" in one_line(err.decode())


@pytest.fixture
def stalled_url():
    """(URL of a TCP server that accepts connections and never answers, event set at its first connection)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted = threading.Event()
    held = []

    def serve():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return
            accepted.set()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/video.mp4", accepted
    server.close()
    for conn in held:
        conn.close()


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
def test_a_stalled_server_times_out_with_one_line(stalled_url, monkeypatch, backend):
    from streamer.video import decode as video_decode

    monkeypatch.setattr(video_decode, "NETWORK_TIMEOUT_S", 1.0)
    url, _ = stalled_url
    error = open_within(url, backend)  # the 1 s timeout applies (the error says so), not the 15 s default
    assert isinstance(error, errors.SourceNotFoundError) and "1 s" in str(error) and "\n" not in str(error)


def test_ctrl_c_while_a_stream_opens_exits_130(stalled_url):
    url, accepted = stalled_url
    proc = cli_process(url, "--model", "tiny-random")
    try:
        assert accepted.wait(120), "the CLI never connected"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and one_line(err.decode()) == "interrupted"


def test_ctrl_c_while_a_stream_stalls_mid_read_exits_130(tmp_path, video_writer):
    noise = np.random.default_rng(0).integers(0, 256, (40, 48, 64, 3), dtype=np.uint8)
    data = video_writer(tmp_path / "live.mkv", list(noise), fps=2).read_bytes()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held = []

    def serve():  # the first request gets half the file, then nothing more; later ones get nothing
        while True:
            try:
                conn = server.accept()[0]
            except OSError:
                return
            held.append(conn)
            conn.recv(65536)
            if len(held) == 1:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/x-matroska\r\n\r\n" + data[: len(data) // 2])

    threading.Thread(target=serve, daemon=True).start()
    proc = cli_process(f"http://127.0.0.1:{server.getsockname()[1]}/live.mkv", "--model", "tiny-random", "-v",
                       stdin=subprocess.DEVNULL)
    lines: list[str] = []
    loaded = threading.Event()

    def watch():
        for line in proc.stderr:
            lines.append(line.decode(errors="replace"))
            if "loaded tiny-random" in lines[-1]:
                loaded.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        assert loaded.wait(120), "".join(lines)
        time.sleep(3)  # the frames that came are ingested; the read now waits on the server
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        server.close()
        for conn in held:
            conn.close()
    time.sleep(0.2)  # the watcher reads the last lines
    assert proc.returncode == 130 and lines[-1].strip() == "interrupted", "".join(lines)
