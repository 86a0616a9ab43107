"""`streamer-ui --stream SOURCE`: one server-side stream, read once, that every page watches and asks about on a
fork of its own (the "Shared stream" tab): through gradio_client and in a browser."""

from __future__ import annotations

import threading

import pytest
from gradio_client import Client
from playwright.sync_api import expect

from conftest import assert_same_state, cache_state
from streamer.app.state import UiSettings
from streamer.app.ui import build_demo, launch
from streamer.frames import open_source
from streamer.kv_window import WindowConfig
from streamer.models.registry import load_model
from streamer.world.sample_video import write_sample
from test_ui import free_port, text_of, wait_until
from test_ui_browser import browser, pw  # noqa: F401 (the browser fixtures)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    clip = write_sample(tmp_path_factory.mktemp("shared") / "street.mp4", seconds=4, fps=2)
    settings = UiSettings(fps=2.0, chunk_frames=2, max_new_tokens=6, max_sessions_per_client=16, skip=None)
    demo = build_demo(load_model("tiny-random"), window=WindowConfig(budget=128), settings=settings,
                      stream=(open_source(str(clip)), "street.mp4"))
    port = free_port()
    launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    wait_until(lambda: demo.shared.feed.state == "done", timeout=60)
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()


def test_every_page_asks_the_one_stream_on_its_own_fork(app):
    demo, url = app
    stream = demo.shared.session
    before, frames = cache_state(stream), demo.shared.stats["frames_ingested"]
    assert frames == 8  # 4 s at 2 fps, read once whatever the number of pages
    clients = {name: Client(url, verbose=False) for name in ("ann", "bob")}
    chats: dict[str, list] = {}

    def use(name):
        client = clients[name]
        client.predict(f"What does {name} see?", api_name="/shared_ask")
        chats[name] = client.predict(f"And {name} again?", api_name="/shared_ask")[0]

    threads = [threading.Thread(target=use, args=(name,)) for name in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, chat in chats.items():  # each page its own two turns, none of the other's
        asked = [text_of(m) for m in chat if m["role"] == "user"]
        assert asked == [f"What does {name} see?", f"And {name} again?"]
    assert_same_state(cache_state(stream), before)  # the questions left no trace in the stream's cache
    assert demo.shared.stats["frames_ingested"] == frames
    assert len(stream.history) == 0  # nor the stream's own chat
    status = clients["ann"].predict(api_name="/shared_status")
    assert "Watched all of street.mp4: 8 frames" in status
    assert clients["ann"].predict(api_name="/shared_clear") == []
    again = clients["ann"].predict("Hello?", api_name="/shared_ask")[0]
    assert [text_of(m) for m in again if m["role"] == "user"] == ["Hello?"]  # a new chat, a new fork
    own = [u for u in demo.registry.users() if u.viewer is not None]
    assert len(own) == 2 and all(u.stats["frames_ingested"] == 0 for u in own)  # the pages' own caches stay empty


def test_a_page_chats_about_the_shared_stream_in_a_browser(app, browser):  # noqa: F811
    demo, url = app
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.get_by_role("tab", name="Shared stream").click()
    expect(page.locator("#shared-status")).to_contain_text("street.mp4")
    page.locator("#shared-question textarea").fill("What is on screen?")
    page.locator("#shared-ask").click()
    expect(page.locator("#shared-chat .message-row")).to_have_count(2)  # the question and its answer
    expect(page.locator("#shared-chat")).to_contain_text("What is on screen?")
    page.close()


def test_a_shared_stream_that_cannot_be_opened_is_one_line(capsys, tmp_path):
    from streamer.app import ui

    assert ui.main(["--stream", str(tmp_path / "missing.mp4"), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.mp4" in err and len(err.splitlines()) == 1, err
