"""RTSP end to end against a real RTSP server (issue 42, class 10).

The server is aio-rtsp-toolkit's RTSP/TCP file server (a test dependency from PyPI, in requirements.txt),
run in its own process on 127.0.0.1 so that it can die or freeze mid-stream: it plays a clip of the
synthetic world written inside the test, in real time, over RTSP interleaved TCP as cameras do. Checked:
the CLI watches the stream and answers about it (random-weight `tiny-random`), and the stream's end, a
server that dies mid-stream and one that freezes each give one clear line, no traceback (those two run the
CLI in this process, to shorten its 15 s network timeout).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from streamer.video import decode as video_decode
from streamer.cli import main
from streamer.world.sample_video import write_sample

pytestmark = pytest.mark.timeout(120)

CLIP_S = 4  # seconds of video the server plays

# The server: serves the folder argv[1] on a free port, prints the port, and `argv[2]` seconds after a client
# connects exits at once ("die") or stops answering while keeping the connection ("freeze").
SERVER = """
import asyncio, os, signal, sys
import aio_rtsp_toolkit.server as rs

class Quiet:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None

rs.logger = Quiet()
folder, mode, after = sys.argv[1], sys.argv[2], float(sys.argv[3])

class Server(rs.RtspServer):
    async def _handle_client(self, sock):
        end = {"die": lambda: os._exit(1), "freeze": lambda: os.kill(os.getpid(), signal.SIGSTOP)}.get(mode)
        if end:
            asyncio.get_running_loop().call_later(after, end)
        await super()._handle_client(sock)

async def run():
    server = await Server(folder, "127.0.0.1", 0).start()
    print(server._server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(run())
"""


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rtsp")
    write_sample(folder / "clip.mp4", seconds=CLIP_S, fps=5)
    write_sample(folder / "long.mp4", seconds=10 * CLIP_S, fps=5)
    return folder


@pytest.fixture
def serve(clips):
    """serve(mode="end", after_s=0) -> rtsp://127.0.0.1:PORT (the server process ends with the test)."""
    started = []

    def start(mode: str = "end", after_s: float = 0.0) -> str:
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(clips), mode, str(after_s)],
                                  stdout=subprocess.PIPE, text=True)
        started.append(server)
        return f"rtsp://127.0.0.1:{int(server.stdout.readline())}"

    yield start
    for server in started:
        server.kill()
        server.wait()


def stream_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "stream" in line and "tiny-random" not in line]


def test_an_rtsp_stream_is_watched_and_answered_and_its_end_is_one_line(serve):
    url = serve() + "/clip.mp4"
    out = subprocess.run([sys.executable, "-m", "streamer.cli", url, "--model", "tiny-random", "--json",
                          "-q", "What colour is the shape?", "--max-new-tokens", "3"],
                         capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stderr
    [answer] = [json.loads(line) for line in out.stdout.splitlines()]
    assert answer["question"] == "What colour is the shape?" and answer["answer"]
    assert answer["frames_ingested"] + answer["frames_skipped"] >= CLIP_S - 1  # a frame per second of the clip
    assert answer["video_time_s"] >= CLIP_S - 2
    assert "Traceback" not in out.stderr
    [line] = stream_lines(out.stderr)
    assert "ended at" in line and url in line


@pytest.mark.parametrize("mode,words", [("die", "ended at"), ("freeze", "broke off")])
def test_a_server_that_dies_or_freezes_mid_stream_is_one_line(serve, mode, words, monkeypatch, capsys, caplog):
    monkeypatch.setattr(video_decode, "NETWORK_TIMEOUT_S", 2.0)  # the CLI's 15 s, shortened for the test
    url = serve(mode, after_s=3) + "/long.mp4"
    with caplog.at_level(logging.WARNING):
        code = main([url, "--model", "tiny-random", "--json", "-q", "What happened?", "--max-new-tokens", "3"])
    assert code == 0  # answered from what was watched, and said where the stream stopped
    [answer] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert answer["video_time_s"] < 10 * CLIP_S / 2  # it stopped well before the clip's end
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "stream" in r.getMessage()]
    assert words in line and url in line
    if mode == "freeze":
        assert "nothing came for 2 s" in line
