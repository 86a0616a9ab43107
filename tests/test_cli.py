"""The headless CLI end to end on a generated video with tiny-random: JSON answers, --at, errors."""

import json
import math
import subprocess
import sys

import pytest

from streamer.cli import main
from streamer.frames import SamplerConfig, chunk_frames, chunks_and_stops
from streamer.video.frame import Frame
from streamer.world.sample_video import write_sample

import numpy as np


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return str(write_sample(tmp_path_factory.mktemp("cli") / "sample.mp4", seconds=20, fps=5))


def run_cli(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "streamer.cli", *args], capture_output=True, text=True,
                          input=stdin, timeout=300)


def test_json_answer_within_budget(video):
    out = run_cli(video, "--model", "tiny-random", "-q", "what happened?", "--json", "--budget", "256",
                  "--max-new-tokens", "8")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 1
    ans = lines[0]
    for key in ("question", "answer", "video_time_s", "frames_ingested", "frames_skipped", "kv_tokens", "kv_bytes",
                "peak_kv_bytes", "rss_bytes", "ingest_seconds", "policy", "budget", "skip_static", "model"):
        assert key in ans
    assert ans["question"] == "what happened?" and ans["model"] == "tiny-random"
    assert ans["kv_tokens"] <= 256 and ans["budget"] == 256 and ans["policy"] == "recall"
    assert ans["frames_ingested"] + ans["frames_skipped"] == 20 and ans["video_time_s"] == pytest.approx(19.0, abs=0.3)
    assert 0 < ans["kv_bytes"] <= ans["peak_kv_bytes"]
    assert "random weights" in out.stderr and "Traceback" not in out.stderr


def test_questions_at_times_see_only_the_past(video, capsys):
    code = main([video, "--model", "tiny-random", "-q", "early?", "--at", "00:05", "-q", "late?", "--at", "12.5", "--json",
                 "--max-new-tokens", "3", "--chunk-frames", "4"])
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["question"] for r in rows] == ["early?", "late?"]
    seen = [r["frames_ingested"] + r["frames_skipped"] for r in rows]  # sampled so far, fed or skipped
    assert rows[0]["video_time_s"] == pytest.approx(5.0, abs=0.3) and seen[0] == 6
    assert rows[1]["video_time_s"] == pytest.approx(12.0, abs=0.3) and seen[1] == 13


def test_prompt_mode_answers_until_eof(video):
    out = run_cli(video, "--model", "tiny-random", "--max-new-tokens", "3", "--policy", "saddle", stdin="first?\n\nsecond?\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("Q: ") == 2


def test_missing_file_exits_2_with_one_line():
    out = run_cli("/nope/missing.mp4")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and "missing.mp4" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("args,msg", [
    (["{video}", "--budget", "abc"], "--budget"),
    (["{video}", "--budget", "3"], "budget"),
    (["{video}", "--policy", "magic"], "--policy"),
    (["{video}", "-q", "a", "--at", "1", "--at", "2"], "--at"),
    (["{video}", "-q", "a", "--at", "soon"], "soon"),
    (["{video}", "--model", "/nope/model-dir"], "--model"),
    (["{video}", "--model", "tiny-random", "-q", "why " * 3000, "--budget", "256"], "question"),
])
def test_user_errors_exit_2_with_one_line(video, args, msg, capsys):
    try:
        code = main([a.format(video=video) for a in args])
    except SystemExit as stop:  # argparse's own exit
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note:")]
    assert len(lines) == 1, err
    assert msg in lines[0] and "Traceback" not in err


def frames(times):
    return [Frame(np.zeros((2, 2, 3), np.uint8), t) for t in times]


def test_chunks_are_cut_at_question_times():
    cfg = SamplerConfig(chunk_frames=3)
    chunks = chunk_frames(frames([0, 1, 2, 3, 4, 5, 6]), cfg, cut_at=[1.7, 1.5, 10.0])
    assert [c.times for c in chunks] == [[0, 1], [2, 3, 4], [5, 6]]
    assert [c.index for c in chunk_frames(frames([0, 1, 2, 3]), cfg, cut_at=[0.5])] == [0, 1]


def test_stops_come_as_soon_as_their_frames_are_out():
    cfg = SamplerConfig(chunk_frames=3)
    items = chunks_and_stops(frames([0, 1, 2, 3, 4, 5, 6]), cfg, [1.5, 1.7, 10.0, math.inf])
    assert [i if isinstance(i, int) else i.times for i in items] == [[0, 1], 0, 1, [2, 3, 4], [5, 6], 2, 3]
    with pytest.raises(ValueError, match="sorted"):
        list(chunks_and_stops(frames([0]), cfg, [2.0, 1.0]))


def test_a_model_slower_than_real_time_drops_frames_and_says_so(video, capsys, monkeypatch):
    """--realtime plays the file at its own pace (2 fps); a model that needs 1 s a frame falls behind, so the
    stream is then sampled at the rate that keeps up (0.9 / 1 = 0.9 fps), said once, and the frames passed over are counted
    in the answer's `frames_dropped`, with the lag behind the live edge in `lag_s`."""
    from conftest import slow_ingest

    slow_ingest(monkeypatch, 1.0)
    code = main([video, "--model", "tiny-random", "-q", "now?", "--json", "--max-new-tokens", "2", "--realtime",
                 "--fps", "2", "--end", "3", "--chunk-frames", "1", "--skip-static", "off"])
    out, err = capsys.readouterr()
    assert code == 0
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "1.00 s per frame, so this live stream is sampled at 0.9 fps instead of 2" in warnings[0]
    answer = json.loads(out.splitlines()[-1])
    assert answer["frames_dropped"] >= 1 and answer["frames_ingested"] >= 2, answer
    assert 0 <= answer["lag_s"] < 3, answer

