"""The web UI in a real browser: Debian's headless Chromium driven by Playwright.

Loads the page, uploads a generated video, asks a question and sees the streamed answer and the cache
panel fill in; then starts the webcam (Chromium's synthetic camera, `--use-fake-device-for-media-stream`)
and checks frames are ingested; a browser that arrives after API clients took every session slot still
starts. Screenshots go to the test's tmp dir.

Needs `apt-get install chromium` (/usr/bin/chromium) and `pip install playwright` (no `playwright install`:
the Debian browser is used). A missing browser FAILS the test: it is part of the suite, not optional.
"""

from __future__ import annotations

import os
import re
import time

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from streamer.app.state import UiSettings
from streamer.app.ui import build_demo, launch
from streamer.models.registry import load_model
from streamer.kv_window import WindowConfig
from streamer.world.sample_video import write_sample
from test_ui import call_api, free_port, upload  # the REST helpers of the gradio_client tests

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
        "--no-first-run", "--disable-component-update", "--disable-sync",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def app():
    """(demo, url) of the app served in-process; heartbeats every second so closed tabs unload quickly."""
    old_heartbeat = os.environ.get("GRADIO_HEARTBEAT_INTERVAL")
    os.environ["GRADIO_HEARTBEAT_INTERVAL"] = "1"
    settings = UiSettings(fps=2.0, chunk_frames=2, webcam_chunk_frames=1, max_new_tokens=8, skip=None,  # every frame
                          reconnect_grace_s=2)  # a closed tab's session goes 2 s after its last event
    demo = build_demo(load_model("tiny-random"), window=WindowConfig(budget=128), settings=settings)
    port = free_port()
    launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()
    if old_heartbeat is None:
        os.environ.pop("GRADIO_HEARTBEAT_INTERVAL", None)
    else:
        os.environ["GRADIO_HEARTBEAT_INTERVAL"] = old_heartbeat


@pytest.fixture(scope="module")
def url(app):
    return app[1]


@pytest.fixture(scope="module")
def pw():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium (the browser tests need it)")
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(pw):
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    yield browser
    browser.close()


@pytest.fixture()
def page(browser, url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#stats [data-stat=frames]")
    yield page
    if not page.is_closed():
        context.close()


SHOWN_TEXTS_JS = """(sel) => {  // texts of the leaf elements under `sel` that a person can see (opacity counted)
  const shown = (el) => { for (; el; el = el.parentElement) { const cs = getComputedStyle(el);
      if (cs.display === 'none' || cs.visibility === 'hidden' || Number(cs.opacity) === 0) return false; }
    return true; };
  return [...document.querySelectorAll(sel + ' *')].filter(el => !el.children.length && shown(el))
    .map(el => el.textContent.trim()).filter(Boolean);
}"""


def shown_texts(page: Page, selector: str) -> list[str]:
    return page.evaluate(SHOWN_TEXTS_JS, selector)


def stat(page: Page, key: str) -> str:
    return page.inner_text(f"#stats [data-stat={key}]")


def test_upload_ask_and_see_the_cache(page: Page, tmp_path):
    video = write_sample(tmp_path / "street.mp4", seconds=12, fps=5, frame_size=128)
    page.set_input_files("#video input[type=file]", video)
    status = page.locator("#status .status")
    expect(status).to_contain_text("Watched all of street.mp4: 24 frames", timeout=60_000)
    expect(page.locator("#status .progress")).to_have_attribute("data-pct", "100")
    assert stat(page, "frames") == "24" and stat(page, "skipped") == "off"  # this server feeds every frame (skip=None)

    page.fill("#question textarea", "What is moving?")
    page.click("#ask")
    bot = page.locator("#chat .message-row").nth(1)  # the assistant's reply
    expect(page.locator("#chat")).to_contain_text("What is moving?")
    expect(bot).not_to_have_text(re.compile(r"^\s*(\.\.\.)?\s*$"), timeout=60_000)
    expect(page.locator("#question textarea")).to_have_value("")

    tokens, budget = (int(x) for x in stat(page, "kv").split(" / "))
    assert 0 < tokens <= budget == 128
    assert int(stat(page, "evicted")) > 0
    held = int(page.get_attribute("#timeline .timeline", "data-held"))
    assert 0 < held < 24  # some moments still held, some forgotten
    assert page.locator("#timeline .held").count() >= 1
    assert page.locator("#layers .layer").count() == 2
    expect(page.locator("#kv-plot img")).to_be_visible()
    page.screenshot(path=str(tmp_path / "upload.png"), full_page=True)
    assert (tmp_path / "upload.png").stat().st_size > 10_000

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(os.urandom(20_000))
    page.locator("#video button[aria-label='Clear']").click()
    page.set_input_files("#video input[type=file]", broken)
    expect(page.locator(".toast-body").first).to_contain_text("broken.mp4 is not a readable video")
    chat = page.locator("#chat")
    expect(chat).to_contain_text("What is moving?")  # the chat is kept, and visible
    page.wait_for_timeout(500)
    assert "Error" not in shown_texts(page, "#chat"), shown_texts(page, "#chat")  # no badge over the chat
    assert stat(page, "frames") == "24"  # and so is what the cache watched

    too_long = "why " * 400
    page.fill("#question textarea", too_long)
    page.click("#ask")
    expect(page.get_by_text("shorten the question")).to_be_visible()
    expect(page.locator("#question textarea")).to_have_value(too_long.strip())  # back in the box to edit
    expect(chat).to_contain_text("What is moving?")
    assert page.locator("#chat .message-row").count() == 2 and "why why" not in chat.inner_text()
    page.screenshot(path=str(tmp_path / "errors.png"), full_page=True)


def test_webcam_frames_are_ingested_and_the_session_ends_with_the_tab(app, page: Page, tmp_path):
    page.get_by_role("tab", name="Webcam").click()
    page.locator("#webcam").get_by_text("Click to Access Webcam").click()
    page.locator("#webcam button.capture-button").click()  # "Record": start streaming frames to the server
    status = page.locator("#status .status")
    expect(status).to_contain_text("Webcam streaming", timeout=30_000)
    page.wait_for_function("Number(document.querySelector('#stats [data-stat=frames]').innerText) >= 2")
    first = int(stat(page, "frames"))
    page.wait_for_function(
        f"Number(document.querySelector('#stats [data-stat=frames]').innerText) >= {first + 3}", timeout=30_000
    )
    assert float(stat(page, "video")) > 0
    expect(page.locator("#timeline")).to_contain_text("(live)")
    page.screenshot(path=str(tmp_path / "webcam.png"), full_page=True)

    registry = app[0].registry
    cams = [u for u in registry.users() if u.feed is not None and u.feed.kind == "webcam"]
    assert len(cams) == 1
    page.context.close()  # closing the tab unloads its session: the webcam feed stops, the session goes
    deadline = time.monotonic() + 20
    while any(u is cams[0] for u in registry.users()) and time.monotonic() < deadline:
        registry.get("nobody", create=False)  # sweeps (asking for the key itself would keep it in use)
        time.sleep(0.2)
    assert registry.get(cams[0].key, create=False) is None
    assert cams[0].feed.stopped and cams[0].feed.join(10)


def test_a_browser_gets_a_slot_after_api_clients_took_them_all(browser, tmp_path):
    """API clients with made-up session hashes fill every slot and go quiet (no browser, so no `unload`);
    a real browser that arrives later still starts, and a question before its video says what to do."""
    settings = UiSettings(fps=2.0, chunk_frames=2, max_new_tokens=8, max_sessions=4, empty_timeout_s=3)
    demo = build_demo(load_model("tiny-random"), window=WindowConfig(budget=128), settings=settings)
    port = free_port()
    launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    clip = write_sample(tmp_path / "clip.mp4", seconds=4, fps=5, frame_size=128)
    try:
        for i in range(16):
            call_api(url, "ask", ["anything?"], f"made-up-{i}")
        video = upload(url, clip)
        for i in range(4):  # four addresses, one slot each: the server is full
            assert call_api(url, "load_video", [video, None, None], f"flood-{i}", client=f"10.0.0.{i + 1}")[0] == "complete"
        assert len(demo.registry) == 4
        time.sleep(3.5)  # nobody has used those sessions for empty_timeout_s

        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        page.fill("#question textarea", "What is there?")
        page.click("#ask")
        expect(page.locator(".toast-body").first).to_contain_text("load a video or start the webcam first")
        page.set_input_files("#video input[type=file]", clip)
        expect(page.locator("#status .status")).to_contain_text("Watched all of clip.mp4: 8 frames", timeout=60_000)
        page.click("#ask")  # the question went back into the box
        expect(page.locator("#chat .message-row").nth(1)).not_to_have_text(re.compile(r"^\s*(\.\.\.)?\s*$"))
        assert len(demo.registry) == 4 and "127.0.0.1" in {u.client for u in demo.registry.users()}
        page.screenshot(path=str(tmp_path / "slot.png"), full_page=True)
        page.context.close()
    finally:
        demo.close()


def test_refused_camera_shows_a_message(url, pw):
    args = [a for a in ARGS if a != "--use-fake-ui-for-media-stream"] + ["--deny-permission-prompts"]
    refusing = pw.chromium.launch(executable_path=CHROMIUM, args=args)  # a browser that refuses the camera
    try:
        page = refusing.new_page()
        page.goto(url)
        page.get_by_role("tab", name="Webcam").click()
        page.locator("#webcam").get_by_text("Click to Access Webcam").click()
        expect(page.locator("#cam-error .cam-error")).to_have_text(re.compile("Camera access was refused"),
                                                                   timeout=30_000)
        expect(page.locator("#status .status")).to_contain_text("Upload a video or start the webcam")
    finally:
        refusing.close()
