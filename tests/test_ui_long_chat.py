"""A long chat in one session (issue 42, class 6): what each answer sends must not grow with the chat.

The probe: one session (a made-up session hash through Gradio's REST API, as the page's own calls are)
loads a video and asks 15 questions in a row; each answer's whole response (every streamed event) is
measured in bytes and in messages. Before the fix each response carried the whole chat (2 messages more
at every question: 200 questions sent 400 messages, 616 KB, in the 200th response); now the page gets
the last `chat_window` turns after a one-line note, the same size from question `chat_window` + 1 on,
and the rest is one click away ("Show the whole chat", `/whole_chat`). The chat a session keeps is
bounded in characters (`max_chat_chars`), so its memory is too.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from streamer.app.chat import Chat
from streamer.app.state import UiSettings
from streamer.app.ui import build_demo, launch
from streamer.kv_window import WindowConfig
from streamer.models.registry import load_model
from streamer.world.sample_video import write_sample

from test_ui import call_api, free_port, upload

pytestmark = pytest.mark.timeout(180)
WINDOW = 3


@pytest.fixture(scope="module")
def app():
    settings = UiSettings(max_new_tokens=4, skip=None, chat_window=WINDOW, max_chat_chars=1500)
    demo = build_demo(load_model("tiny-random"), window=WindowConfig(budget=128), settings=settings)
    port = free_port()
    launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()


def ask(http: httpx.Client, question: str, key: str) -> tuple[int, list]:
    """(bytes of the whole response, the chat of its last event)."""
    posted = http.post("gradio_api/call/ask", json={"data": [question], "session_hash": key})
    reply = http.get(f"gradio_api/call/ask/{posted.json()['event_id']}").text
    assert "event: complete" in reply, reply[-500:]
    return len(reply.encode()), json.loads(re.findall(r"^data: (.*)$", reply, re.MULTILINE)[-1])[0]


def test_the_fifteenth_answer_sends_what_the_fourth_did(app, tmp_path):
    demo, url = app
    clip = write_sample(tmp_path / "clip.mp4", seconds=2, fps=2, frame_size=64)
    assert call_api(url, "load_video", [upload(url, clip), None, None], "long")[0] == "complete"
    user = demo.registry.get("long", create=False)
    deadline = time.monotonic() + 60
    while not user.stats.get("frames_ingested") and time.monotonic() < deadline:
        time.sleep(0.1)
    sizes, counts = [], []
    with httpx.Client(base_url=url, timeout=60) as http:
        for q in range(1, 16):
            size, chat = ask(http, f"question {q}: what is there?", "long")
            sizes.append(size)
            counts.append(len(chat))
        assert counts[:WINDOW] == [2, 4, 6]
        assert counts[WINDOW:] == [1 + 2 * WINDOW] * (15 - WINDOW), counts  # the note and the last 3 turns
        assert chat[0]["content"][0]["text"].startswith("(12 earlier turn(s) not shown here")
        assert "question 15" in json.dumps(chat[-2]) and "question 12" not in json.dumps(chat)
        assert max(sizes[WINDOW:]) < 1.5 * min(sizes[WINDOW:WINDOW + 2]), sizes  # before the fix: x4 by the 15th
        whole = http.post("gradio_api/call/whole_chat", json={"data": [], "session_hash": "long"}).json()
        text = http.get(f"gradio_api/call/whole_chat/{whole['event_id']}").text
    assert all(f"Q: question {q}: what is there?" in text for q in range(1, 16))  # the rest is still reachable
    demo.registry.drop("long")


def test_a_sessions_chat_is_bounded_in_characters():
    chat = Chat(max_chars=1000)
    for q in range(200):
        chat.add(f"question {q} <b>bold</b>?", "an answer of forty characters, or so....")
        assert chat.chars <= 1000
    assert chat.dropped > 170 and len(chat) == 2 * (200 - chat.dropped)
    assert chat.chars == sum(len(m["content"]) for m in chat)
    text = chat.text()
    assert text.startswith(f"({chat.dropped} earliest turn(s) dropped")
    assert "Q: question 199 <b>bold</b>?\nA: an answer" in text  # as typed, not escaped
    shown = chat.shown(5)
    assert len(shown) == 11 and shown[1]["content"] == "question 195 &lt;b&gt;bold&lt;/b&gt;?"
    assert Chat().shown(5) == []


def test_the_chat_bounds_are_settings():
    for field in ("chat_window", "max_chat_chars"):
        with pytest.raises(ValueError, match=field):
            UiSettings(**{field: 0})
