"""A user error in the web UI is a toast for the user and at most one line in the server's log (issue 42,
class 9): Gradio prints a full traceback for every `gr.Error` unless told not to, so a question before any
video, an empty question or an unreadable upload each wrote ~20 lines to the server's stderr without -v.

The probe: three user errors through the REST API against the in-process server, stderr captured at the
file descriptor (Gradio prints from its own threads).
"""

from __future__ import annotations

import logging

import pytest

from streamer.app.state import UiSettings
from streamer.app.ui import build_demo, launch
from streamer.kv_window import WindowConfig
from streamer.models.registry import load_model

from test_ui import call_api, free_port, upload

pytestmark = pytest.mark.timeout(120)


def test_user_errors_log_no_traceback(capfd, caplog, tmp_path):
    demo = build_demo(load_model("tiny-random"), window=WindowConfig(budget=64), settings=UiSettings(max_new_tokens=4))
    port = free_port()
    launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 500)
    try:
        capfd.readouterr()
        with caplog.at_level(logging.INFO, logger="streamer.app.ui"):  # what -v shows
            results = [call_api(url, "ask", ["what is there?"], "toasts"), call_api(url, "ask", ["  "], "toasts"),
                       call_api(url, "load_video", [upload(url, broken), None, None], "toasts")]
        assert [kind for kind, _ in results] == ["error"] * 3
        assert "no video to ask about" in results[0][1] and "is not a readable video" in results[2][1]
        out, err = capfd.readouterr()
        assert "Traceback" not in err + out, err[-2000:]  # before the fix: one full traceback per toast
        lines = [r.getMessage() for r in caplog.records if r.name == "streamer.app.ui"]
        assert len(lines) == 3 and all("\n" not in line for line in lines), lines  # one line each with -v
    finally:
        demo.close()
