"""The web UI (app/ui.py) driven through `gradio_client`, plus its pure helpers (app/plots.py, app/state.py,
app/sessions.py).

The app runs in-process with the `tiny-random` model (answers are noise, so tests check the plumbing:
streaming, progress, isolation, errors) and feeds uploads at video speed (`realtime`), so a question
can be asked while a video is still being watched. A hostile client is played through Gradio's plain
REST API (made-up session hashes, X-Forwarded-For for other addresses); bad addresses go through
`main(argv)`. Videos are generated into tmp dirs.
"""

from __future__ import annotations

import gc
import re
import socket
import threading
import time
import weakref

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from streamer.app import plots, state, ui
from streamer.app.sessions import ClosedPageError, SessionRegistry
from streamer.app.state import History, Sample, UiSettings
from streamer.app.ui import build_demo, feed_status, launch
from streamer.models.registry import load_model
from streamer.errors import ConfigError, SourceError, StreamerError
from streamer.frames import open_source
from streamer.video.frame import Frame, VideoSource
from streamer.kv_window import WindowConfig
from streamer.world.sample_video import write_sample

BUDGET = 128
pytestmark = pytest.mark.timeout(180)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def adapter():
    return load_model("tiny-random")


@pytest.fixture(scope="module")
def app(adapter):
    # every test client comes from 127.0.0.1: let that address hold every slot
    # skip=None: these tests count and evict every frame (the default skip is tested in test_redundancy.py
    # and, through a real server, in test_checkpoints.py)
    settings = UiSettings(realtime=True, chunk_frames=2, max_new_tokens=8, max_sessions_per_client=16, skip=None)
    demo = build_demo(adapter, window=WindowConfig(policy="combined", budget=BUDGET), settings=settings)
    port = free_port()
    launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ui_videos")
    made = {s: write_sample(folder / f"clip{s}.mp4", seconds=s, fps=5, frame_size=128) for s in (3, 6, 9, 10)}
    bad = folder / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    made["bad"] = bad
    return made


def refresh(client: Client) -> dict:
    status, stats_box, plot, timeline, layers, raw = client.predict(api_name="/refresh")
    return {"status": status, "stats": raw, "plot": plot, "timeline": timeline, "layers": layers, "box": stats_box}


def wait_for(client: Client, check, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        panel = refresh(client)
        if check(panel):
            return panel
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last status: {panel['status']} stats: {panel['stats']}")
        time.sleep(0.25)


def wait_until(check, timeout: float = 30.0) -> None:
    """Wait (a guard, not a measurement) until another thread has made `check()` true."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def text_of(message: dict) -> str:
    content = message["content"]
    if isinstance(content, list):  # Gradio 6 returns a list of parts
        return "".join(part.get("text", "") for part in content)
    return content


def progress_pct(status_html: str) -> int | None:
    m = re.search(r'data-pct="(\d+)"', status_html)
    return int(m.group(1)) if m else None


# ---- the app through gradio_client ------------------------------------------------------------------


def test_ask_while_a_video_is_still_being_watched(app, videos):
    demo, url = app
    client = Client(url, verbose=False)
    assert client.predict(handle_file(videos[10]), api_name="/load_video") == []
    panel = wait_for(client, lambda p: p["stats"]["frames_ingested"] >= 2)
    assert "Watching clip10.mp4" in panel["status"]
    assert 0 < progress_pct(panel["status"]) < 100, panel["status"]

    job = client.submit("What moves on the screen?", api_name="/ask")
    chat, box = job.result(timeout=60)
    outputs = job.outputs()
    assert box == ""
    assert [m["role"] for m in chat] == ["user", "assistant"]
    assert text_of(chat[0]) == "What moves on the screen?"
    answer = text_of(chat[1])
    assert answer
    streamed = [text_of(c[-1]) for c, _ in outputs[1:-1]]  # after the "..." placeholder
    assert len(streamed) >= 2, "the answer should arrive in several pieces"
    assert all(answer.startswith(s) for s in streamed) and len(set(streamed)) >= 2

    user = demo.registry.get(client.session_hash, create=False)
    assert user.session.history[0].video_time_s < 9.0  # answered from the part seen so far

    done = wait_for(client, lambda p: "Watched all" in p["status"])
    stats = done["stats"]
    assert stats["frames_ingested"] == 10 and progress_pct(done["status"]) == 100
    assert stats["turns"] == 1
    assert stats["kv_tokens"] <= BUDGET and stats["evicted"] > 0
    assert stats["layer_budgets"] == [BUDGET, BUDGET]
    held = int(re.search(r'data-held="(\d+)"', done["timeline"]).group(1))
    assert held == len(stats["video_times"]) and 0 < held < 10  # the cache forgot some moments
    assert done["layers"].count('class="layer"') == 2
    assert 'data-stat="frames"' in done["box"] and ">10<" in done["box"]


def test_two_clients_keep_separate_sessions(app, videos):
    demo, url = app
    plan = {"a": (videos[6], "Which colour is the square?", 6), "b": (videos[9], "What time does the clock show?", 9)}
    clients = {k: Client(url, verbose=False) for k in plan}
    results: dict[str, object] = {}

    def use(key):
        client, (video, question, _) = clients[key], plan[key]
        try:
            client.predict(handle_file(video), api_name="/load_video")
            wait_for(client, lambda p: p["stats"]["frames_ingested"] >= 2)
            chat, _ = client.predict(question, api_name="/ask")
            done = wait_for(client, lambda p: "Watched all" in p["status"])
            results[key] = (chat, done)
        except Exception as err:  # reported below, in the test thread
            results[key] = err

    threads = [threading.Thread(target=use, args=(k,)) for k in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for key, (video, question, frames) in plan.items():
        assert not isinstance(results[key], Exception), results[key]
        chat, done = results[key]
        other_question = plan["b" if key == "a" else "a"][1]
        assert [text_of(m) for m in chat if m["role"] == "user"] == [question]
        assert other_question not in str(chat)
        assert done["stats"]["frames_ingested"] == frames and done["stats"]["turns"] == 1
        assert video.name in done["status"]
    assert clients["a"].session_hash != clients["b"].session_hash
    sessions = [demo.registry.get(c.session_hash, create=False) for c in clients.values()]
    assert sessions[0].session is not sessions[1].session
    assert sessions[0].session.lock is not sessions[1].session.lock  # each its own; decoding steps batched:
    assert sessions[0].session.batcher is sessions[1].session.batcher is demo.registry.batcher is not None


def test_the_page_picks_the_policy_and_budget_for_the_next_video(app, videos):
    """The cache settings on the page apply to the next video; a bad one is a message and changes nothing."""
    demo, url = app
    client = Client(url, verbose=False)
    client.predict(handle_file(videos[3]), "knorm+pool=9", 40, api_name="/load_video")
    panel = wait_for(client, lambda p: "Watched all" in p["status"])
    user = demo.registry.get(client.session_hash, create=False)
    assert user.session.window.policy == "knorm+pool=9" and user.session.window.budget == 40
    assert panel["stats"]["budget"] == 40 and panel["stats"]["composition"] == "knorm+pool=9"
    first, _ = client.predict("Is there a circle?", api_name="/ask")
    for policy, budget, words in (("knorm+glue", 40, "glue"), ("recall", 3, "minimum value 8"), ("recall", 10**6, "positions")):
        with pytest.raises(AppError, match=words):
            client.predict(handle_file(videos[6]), policy, budget, api_name="/load_video")
    panel = refresh(client)  # the old video, its cache and settings, and the chat are untouched
    assert "clip3.mp4" in panel["status"] and panel["stats"]["budget"] == 40
    assert user.session.window.policy == "knorm+pool=9" and len(user.chat) == 2
    client.predict(handle_file(videos[6]), "sink-recent", 48, api_name="/load_video")  # a good one: a new cache
    wait_for(client, lambda p: "clip6.mp4" in p["status"] and p["stats"]["budget"] == 48)
    assert user.session.window.policy == "sink-recent" and user.session.cache.cfg.budget == 48


def test_errors_are_messages_and_keep_the_chat(app, videos):
    demo, url = app
    client = Client(url, verbose=False)
    client.predict(handle_file(videos[3]), api_name="/load_video")
    wait_for(client, lambda p: "Watched all" in p["status"])
    first, _ = client.predict("Is there a circle?", api_name="/ask")
    assert len(first) == 2

    with pytest.raises(AppError, match="broken.mp4 is not a readable video"):
        client.predict(handle_file(videos["bad"]), api_name="/load_video")
    panel = refresh(client)  # the old video, its cache and the chat are untouched
    assert "clip3.mp4" in panel["status"] and panel["stats"]["frames_ingested"] == 3

    with pytest.raises(AppError, match="shorten the question"):
        client.predict("why " * 400, api_name="/ask")
    with pytest.raises(AppError, match="type a question"):
        client.predict("   ", api_name="/ask")

    chat, _ = client.predict("And now?", api_name="/ask")  # the app still answers, the chat goes on
    assert [text_of(m) for m in chat if m["role"] == "user"] == ["Is there a circle?", "And now?"]
    assert text_of(chat[1]) == text_of(first[1])
    assert refresh(client)["stats"]["turns"] == 2

    assert client.predict(api_name="/clear") == []
    cleared = refresh(client)["stats"]
    assert cleared["kv_tokens"] == 0 and cleared["turns"] == 0 and cleared["video_times"] == []


def call_api(url: str, api: str, data: list, session_hash: str, client: str | None = None) -> tuple[str, str]:
    """One call of a named endpoint through Gradio's plain REST API (`/gradio_api/call/NAME`), as any HTTP
    client can make it, with a session hash of its choosing; `client` goes in X-Forwarded-For (which the
    server trusts from 127.0.0.1, as behind a local reverse proxy). Returns (last event, its data)."""
    headers = {"X-Forwarded-For": client} if client else {}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        posted = http.post(f"gradio_api/call/{api}", json={"data": data, "session_hash": session_hash})
        posted.raise_for_status()
        reply = http.get(f"gradio_api/call/{api}/{posted.json()['event_id']}").text
    events = re.findall(r"^event: (\w+)\ndata: (.*)$", reply, re.MULTILINE)
    return events[-1]


def upload(url: str, path) -> dict:
    with httpx.Client(base_url=url, timeout=60) as http:
        files = http.post("gradio_api/upload", files={"files": (path.name, path.read_bytes())})
    return {"path": files.json()[0], "meta": {"_type": "gradio.FileData"}}


def test_made_up_sessions_cannot_lock_out_a_new_user(adapter, videos):
    settings = UiSettings(max_sessions=4, max_new_tokens=4)  # 1 session per client address
    demo = build_demo(adapter, window=WindowConfig(budget=BUDGET), settings=settings)
    port = free_port()
    launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        # one client floods the server: questions, then videos, each with a made-up session hash
        asked = [call_api(url, "ask", ["what is there?"], f"made-up-{i}") for i in range(16)]
        video = upload(url, videos[3])
        loaded = [call_api(url, "load_video", [video, None, None], f"flood-{i}") for i in range(6)]

        user = Client(url, verbose=False, headers={"X-Forwarded-For": "10.1.2.3"})  # somebody else
        user.predict(handle_file(videos[3]), api_name="/load_video")  # still gets a slot
        wait_for(user, lambda p: p["stats"]["frames_ingested"] >= 1)
        chat, _ = user.predict("What is there?", api_name="/ask")
        assert text_of(chat[0]) == "What is there?" and len(chat) == 2

        for event, data in asked:  # a question says there is no video, and takes no slot
            assert event == "error" and "load a video or start the webcam first" in data, (event, data)
        assert [event for event, _ in loaded].count("complete") == 1, loaded  # one slot per address here
        assert "this address already holds 1 sessions" in loaded[-1][1]
        assert sorted(u.client for u in demo.registry.users()) == ["10.1.2.3", "127.0.0.1"]
        # Gradio's own per-hash copies of the page stay bounded too: 4 per slot, not its default 10000
        assert len(demo.state_holder.session_data) <= 4 * settings.max_sessions < len(asked) + len(loaded) + 1
    finally:
        demo.close()


# ---- starting the server ----------------------------------------------------------------------------


@pytest.fixture()
def busy_port():
    """A port another server is listening on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


@pytest.mark.parametrize("argv, says", [
    (["--port", "{busy}"], "--port {busy} is already in use on 127.0.0.1"),
    (["--host", "0.0.0.0", "--port", "{busy}"], "--port {busy} is already in use on 0.0.0.0"),
    (["--port", "70000"], "argument --port: must be a whole number in [1, 65535], got '70000'"),
    (["--port", "-1"], "argument --port: must be a whole number in [1, 65535], got '-1'"),
    (["--port", "http"], "argument --port: must be a whole number in [1, 65535], got 'http'"),
    (["--host", "192.0.2.1"], "--host 192.0.2.1 is not an address of this machine"),  # TEST-NET-1: never local
    (["--host", "no-such-host.invalid"], "--host 'no-such-host.invalid' is not a known host name"),
])  # fmt: skip
def test_launch_errors_are_one_line_and_exit_2(argv, says, busy_port, capsys):
    argv = ["--model", "tiny-random", *(a.format(busy=busy_port) for a in argv)]
    try:
        code = ui.main(argv)
    except SystemExit as exit:  # argparse
        code = exit.code
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and says.format(busy=busy_port) in lines[0], lines


def test_launch_reports_a_port_taken_after_the_check(adapter, busy_port):
    demo = build_demo(adapter, window=WindowConfig(budget=BUDGET))
    try:
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{busy_port}: the port is in use"):
            launch(demo, port=busy_port, prevent_thread_lock=True, quiet=True)
    finally:
        demo.close()


# ---- per-session state without the server --------------------------------------------------------


def with_video(user):
    """Make `user` look like a session whose cache holds frames (what the slot rules read)."""
    user.stats = {**user.stats, "frames_ingested": 3}
    return user


def test_registry_refuses_when_full_and_recycles_unused_sessions(adapter):
    settings = UiSettings(max_sessions=2, max_sessions_per_client=2, idle_timeout_s=600, empty_timeout_s=30)
    registry = SessionRegistry(adapter, WindowConfig(budget=64), settings)
    first, second = with_video(registry.get("first")), with_video(registry.get("second"))
    assert registry.get("first") is first and registry.get("nobody", create=False) is None
    with pytest.raises(StreamerError, match="already holds 2 sessions"):
        registry.get("third")  # both in use, both with a video
    first.last_active -= 40  # unused past empty_timeout_s (no page polls it): its slot may be taken
    third = registry.get("third")
    assert len(registry) == 2 and registry.get("first", create=False) is None
    assert third.session.batcher is registry.batcher and first.session is not third.session
    registry.get("fourth")  # `third` holds no video: a newcomer takes its slot at once, in use or not
    assert registry.get("third", create=False) is None and len(registry) == 2
    assert registry.get("second", create=False) is second  # the session with a video was never recycled
    registry.drop("second")
    registry.drop("fourth")
    assert len(registry) == 0


def test_a_closed_page_is_not_revived_by_its_late_events(adapter):
    registry = SessionRegistry(adapter, WindowConfig(budget=64), UiSettings(max_sessions=4))
    registry.get("tab")
    registry.drop("tab")  # the tab's unload
    with pytest.raises(ClosedPageError, match="reload"):
        registry.get("tab")  # a webcam frame it sent before closing arrives now
    assert registry.get("tab", create=False) is None and len(registry) == 0
    assert registry.get("another tab") is not None and len(registry) == 1


def test_sessions_without_a_video_expire_quickly_and_idle_ones_later(adapter):
    settings = UiSettings(max_sessions=4, idle_timeout_s=600, empty_timeout_s=60)
    registry = SessionRegistry(adapter, WindowConfig(budget=64), settings)
    empty, watched = registry.get("empty", client="a"), with_video(registry.get("watched", client="b"))
    empty.last_active -= 61
    watched.last_active -= 300
    registry.get("other", create=False)  # any registry call sweeps
    assert registry.get("empty", create=False) is None and registry.get("watched", create=False) is watched
    watched.last_active -= 601
    registry.get("other", create=False)
    assert len(registry) == 0


def test_one_client_cannot_take_every_slot(adapter):
    settings = UiSettings(max_sessions=8, empty_timeout_s=60)  # per client: 8 // 4 = 2
    registry = SessionRegistry(adapter, WindowConfig(budget=64), settings)
    for key in ("a1", "a2"):
        with_video(registry.get(key, client="10.0.0.1"))
    with pytest.raises(StreamerError, match="this address already holds 2 sessions"):
        registry.get("a3", client="10.0.0.1")
    assert registry.get("b1", client="10.0.0.2") is not None  # other clients still get slots
    registry.get("a1").stats["frames_ingested"] = 0  # one of its own without a video: it gives way
    registry.get("a3", client="10.0.0.1")
    assert registry.get("a1", create=False) is None and len(registry) == 3
    wide = SessionRegistry(adapter, WindowConfig(budget=64), UiSettings(max_sessions=3, max_sessions_per_client=3))
    for key in ("x", "y", "z"):
        with_video(wide.get(key, client="127.0.0.1"))  # configurable, e.g. behind a reverse proxy
    assert len(wide) == 3 and UiSettings(max_sessions=2).client_cap == 1


def test_a_question_before_any_video_says_so(adapter, videos):
    registry = SessionRegistry(adapter, WindowConfig(budget=64), UiSettings(realtime=True))
    user = registry.get("early")
    with pytest.raises(StreamerError, match="load a video or start the webcam first"):
        "".join(user.ask("what is on screen?"))
    feed = user.start_video(open_source(videos[9]), "clip9.mp4")  # realtime: 4 s until the first chunk
    with pytest.raises(StreamerError, match="first frames of clip9.mp4 are still being read"):
        "".join(user.ask("and now?"))
    feed.stop()
    user.clear()  # a stopped feed and an empty cache: nothing to ask about again
    with pytest.raises(StreamerError, match="load a video or start the webcam first"):
        "".join(user.ask("and now?"))
    assert user.stats["turns"] == 0
    registry.drop("early")


def test_webcam_frames_are_throttled_to_fps_and_all_ingested(adapter, monkeypatch, videos, wall):
    monkeypatch.setattr(state, "WEBCAM_RESTART_GAP_S", 0.3)
    registry = SessionRegistry(adapter, WindowConfig(budget=64), UiSettings(fps=10, webcam_chunk_frames=1, skip=None))
    user = registry.get("cam")
    image = np.zeros((48, 64, 3), np.uint8)
    results = []
    for _ in range(40):  # a browser sending 40 frames per second for 1 s (of the test's clock)
        results.append(user.push_webcam(image))
        wait_until(lambda: user.stats["frames_ingested"] >= results.count("queued") + results.count("started"))
        wall.sleep(0.025)
    queued = results.count("queued") + results.count("started")
    assert results[0] == "started" and results.count("started") == 1
    assert queued == 10, results  # 10 fps
    assert user.stats["frames_ingested"] == queued and user.feed.kind == "webcam"

    user.push_webcam(image)
    user.start_video(open_source(videos[3]), "clip3.mp4")  # the browser keeps streaming its webcam...
    assert user.push_webcam(image) == "skipped" and user.feed.kind == "video"  # ...but the video wins
    wall.sleep(0.4)
    assert user.push_webcam(image) == "started" and user.feed.kind == "webcam"  # a restarted webcam wins
    registry.drop("cam")
    assert user.feed.stopped and user.feed.join(10)


def test_a_model_slower_than_the_webcam_shows_its_lag_and_warns(adapter, monkeypatch):
    """A model needing 0.3 s a frame behind a 10 fps webcam: the pipeline samples the webcam at the rate that keeps
    up (0.9 / 0.3 = 3 fps) and says so in one warning toast; the status line and the panel show the lag behind
    live and the frames dropped to keep up (lag_s, frames_dropped)."""
    from conftest import slow_ingest

    monkeypatch.setattr(state, "WEBCAM_RESTART_GAP_S", 0.3)
    slow_ingest(monkeypatch, 0.3)
    registry = SessionRegistry(adapter, WindowConfig(budget=64), UiSettings(fps=10, webcam_chunk_frames=1, skip=None))
    user = registry.get("slowcam")
    image = np.zeros((48, 64, 3), np.uint8)
    for _ in range(100):  # 2 s of webcam at 50 frames a second
        user.push_webcam(image)
        time.sleep(0.02)
    deadline = time.monotonic() + 10
    while not user.stats.get("frames_dropped") and time.monotonic() < deadline:
        time.sleep(0.05)
    status, panel = feed_status(user), plots.stats_html(user.stats)
    assert "behind live (lag_s)" in status and "dropped to keep up (frames_dropped)" in status, status
    assert 'data-stat="lag_s"' in panel and 'data-stat="frames_dropped"' in panel
    assert user.stats["frames_dropped"] > 0 and 0 <= user.stats["lag_s"] < 5, user.stats
    warnings = user.pop_errors()
    assert len(warnings) == 1 and "sampled at 3 fps instead of 10" in warnings[0], warnings
    registry.drop("slowcam")


def test_when_an_answer_ends_its_turn_is_counted_and_the_next_question_is_taken(adapter, videos, monkeypatch):
    """The stats snapshot and the answer slot are settled before the caller hears the answer end: a slow
    snapshot (a busy model lock) used to leave the finished answer uncounted, or the next question refused."""
    registry = SessionRegistry(adapter, WindowConfig(budget=64), UiSettings(max_new_tokens=2))
    user = registry.get("turns")
    assert user.start_video(open_source(videos[3]), "clip3.mp4").join(30)
    stats = user.session.stats
    monkeypatch.setattr(user.session, "stats", lambda: time.sleep(0.3) or stats())
    for turn in (1, 2):
        assert "".join(user.ask("what was there?"))
        assert user.stats["turns"] == turn
    registry.drop("turns")


def test_a_dropped_session_is_freed_at_once(adapter, videos):
    """A dropped session goes (its cache, its feed, the video decoder and the decoder's threads) as soon as
    the last reference does, not at the next cyclic garbage collection: when feed and session referred to
    each other, the server's memory rose with every closed session until the collector happened to run."""
    registry = SessionRegistry(adapter, WindowConfig(budget=64), UiSettings(max_new_tokens=4))
    user = registry.get("gone")
    feed = user.start_video(open_source(videos[3]), "clip3.mp4")
    assert feed.join(30) and "".join(user.ask("what was there?"))
    refs = [weakref.ref(thing) for thing in (user, user.session, user.session.cache, feed, feed.source)]
    del user, feed
    gc.disable()  # only reference counting may free them
    try:
        registry.drop("gone")
        deadline = time.monotonic() + 5  # the answer's worker thread may still be returning
        while any(r() is not None for r in refs) and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = [type(r()).__name__ for r in refs if r() is not None]
    finally:
        gc.enable()
    assert alive == []


class FailingSource(VideoSource):
    """Two good frames, then the decoder gives up (as a cut network stream would)."""

    name = "flaky.mp4"
    duration_s = 10.0

    def _read(self, grid):
        for t in (0.0, 1.0):
            if grid.take(t):
                yield Frame(np.full((32, 32, 3), 128, np.uint8), t)
        raise SourceError("flaky.mp4: the stream broke off at 1.0 s")


def test_a_feed_that_fails_shows_its_error_and_keeps_what_it_saw(adapter):
    registry = SessionRegistry(adapter, WindowConfig(budget=64), UiSettings(chunk_frames=1, skip=None))
    user = registry.get("flaky")
    feed = user.start_video(FailingSource(), "flaky.mp4")
    assert feed.join(30)
    assert feed.state == "error" and feed.frames == 2 and user.stats["frames_ingested"] == 2
    assert user.pop_errors() == ["flaky.mp4: the stream broke off at 1.0 s"] and user.pop_errors() == []
    status = feed_status(user)
    assert "after 2 frames" in status and 'class="error"' in status and "broke off" in status
    assert 'data-pct="20"' in status  # 2 of the 10 frames the header announced
    assert "".join(user.ask("what was seen?"))  # the session still answers from the 2 frames
    registry.drop("flaky")


def test_history_stays_bounded_and_spans_the_whole_stream():
    history = History(capacity=8)
    for i in range(1000):
        history.add(Sample(float(i), 100, 200))
    times = [s.video_time_s for s in history.samples()]
    assert 4 <= len(times) <= 8
    assert times[0] == 0.0 and times[-1] > 800  # still from the start to near the end
    gaps = np.diff(times)
    assert gaps.min() == gaps.max()  # evenly spread
    version = history.version
    history.clear()
    assert len(history) == 0 and history.version > version


@pytest.mark.parametrize("bad", [{"fps": 0}, {"chunk_frames": 0}, {"max_sessions": 0}, {"history_points": 2},
                                 {"idle_timeout_s": 0}, {"empty_timeout_s": 0}, {"max_sessions_per_client": 0},
                                 {"max_sessions": 4, "max_sessions_per_client": 5}])
def test_ui_settings_validate(bad):
    with pytest.raises(ValueError):
        UiSettings(**bad)


# ---- figures and HTML ---------------------------------------------------------------------------------


def test_timeline_bins_place_times_by_fraction_of_duration():
    bins = plots.timeline_bins([0.0, 4.9, 5.0, 9.99, 10.0, 25.0, -1.0, float("nan")], 10.0, n_bins=10)
    assert bins == [True, False, False, False, True, True, False, False, False, True]
    assert plots.timeline_bins([1.0], 0.0, 5) == [False] * 5
    assert plots.timeline_bins([], 10.0, 3) == [False] * 3
    with pytest.raises(ValueError):
        plots.timeline_bins([1.0], 10.0, 0)


def test_runs_groups_consecutive_true():
    assert plots.runs([True, True, False, True, False, False, True]) == [(0, 2), (3, 4), (6, 7)]
    assert plots.runs([]) == [] and plots.runs([False]) == []


def test_timeline_html_draws_held_runs_and_seen_part():
    html = plots.timeline_html([0.0, 1.0, 2.0, 7.0], duration_s=10.0, seen_s=8.0, n_bins=10)
    assert html.count('class="held"') == 2  # [0, 3) and [7, 8)
    assert "left:0.00%;width:30.00%" in html and "left:70.00%;width:10.00%" in html
    assert "width:80.00%" in html  # seen up to 8 of 10 s
    assert 'data-held="4"' in html and "of 10.0 s" in html
    live = plots.timeline_html([4.0], duration_s=None, seen_s=4.0, n_bins=4)
    assert "(live)" in live and "left:75.00%" in live  # a webcam spans what was seen so far
    assert "no video yet" in plots.timeline_html([], None, 0.0)


def test_layer_budget_html_one_row_per_layer():
    html = plots.layer_budget_html([100, 50, 30], [100, 80, None])
    assert html.count('class="layer"') == 3
    assert "100 / 100" in html and "50 / 80" in html and "30 (no limit)" in html
    assert "width:50.0%" in html  # 50 of the largest budget (100)
    assert "no layers" in plots.layer_budget_html([], [])


def test_kv_figure_plots_the_samples_and_budget():
    samples = [Sample(t, b, 300 * plots.MB) for t, b in [(0, 1 * plots.MB), (5, 2 * plots.MB), (9, 2 * plots.MB)]]
    fig = plots.kv_figure(samples, budget_bytes=2 * plots.MB)
    kv_ax, rss_ax = fig.axes
    kv_line, budget_line = kv_ax.get_lines()
    assert list(kv_line.get_xdata()) == [0, 5, 9] and list(kv_line.get_ydata()) == [1.0, 2.0, 2.0]
    assert list(budget_line.get_ydata()) == [2.0, 2.0]
    assert list(rss_ax.get_lines()[0].get_ydata()) == [300.0] * 3
    assert kv_ax.get_ylim()[1] >= 2.0
    empty = plots.kv_figure([], None)
    assert [t.get_text() for t in empty.axes[0].texts] == ["no frames yet"]
    fig.canvas.draw()  # renders without a display


def test_stats_and_status_html():
    stats = {"kv_tokens": 120, "budget": 128, "kv_bytes": 3 * plots.MB, "budget_bytes": 4 * plots.MB,
             "peak_kv_bytes": 4 * plots.MB, "frames_ingested": 7, "frames_skipped": 5, "video_time_s": 6.5, "evicted": 40,
             "merged": 39, "rss_bytes": 500 * plots.MB, "kept_by_modality": {"text": 10, "image": 100, "other": 10}}
    html = plots.stats_html(stats)
    for key, value in [("kv", "120 / 128"), ("kv_mb", "3.00 (4.00, 4.00)"), ("frames", "7"), ("skipped", "5"), ("video", "6.5"),
                       ("evicted", "40"), ("merged", "39"), ("rss", "500"), ("kept", "10 / 100 / 10")]:
        assert f'data-stat="{key}" style="font-size:16px;font-weight:600">{value}<' in html
    assert "no limit" in plots.stats_html({"budget": None})
    assert 'data-stat="skipped" style="font-size:16px;font-weight:600">off<' in plots.stats_html({"skip_static": None})
    assert 'font-weight:600">3<' in plots.stats_html({"skip_static": 0.04, "frames_skipped": 3})
    status = plots.status_html("<b>x</b>", progress=1.7, error="bad & worse")
    assert "&lt;b&gt;x&lt;/b&gt;" in status and 'data-pct="100"' in status and "bad &amp; worse" in status
    assert "progress" not in plots.status_html("idle")
