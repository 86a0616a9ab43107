"""The first run a user sees: `streamer-demo` on the built-in trained model (world/demo.py)."""

from __future__ import annotations

import re

import pytest

from streamer.world.demo import main

pytestmark = pytest.mark.timeout(400)


def test_demo_shows_the_cache_at_its_budget_and_answers_right(tmp_path, capsys):
    assert main(["--video", str(tmp_path / "sample.mp4"), "--budget", "512"]) == 0
    out = capsys.readouterr().out
    held = [(int(a), int(b)) for a, b in re.findall(r"KV (\d+)/(\d+) tokens", out)]
    assert len(held) == 4 and all(b == 512 and 0 < a <= 512 for a, b in held)  # after each answer + at the end
    assert held[-1][0] > 480  # full at the end
    last = out.splitlines()[-3]
    seen, evicted, _ = map(int, re.search(r"of (\d+) seen: (\d+) evicted, (\d+) merged", last).groups())
    assert seen > 1.2 * 512 and evicted > 0  # the video made more tokens than the cache holds
    fed, skipped = map(int, re.search(r"(\d+) frames fed, (\d+) unchanged ones skipped", last).groups())
    assert fed + skipped == 60 and 0 < skipped < 60  # the frame skip is on by default
    assert "3 of 3 answers right" in out
    assert (tmp_path / "sample.mp4").stat().st_size > 0


def test_demo_refuses_a_bad_budget_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--video", str(tmp_path / "sample.mp4"), "--budget", "3"])
    assert stop.value.code == 2 and "--budget" in capsys.readouterr().err
    assert not (tmp_path / "sample.mp4").exists()
