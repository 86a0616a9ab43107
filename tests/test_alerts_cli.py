"""`streamer VIDEO --alert QUESTION` with the built-in `tiny`: one alert per occurrence, as text and as JSON, with
-q questions in the same run; a bad alert question is one line before any work."""

import json
import random
import re
import subprocess
import sys

import pytest

from conftest import one_line
from streamer.world.scene import Event, SceneScript, WorldObject

RED_CIRCLE = "Is there a red circle on screen?"
SEVEN = "Is the digit 7 on screen?"
ABSENT = "Is there a blue square on screen?"


@pytest.fixture(scope="module")
def ten_seconds(tmp_path_factory) -> str:
    """30 s of the synthetic world: a red circle with a 7 on screen from 8 s to 18 s (drifting), nothing else."""
    event = Event(WorldObject("red", "circle", "7"), 8.0, 18.0, 90.0, 96.0, 3.0, -2.0, 90.0)
    script = SceneScript(30.0, [event], background=random.Random(3).randint(205, 240), seed=3)
    return str(script.write_video(tmp_path_factory.mktemp("alerts") / "red_circle.mp4", fps=2))


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer.cli", *args], capture_output=True, text=True, timeout=600)


def test_an_object_on_screen_for_ten_seconds_is_one_alert(ten_seconds):
    proc = run(ten_seconds, "--alert", RED_CIRCLE, "--alert", SEVEN, "--alert", ABSENT,
               "-q", "What digit is on the red circle?", "--at", "12", "--max-new-tokens", "4")
    assert proc.returncode == 0, proc.stderr
    alerts = re.findall(r"^\[(\d\d):(\d\d):(\d\d)\] alert: (.*) -> (.*)$", proc.stdout, re.M)
    assert sorted(a[3] for a in alerts) == sorted([RED_CIRCLE, SEVEN]), proc.stdout  # once each, never the absent one
    for h, m, s, _, answer in alerts:
        assert 8 <= int(h) * 3600 + int(m) * 60 + int(s) <= 12 and answer == "yes"  # within one chunk of its first frame
    assert "Q: What digit is on the red circle?" in proc.stdout and "A:  7" in proc.stdout  # the -q question too


@pytest.mark.parametrize("window", [[], ["--alert-window", "all"], ["--alert-window", "00:08"]])
def test_alerts_as_json(ten_seconds, window):
    proc = run(ten_seconds, "--alert", SEVEN, "--json", "--end", "20", *window)
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    alert = json.loads(line)
    assert alert["alert"] == SEVEN and alert["answer"] == "yes" and 8 <= alert["video_time_s"] <= 12
    assert 0.5 <= alert["confidence"] <= 1


@pytest.mark.parametrize("args,says", [(["--alert", "   "], "question"),
                                       (["--alert", SEVEN, "--alert-window", "every"], "'all' for the whole cache"),
                                       (["--alert", SEVEN, "--alert-window", "-4"], "not a time")])
def test_a_bad_alert_option_is_one_line_before_any_work(ten_seconds, args, says):
    proc = run(ten_seconds, *args, "--model", "tiny-random")
    assert proc.returncode == 2 and says in one_line(proc.stderr)
