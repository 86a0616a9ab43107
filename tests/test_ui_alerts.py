"""Standing questions in the web UI (issue 38, app/watches.py): adding and removing them, their alerts in the
chat (each once, with its time and question), in the alert box and on the timeline, per session, across a
new video, errors as messages; and in Chromium, a standing question typed into the page that fires, with
"Notify me" on (a beep and a notification).

`tiny-random` answers noise, so whether a check is positive is decided by a fake `Watcher.confidence`: a
session's checks 2, 6, 10, ... are positive, the others negative (`FIRES`), so a 6-chunk video fires at its
2nd and 6th chunk. `GATE` can hold a feed inside a given check, so a test sees the page between two alerts
without racing the feed.
"""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from playwright.sync_api import expect

from streamer.app import plots
from streamer.app.chat import Chat
from streamer.app.state import UiSettings
from streamer.app.ui import build_demo, launch
from streamer.kv_window import WindowConfig
from streamer.models.registry import load_model
from streamer.watch import MAX_WATCHES, Alert, Watcher
from streamer.world.sample_video import write_sample

from test_ui import free_port, refresh, text_of, wait_for, wait_until
from test_ui_browser import ARGS, CHROMIUM, browser, pw  # noqa: F401 (the browser fixtures)

pytestmark = pytest.mark.timeout(180)
RED = "Is there a red circle on screen?"
GATE: dict = {"check": None, "open": threading.Event()}  # a feed waits in this check until `open` is set


def fake_confidence(self: Watcher, logits) -> float:
    """Positive at checks 2, 6, 10, ... of a session (counted over its videos), negative otherwise."""
    self.checks = getattr(self, "checks", 0) + 1
    if self.checks == GATE["check"]:
        GATE["open"].wait(60)  # a guard: the test opens it
    return 0.9 if self.checks % 4 == 2 else 0.1


@pytest.fixture(scope="module")
def app():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Watcher, "confidence", fake_confidence)
        # one frame per chunk at 2 fps: a 3 s video is 6 chunks (6 checks); every frame fed (skip=None)
        settings = UiSettings(fps=2.0, chunk_frames=1, max_new_tokens=4, skip=None, max_sessions_per_client=16)
        demo = build_demo(load_model("tiny-random"), window=WindowConfig(budget=128), settings=settings)
        port = free_port()
        launch(demo, port=port, prevent_thread_lock=True, quiet=True)
        yield demo, f"http://127.0.0.1:{port}/"
        demo.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_sample(tmp_path_factory.mktemp("alerts") / "clip3.mp4", seconds=3, fps=4, frame_size=64)


@pytest.fixture(scope="module")
def short(clip):
    return write_sample(clip.parent / "clip2.mp4", seconds=2, fps=4, frame_size=64)  # 4 chunks


def alerts(client: Client) -> tuple:
    """(chat or None when not sent, alert box HTML or None when not sent) of one `/alerts` tick."""
    chat, box = client.predict(api_name="/alerts")
    return (None if isinstance(chat, dict) else [text_of(m) for m in chat],
            None if isinstance(box, dict) else box)


def watched(update: dict) -> list[str]:
    return [choice[0] for choice in update["choices"]]


def bells(chat: list[str]) -> list[str]:
    return [m for m in chat if m.startswith("🔔")]


def test_standing_questions_are_added_and_removed(app):
    demo, url = app
    client = Client(url, verbose=False)
    with pytest.raises(AppError, match="control character"):
        client.predict("Is it \x1b[31mred?", api_name="/watch")
    assert demo.registry.get(client.session_hash, create=False) is None  # text that is no question takes no slot
    listed, box = client.predict(f"  {RED}  ", api_name="/watch")  # before any video: it takes a session
    assert watched(listed) == [RED] and box == ""
    listed, _ = client.predict("Is the digit 7 on screen?", api_name="/watch")
    assert watched(listed) == [RED, "Is the digit 7 on screen?"] and listed["label"].startswith("2 standing")
    user = demo.registry.get(client.session_hash, create=False)
    assert user.session.watches == [RED, "Is the digit 7 on screen?"]

    listed = client.predict(RED, api_name="/unwatch")
    assert watched(listed) == ["Is the digit 7 on screen?"] and user.session.watches == ["Is the digit 7 on screen?"]
    with pytest.raises(AppError, match="not a standing question"):
        client.predict(RED, api_name="/unwatch")
    with pytest.raises(AppError, match="pick the standing question"):
        client.predict(None, api_name="/unwatch")
    assert user.session.watches == ["Is the digit 7 on screen?"]
    demo.registry.drop(client.session_hash)


def test_an_alert_reaches_the_chat_once_with_its_time_and_marks_the_timeline(app, clip):
    demo, url = app
    client = Client(url, verbose=False)
    client.predict(RED, api_name="/watch")
    GATE["check"], GATE["open"] = 3, threading.Event()  # hold the feed after the first alert
    try:
        client.predict(handle_file(clip), api_name="/load_video")
        user = demo.registry.get(client.session_hash, create=False)
        wait_until(lambda: user.alert_serial == 1)
        chat, box = alerts(client)
        (first,) = bells(chat)  # the alert of check 2, at the time of the 2nd frame
        (alert,) = user.session.alerts
        assert first == plots.chat_text(plots.alert_text(alert)) and alert.video_time_s == 0.5
        assert first.startswith(f"🔔 [00:00:00] {RED} -&gt; ") and first.endswith("(0.90)")
        assert 'data-count="1"' in box and RED in box
        assert alerts(client) == (None, None)  # sent once: the next tick has nothing new
    finally:
        GATE["check"] = None
        GATE["open"].set()
    panel = wait_for(client, lambda p: "Watched all" in p["status"])
    chat, box = alerts(client)
    assert len(bells(chat)) == 2 and bells(chat)[0] == first and "[00:00:02]" in bells(chat)[1]  # each alert once
    assert [a.video_time_s for a in user.session.alerts] == [0.5, 2.5]
    assert 'data-count="2"' in box and box.index("[00:00:02]") < box.index("[00:00:00]")  # newest first
    assert alerts(client) == (None, None)
    marks = re.findall(r'class="alert-mark" data-t="([\d.]+)"', panel["timeline"])
    assert marks == ["0.5", "2.5"]

    answer, _ = client.predict("What is on screen?", api_name="/ask")  # the alerts stay in the chat, before the turn
    assert [text_of(m) for m in answer][:2] == chat and text_of(answer[2]) == "What is on screen?"
    assert user.chat.text().count("🔔") == 2
    demo.registry.drop(client.session_hash)


def test_standing_questions_outlive_a_new_video_and_its_alerts_do_not(app, short):
    demo, url = app
    client = Client(url, verbose=False)
    client.predict(RED, api_name="/watch")
    client.predict(handle_file(short), api_name="/load_video")
    user = demo.registry.get(client.session_hash, create=False)
    wait_for(client, lambda p: "Watched all" in p["status"])
    assert [a.video_time_s for a in user.session.alerts] == [0.5]
    session = user.session
    client.predict(handle_file(short), api_name="/load_video")  # checks 5-8: check 6 fires
    wait_for(client, lambda p: "Watched all" in p["status"] and p["stats"]["frames_ingested"] == 4)
    assert user.session is session and user.session.watches == [RED]
    assert [a.video_time_s for a in user.session.alerts] == [0.5] and user.alert_serial == 2
    chat, box = alerts(client)
    assert len(bells(chat)) == 1 == len(chat) and 'data-count="1" data-serial="2"' in box  # the new video's only
    assert re.findall(r'data-t="([\d.]+)"', refresh(client)["timeline"]) == ["0.5"]
    demo.registry.drop(client.session_hash)


def test_two_sessions_do_not_see_each_others_watches_or_alerts(app, short):
    demo, url = app
    a, b = Client(url, verbose=False), Client(url, verbose=False)
    assert watched(a.predict(RED, api_name="/watch")[0]) == [RED]
    assert watched(b.predict("Is the digit 7 on screen?", api_name="/watch")[0]) == ["Is the digit 7 on screen?"]
    a.predict(handle_file(short), api_name="/load_video")
    wait_for(a, lambda p: "Watched all" in p["status"])
    chat, _ = alerts(a)
    assert len(bells(chat)) == 1 and RED in chat[0]
    assert alerts(b) == (None, '<div class="alerts" data-count="0" data-serial="0" style="font-size:13px">'
                               '<div style="font-size:11px;color:#666">0 alert(s) for this video</div>'
                               '<div style="color:#666">no alert yet</div></div>')
    assert RED not in refresh(b)["timeline"] and "alert-mark" not in refresh(b)["timeline"]
    users = [demo.registry.get(c.session_hash, create=False) for c in (a, b)]
    assert users[1].session.watches == ["Is the digit 7 on screen?"] and users[1].session.alerts == []
    with pytest.raises(AppError, match="not a standing question"):
        b.predict(RED, api_name="/unwatch")  # b cannot stop a's question
    assert users[0].session.watches == [RED]
    for c in (a, b):
        demo.registry.drop(c.session_hash)


def test_a_bad_standing_question_is_a_message_and_keeps_the_chat(app, short):
    demo, url = app
    client = Client(url, verbose=False)
    client.predict(handle_file(short), api_name="/load_video")
    wait_for(client, lambda p: "Watched all" in p["status"])
    chat, _ = client.predict("What is there?", api_name="/ask")
    for bad, says in (("   ", "type a yes/no question"), ("Is it \x1b[31mred?", "control character"),
                      ("why " * 400, "shorten the question")):
        with pytest.raises(AppError, match=says):
            client.predict(bad, api_name="/watch")
    for i in range(MAX_WATCHES):
        client.predict(f"Is the digit {i} on screen?", api_name="/watch")
    with pytest.raises(AppError, match=f"at most {MAX_WATCHES} standing questions"):
        client.predict(RED, api_name="/watch")
    user = demo.registry.get(client.session_hash, create=False)
    assert len(user.session.watches) == MAX_WATCHES and RED not in user.session.watches
    assert [m["content"].strip() for m in user.chat] == [text_of(m) for m in chat]  # the chat and the cache stay
    assert refresh(client)["stats"]["turns"] == 1
    again, _ = client.predict("And now?", api_name="/ask")
    assert [text_of(m) for m in again if m["role"] == "user"] == ["What is there?", "And now?"]
    demo.registry.drop(client.session_hash)


def test_the_refresh_leaves_the_chat_to_an_answer_being_written(app, short):
    """An alert that comes while an answer streams into the chat is sent after it, not over it; a client that
    hangs up on its answer does not hold the chat."""
    demo, url = app
    client = Client(url, verbose=False)
    client.predict(RED, api_name="/watch")
    client.predict(handle_file(short), api_name="/load_video")
    user = demo.registry.get(client.session_hash, create=False)
    with user.writing_chat():
        wait_for(client, lambda p: "Watched all" in p["status"])
        assert alerts(client)[0] is None and user.alert_serial == 1  # in the chat, not sent while an answer writes it
    chat, _ = alerts(client)
    assert len(bells(chat)) == 1
    with httpx.Client(base_url=url, timeout=60) as http:
        event = http.post("gradio_api/call/ask", json={"data": ["What?"], "session_hash": client.session_hash}).json()
        with http.stream("GET", f"gradio_api/call/ask/{event['event_id']}") as events:
            next(events.iter_lines())  # one line, then hang up
    wait_until(lambda: not user.chat_busy and not user.answering.locked())
    demo.registry.drop(client.session_hash)


# ---- pure parts --------------------------------------------------------------------------------


def test_alert_text_and_box_are_escaped_and_the_figures_mark_alert_times():
    alert = Alert("Is <b>it</b> red?", "yes <i>", 83.7, 0.934)
    assert plots.alert_text(alert) == "🔔 [00:01:23] Is <b>it</b> red? -> yes <i> (0.93)"
    box = plots.alerts_html([Alert(f"q{i}?", "yes", float(i), 0.9) for i in range(7)] + [alert], serial=12)
    assert 'data-count="8" data-serial="12"' in box and "latest 5 shown" in box
    assert "<b>" not in box and "Is &lt;b&gt;it&lt;/b&gt; red?" in box and "q2?" not in box
    strip = plots.timeline_html([10.0], 100.0, 90.0, alerts=[alert])
    assert 'data-t="83.7"' in strip and "left:calc(83.70% - 1px)" in strip and "<b>" not in strip
    fig = plots.kv_figure([type("S", (), dict(video_time_s=t, kv_bytes=1e6, rss_bytes=1e8))() for t in (0, 5)],
                          None, [2.0, 4.0])
    marks = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == ":"]
    assert [list(line.get_xdata()) for line in marks] == [[2.0, 2.0], [4.0, 4.0]]


def test_a_chat_with_notes_keeps_turns_and_bounds():
    chat = Chat(max_chars=400)
    chat.note("🔔 [00:00:01] Is it <red>? -> yes (0.90)")
    chat.add("what?", "that")
    assert chat.shown(2) == list(chat) and chat.shown(1) == [
        {"role": "assistant", "content": '(1 earlier turn(s) not shown here; "Show the whole chat" shows them)'},
        {"role": "user", "content": "what?"}, {"role": "assistant", "content": "that"}]
    assert chat.text() == "🔔 [00:00:01] Is it <red>? -> yes (0.90)\nQ: what?\nA: that\n"
    for i in range(40):
        chat.note(f"alert {i:02d} " + "x" * 20)
    assert chat.chars <= 400 and chat.chars == sum(len(m["content"]) for m in chat)
    assert chat[-1]["content"].startswith("alert 39") and chat.dropped == 42 - len(chat)  # every kept turn a note


def test_a_standing_question_typed_into_the_page_fires_and_notifies(app, clip, short, browser):  # noqa: F811
    demo, url = app
    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    # count the beeps (WebAudio oscillators started) and the notifications the page makes
    context.add_init_script("""
      window.beeps = 0; window.notes = [];
      const Real = window.AudioContext;
      window.AudioContext = class extends Real {
        createOscillator() { const osc = super.createOscillator(); const start = osc.start.bind(osc);
          osc.start = (...a) => { window.beeps += 1; return start(...a); }; return osc; }
      };
      window.Notification = class { constructor(title, options) { window.notes.push(options.body); }
        static get permission() { return 'granted'; } static requestPermission() { return Promise.resolve('granted'); } };
    """)
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(url)
        page.fill("#watch-question textarea", "")
        page.click("#watch")
        expect(page.locator(".toast-body").first).to_contain_text("type a yes/no question")
        page.fill("#watch-question textarea", RED)
        page.click("#watch")
        expect(page.locator("#watches")).to_contain_text(RED)
        expect(page.locator("#watch-question textarea")).to_have_value("")
        page.check("#notify input[type=checkbox]")
        page.set_input_files("#video input[type=file]", clip)
        expect(page.locator("#alerts .alert")).to_have_count(2, timeout=60_000)
        expect(page.locator("#alerts .alert").first).to_contain_text(f"[00:00:02] {RED} -> ")
        chat = page.locator("#chat")
        expect(chat).to_contain_text(f"🔔 [00:00:00] {RED} -> ")
        expect(chat).to_contain_text(f"🔔 [00:00:02] {RED} -> ")
        expect(page.locator("#timeline .alert-mark")).to_have_count(2)
        page.wait_for_function("window.notes.length >= 1")
        assert page.evaluate("window.beeps") >= 1 and all(RED in body for body in page.evaluate("window.notes"))
        page.uncheck("#notify input[type=checkbox]")  # off: the next video's alert is shown, not notified
        before = page.evaluate("[window.beeps, window.notes.length]")
        page.locator("#video button[aria-label='Clear']").click()
        page.set_input_files("#video input[type=file]", short)  # checks 7-10: check 10 fires
        expect(page.locator("#alerts .alert")).to_have_count(1, timeout=60_000)
        expect(page.locator("#status .status")).to_contain_text("Watched all")
        assert page.evaluate("[window.beeps, window.notes.length]") == before
        page.screenshot(path=str(clip.parent / "alerts.png"), full_page=True)
    finally:
        context.close()
