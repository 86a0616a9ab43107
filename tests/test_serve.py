"""streamer-serve without a Ray cluster: the HTTP API and its page over in-process SessionHosts (app/serve_api.py,
app/hosting.py), Ray Serve's session router on stand-in replicas, and the command's refusals. The run on Ray
Serve itself (2 replicas, 8 clients, a replica killed mid-run) is bench/bench_serve.py, BENCHMARKS section 17.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import uvicorn
from fastapi.testclient import TestClient
from playwright.sync_api import expect

from streamer.app.hosting import ENDED, LOST, SessionHost, replica_of
from streamer.app.serve_api import Unreachable, in_thread, make_api
from streamer.app.state import NO_VIDEO, UiSettings
from streamer.kv_window import WindowConfig
from streamer.models.registry import load_model
from streamer.world.sample_video import write_sample
from test_ui import free_port
from test_ui_browser import browser, pw  # noqa: F401 (the browser fixtures)

SETTINGS = dict(fps=2.0, chunk_frames=2, max_new_tokens=6, skip=None)


@pytest.fixture(scope="module")
def adapter():
    return load_model("tiny-random")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_sample(tmp_path_factory.mktemp("serve") / "clip.mp4", seconds=4, fps=2)


def host(adapter, replica: str, **settings) -> SessionHost:
    return SessionHost(adapter, WindowConfig(budget=128), UiSettings(**SETTINGS | settings), replica=replica)


class Backend:
    """Where the API's calls go: a host in this process (swapped for another to play a restarted replica), or a
    dead one (`Unreachable`, as when a replica dies under the request)."""

    def __init__(self, target: SessionHost):
        self.target, self.dead = target, False

    async def __call__(self, method, token, *args):
        if self.dead:
            raise Unreachable
        return await asyncio.to_thread(self.target.dispatch, method, token, *args)

    async def stream(self, token, question):
        if self.dead:
            raise Unreachable
        async for item in in_thread(self.target.dispatch_stream(token, question)):
            yield item

    def api(self, **kwargs):
        return make_api(self, self.stream, **kwargs)


def wait_ingested(client, token: str) -> dict:
    for _ in range(600):
        status = client.get(f"/api/sessions/{token}").json()
        if status["state"] != "running":
            return status
        time.sleep(0.1)
    raise AssertionError("the video never finished")


def upload(client, token: str, data: bytes, name: str = "clip.mp4"):
    return client.post(f"/api/sessions/{token}/video", files={"file": (name, data)})


def test_the_api_answers_as_the_host_does_and_keeps_sessions_apart(adapter, clip):
    direct = host(adapter, "direct")
    token = direct.open()["session"]
    direct.upload(token, clip.read_bytes(), "clip.mp4")
    while direct.status(token)["state"] == "running":
        time.sleep(0.1)
    expected = [direct.ask(token, q)["answer"] for q in ("What is on screen?", "What colour is it?")]

    backend = Backend(host(adapter, "a"))
    with TestClient(backend.api()) as client:
        first, second = (client.post("/api/sessions").json() for _ in range(2))
        assert first["replica"] == "a" and replica_of(first["session"]) == "a"
        assert upload(client, first["session"], clip.read_bytes()).status_code == 200
        status = wait_ingested(client, first["session"])
        assert status["state"] == "done" and status["frames_ingested"] == 8 and status["video"] == "clip.mp4"
        with client.stream("POST", f"/api/sessions/{first['session']}/ask", params={"stream": "true"},
                           json={"question": "What is on screen?"}) as reply:  # the answer as it is written
            assert reply.headers["content-type"] == "application/x-ndjson"
            items = [json.loads(line) for line in reply.iter_lines() if line]
        pieces, last = [i["piece"] for i in items[:-1]], items[-1]
        assert len(pieces) >= 2 and "".join(pieces) == last["answer"] == expected[0]
        follow_up = client.post(f"/api/sessions/{first['session']}/ask", json={"question": "What colour is it?"})
        assert follow_up.json()["answer"] == expected[1]  # the same answers, follow-up included
        assert client.get(f"/api/sessions/{first['session']}").json()["turns"] == 2
        other = client.post(f"/api/sessions/{second['session']}/ask", json={"question": "What is on screen?"})
        assert (other.status_code, other.json()["detail"]) == (400, NO_VIDEO)  # nothing of the first session
        assert client.get(f"/api/sessions/{second['session']}").json()["state"] == "none"
        assert client.get("/").text.startswith("<!doctype html>")


def test_a_session_whose_replica_stopped_gets_one_clear_message(adapter, clip):
    backend = Backend(host(adapter, "a"))
    with TestClient(backend.api()) as client:
        token = client.post("/api/sessions").json()["session"]
        upload(client, token, clip.read_bytes())
        wait_ingested(client, token)
        backend.dead = True  # the replica dies while a question is on its way
        died = client.post(f"/api/sessions/{token}/ask", json={"question": "What is on screen?"})
        assert (died.status_code, died.json()["detail"]) == (503, LOST)
        backend.dead, backend.target = False, host(adapter, "b")  # the next request reaches another replica
        for reply in (client.get(f"/api/sessions/{token}"),
                      client.post(f"/api/sessions/{token}/ask?stream=true", json={"question": "What is on screen?"}),
                      client.post(f"/api/sessions/{token}/ask", json={"question": "What is on screen?"}),
                      upload(client, token, clip.read_bytes())):
            assert (reply.status_code, reply.json()["detail"]) == (410, LOST)  # never an empty cache's answer
        fresh = client.post("/api/sessions").json()["session"]  # a new session works on the survivor
        assert replica_of(fresh) == "b" and client.get(f"/api/sessions/{fresh}").json()["state"] == "none"
        client.delete(f"/api/sessions/{fresh}")
        assert client.get(f"/api/sessions/{fresh}").json()["detail"] == ENDED
        assert client.get("/api/sessions/made-up").status_code == 410


def test_a_bad_upload_keeps_the_video_and_the_chat(adapter, clip, monkeypatch):
    backend = Backend(host(adapter, "a"))
    with TestClient(backend.api(max_upload_mb=1)) as client:
        token = client.post("/api/sessions").json()["session"]
        upload(client, token, clip.read_bytes())
        wait_ingested(client, token)
        assert client.post(f"/api/sessions/{token}/ask", json={"question": "What is on screen?"}).status_code == 200
        bad = upload(client, token, b"not a video at all" * 100, "broken.mp4")
        assert bad.status_code == 400 and "broken.mp4" in bad.json()["detail"]
        assert "streamer-serve-" not in bad.json()["detail"]  # not the server's upload folder
        big = upload(client, token, b"\0" * (2**20 + 1))
        assert (big.status_code, big.json()["detail"]) == (413, "the upload is over 1 MB, the most this server takes")
        with monkeypatch.context() as patch:  # the server's disk is full
            patch.setattr(Path, "write_bytes", lambda self, data: (_ for _ in ()).throw(OSError(28, "No space left")))
            full = upload(client, token, clip.read_bytes(), "next.mp4")
        assert (full.status_code, full.json()["detail"]) == (400, "the server cannot store next.mp4: No space left")
        status = client.get(f"/api/sessions/{token}").json()
        assert (status["state"], status["frames_ingested"], status["turns"]) == ("done", 8, 1)
        assert client.post(f"/api/sessions/{token}/ask", json={"question": "And now?"}).status_code == 200
        assert client.get(f"/api/sessions/{token}").json()["turns"] == 2  # the chat went on from where it was


def test_one_client_cannot_take_every_slot(adapter, clip):
    backend = Backend(host(adapter, "a", max_sessions=4, max_sessions_per_client=1, realtime=True))
    with TestClient(backend.api()) as client:
        token = client.post("/api/sessions").json()["session"]
        upload(client, token, clip.read_bytes())  # played at video speed: it holds a video for 4 s
        full = client.post("/api/sessions")
        assert full.status_code == 429 and "the most one client may hold" in full.json()["detail"]
        assert client.get(f"/api/sessions/{token}").json()["state"] == "running"  # the first one goes on


def test_the_session_router_sends_a_token_to_the_replica_that_made_it():
    from streamer.app.serve import SessionRouter

    router = SessionRouter.__new__(SessionRouter)  # the routing decision alone, without Ray's machinery
    router.initialize_state()
    replicas = [SimpleNamespace(replica_id=SimpleNamespace(unique_id=name), routing_stats={"sessions": n, "report": 1})
                for name, n in (("r1", 5), ("r2", 1), ("r3", 3))]

    def choose(token):
        request = SimpleNamespace(metadata=SimpleNamespace(multiplexed_model_id=token),
                                  routing_context=SimpleNamespace(should_backoff=False))
        ranks = asyncio.run(router.choose_replicas(replicas, request))
        return [rank[0].replica_id.unique_id for rank in ranks]

    assert choose(f"r2.{'0' * 32}") == ["r2"]  # always its own replica, busy or not
    # new sessions (or one whose replica is gone, which any replica answers with LOST): the fewest sessions
    # first, counting those sent since the last report, so a burst of new sessions is spread
    assert [choose("")[0] for _ in range(2)] == ["r2", "r2"]
    assert sorted(choose("")[0] for _ in range(2)) == ["r2", "r3"]  # both at 4 now (r1 at 5)
    assert choose(f"r9.{'0' * 32}")[0] in ("r2", "r3")  # a lost session's request opens nothing: counts stay
    assert sorted(choose("")[0] for _ in range(2)) == ["r2", "r3"]
    replicas[1].routing_stats = {"sessions": 9, "report": 2}  # new reports: their counts stand on their own
    replicas[2].routing_stats = {"sessions": 0, "report": 2}
    assert choose("") == ["r3", "r1", "r2"]


def test_streamer_serve_refuses_bad_options_in_one_line(capsys):
    from streamer.app import serve

    for argv, words in ((["--replicas", "0"], "--replicas"), (["--replica-cpus", "0"], "--replica-cpus"),
                        (["--budget", "-3"], "--budget")):
        with pytest.raises(SystemExit) as exit:
            serve.main(argv)
        assert exit.value.code == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err
    app = serve.build_app({"replicas": 3, "budget": 256, "skip_static": "off"})
    assert type(app).__name__ == "Application"


def test_a_replica_that_cannot_start_is_one_line(monkeypatch):
    from streamer.app import serve

    traceback = ("RuntimeError: Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                 "streamer.errors.ModelLoadError: cannot load model '/no/such': not a local directory\n")
    status = SimpleNamespace(applications={"streamer": SimpleNamespace(
        deployments={"streamer": SimpleNamespace(message=traceback)})})
    monkeypatch.setattr(serve.serve, "status", lambda: status)
    assert serve.replica_failure() == "cannot load model '/no/such': not a local directory"
    status.applications["streamer"].deployments["streamer"].message = "MemoryError: out of memory\n"
    assert serve.replica_failure() == "MemoryError: out of memory"


@pytest.fixture()
def served(adapter):
    backend = Backend(host(adapter, "a"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(backend.api(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield backend, f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


def test_the_page_chats_and_says_when_the_replica_stopped(browser, served, clip, adapter):  # noqa: F811
    backend, url = served
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.set_input_files("#file", str(clip))
    page.click("#upload")
    expect(page.locator("#status")).to_contain_text("clip.mp4: done, 8 frames")
    page.fill("#question", "What is on screen?")
    page.click("#ask")
    expect(page.locator("#chat .a")).to_have_count(1)
    expect(page.locator("#chat .a")).to_have_text(re.compile(r"^A: +\S"))  # streamed in, piece by piece
    expect(page.locator("#error")).to_have_text("")
    backend.target = host(adapter, "b")  # the replica restarted: the session is gone
    page.fill("#question", "And now?")
    page.click("#ask")
    expect(page.locator("#error")).to_have_text(LOST)
    expect(page.locator("#restart")).to_be_visible()
    expect(page.locator("#ask")).to_be_disabled()
    assert page.locator("#chat .a").count() == 1  # the chat so far stays on the page
    page.close()
