"""The quality suite (bench/quality.py): Wilson intervals, held-out videos per task, the `kept` fraction
that tells a policy's miss from the model's, chats, and one configuration end to end on tiny-random."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import quality  # noqa: E402
from streamer.kv_window import WindowConfig  # noqa: E402
from streamer.models.registry import load_model  # noqa: E402
from streamer.session import StreamSession  # noqa: E402


@pytest.fixture(scope="module")
def adapter():
    return load_model("tiny-random")


@pytest.mark.parametrize("right,n,low,high", [(8, 10, 0.4902, 0.9433), (0, 10, 0.0, 0.2775), (40, 40, 0.9124, 1.0),
                                             (45, 50, 0.7864, 0.9565)])  # fmt: skip
def test_wilson_matches_the_textbook_values(right, n, low, high):
    lo, hi = quality.wilson(right, n)  # bench/common.py, imported by the suite
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)
    assert lo <= right / n <= hi


def test_wilson_of_nothing_is_the_whole_interval():
    assert quality.wilson(0, 0) == (0.0, 1.0)


def test_paired_counts_discordant_answers_and_mcnemar_is_exact():
    def result(correct: list[bool]) -> dict:
        return {"answers": [{"seed": i // 2, "question": f"q{i % 2}", "correct": c} for i, c in enumerate(correct)]}

    ref, other = result([True, True, True, False, False, True]), result([True, False, True, True, False, False])
    other["answers"].append({"seed": 99, "question": "q0", "correct": True})  # no partner: not counted
    pair = quality.paired(ref, other)
    assert (pair["n"], pair["both"], pair["only_reference"], pair["only_this"]) == (6, 2, 2, 1)
    assert pair["p_value"] == 1.0  # 2 against 1 is no evidence either way
    assert quality.common.mcnemar_p(0, 6) == pytest.approx(2 / 64)  # six discordant pairs all one way
    assert quality.common.mcnemar_p(0, 0) == 1.0
    assert quality.paired(ref, result([])) is None


@pytest.mark.parametrize("task", quality.TASKS)
def test_videos_are_held_out_deterministic_and_have_answers(task):
    a, b = quality.make_video(task, 3, 60.0), quality.make_video(task, 3, 60.0)
    assert a.seed == b.seed >= quality.HELD_OUT and [q.question for q in a.qas] == [q.question for q in b.qas]
    assert a.qas and all(q.answer for q in a.qas)
    assert a.chat == (task == "chat")
    if task == "objects":
        assert len(a.qas) == 5 and {q.kind for q in a.qas} == {"needle_digit"}
    if task == "needle":
        assert len(a.script.events) == 1 and [q.kind for q in a.qas] == ["needle_digit"]
    if task == "moving":  # the control scene: objects on screen most of the time, every one of them moving
        assert len(a.qas) == 5 and {q.kind for q in a.qas} == {"needle_digit"}
        assert sum(e.end_s - e.start_s for e in a.script.events) >= 0.6 * a.script.duration_s
        for e in a.script.events:
            first, last = e.place(e.start_s, 192), e.place(e.start_s + 3, 192)
            assert (e.vx**2 + e.vy**2) ** 0.5 >= quality.MIN_DRIFT * 192 - 1e-9 and (first.cx, first.cy) != (last.cx, last.cy)
    if task == "frame":  # only the still frame is fed, not the timeline before it
        assert [f.time_s for f in a.frames()] == [a.still.time_s] and a.qas[0].kind == "colour"
    else:  # from the video's start (a clip's, for presence) to its end, at 1 fps
        assert len(a.frames()) == int(a.script.duration_s - a.script.start_s)
    if task == "presence":  # three different yes/no questions about the clip's last 4 s
        assert len({q.question for q in a.qas}) == 3 and {q.answer for q in a.qas} <= {"yes", "no"}
        assert 4 <= len(a.frames()) <= 12
    if task == "sample":  # one question of each kind, as sample_video prints them
        assert len({q.kind for q in a.qas}) == len(a.qas) >= 4


def test_task_seed_ranges_do_not_overlap_and_are_never_trained_on():
    from train.data import HELD_OUT_SEED

    assert quality.HELD_OUT == HELD_OUT_SEED == min(quality.SEEDS.values())
    starts = sorted(quality.SEEDS.values())
    assert all(b - a >= 100_000 for a, b in zip(starts, starts[1:]))


def test_kept_is_one_with_the_full_cache_and_zero_once_evicted(adapter):
    video = quality.make_video("needle", 0, 40.0)
    event = video.script.events[0]
    full = StreamSession(adapter, WindowConfig(policy="full", budget=None), skip=None)  # every frame: exact kept counts
    assert quality.stream(full, video.frames()) is None
    assert quality.kept_fraction(full, video.script, video.qas[0]) == pytest.approx(1.0)
    # sink + recent with room for about 3 frames: an object that left more than 4 s before the end is gone
    small = StreamSession(adapter, WindowConfig(policy="sink-recent", budget=3 * (adapter.tokens_per_frame + 16)), skip=None)
    quality.stream(small, video.frames())
    kept = quality.kept_fraction(small, video.script, video.qas[0])
    if event.end_s < 40.0 - 5:
        assert kept == 0.0
    else:
        assert 0.0 < kept <= 1.0


def test_questions_on_their_own_do_not_see_each_other_but_a_chat_does(adapter):
    session = StreamSession(adapter, WindowConfig(policy="full", budget=None))
    video = quality.make_video("sample", 0, 60.0)
    quality.stream(session, video.frames())
    length = session.cache.get_seq_length()
    rows = quality.ask_all(session, video)
    assert len(rows) == len(video.qas)
    # each question was asked from the same cache: one question + answer on top of the stream, never two
    assert session.cache.get_seq_length() < length + 60
    chat = quality.make_video("chat", 0, 60.0)
    session.reset()
    quality.stream(session, chat.frames())
    rows = quality.ask_all(session, chat)
    assert len(session.history) == len(chat.qas) == 5 and all("repeats_first" in r for r in rows[1:])


def test_summarise_counts_kinds_kept_and_repeats():
    rows = [
        {"seed": 1, "kind": "needle_digit", "correct": True, "kept": 1.0, "got": "3", "want": "3"},
        {"seed": 1, "kind": "needle_digit", "correct": False, "kept": 0.0, "got": "3", "want": "5"},
        {"seed": 2, "kind": "count", "correct": True, "got": "2", "want": "2", "repeats_first": False},
        {"seed": 2, "kind": "when", "correct": False, "got": "2", "want": "00:00:07", "repeats_first": True},
    ]
    s = quality.summarise(rows)
    assert s["all"]["right"] == 2 and s["all"]["n"] == 4 and s["all"]["videos"] == 2
    assert s["by_kind"]["needle_digit"]["n"] == 2 and s["by_kind"]["count"]["accuracy"] == 1.0
    assert s["needle_in_cache"]["right"] == 1 and s["needle_evicted"]["right"] == 0
    assert s["mean_kept"] == 0.5 and s["repeats_first_answer"] == {"n": 2, "count": 1}
    rows[0]["depth"], rows[1]["depth"] = 0.1, 1.0  # the first third, and the very end counts in the last
    by_depth = quality.summarise(rows)["by_depth"]
    assert [d["n"] for d in by_depth] == [1, 0, 1] and by_depth[0]["mean_kept"] == 1.0 and by_depth[2]["right"] == 0
    assert "needle in the first / middle / last third: 1/1 right, 1.00 of it kept | 0/0" in quality.line(
        {"task": "needle", "seconds": 300.0, "policy": "combined", "budget_tokens": 150, "world": "clean",
         "redundancy": 0.9, "skip": False, "stopped": [], "summary": quality.summarise(rows)})


def test_one_configuration_end_to_end_within_budget(adapter):
    result = quality.run_config(adapter, "objects", 30.0, "combined", 0.25, videos=2)
    full = quality.full_tokens(adapter, "objects", 30.0)
    assert result["budget_tokens"] == max(64, int(full * 0.25))
    assert result["summary"]["all"]["n"] == 10 and result["summary"]["all"]["videos"] == 2
    assert all(0.0 <= r["kept"] <= 1.0 for r in result["answers"])
    assert "needle kept" in quality.line(result) and "/10 " in quality.line(result)


def test_budgets_parse_fractions_and_token_counts():
    assert quality.parse_budgets("0.1, 0.02,750") == [0.1, 0.02, 750.0]
    for bad in ("0", "-1", "2.5"):
        with pytest.raises(Exception):
            quality.parse_budgets(bad)


def test_noisy_world_redundancy_skip_and_gap_options_reach_the_session(adapter):
    plain = quality.run_config(adapter, "needle", 30.0, "combined", 0.5, videos=1, redundancy=None)
    other = quality.run_config(adapter, "needle", 30.0, "combined", 0.5, videos=1, world="noisy", redundancy=0.8, skip=True,
                               max_gap=None)
    assert plain["frames_fed"] == 30 and plain["redundancy"] is None and not plain["skip"] and "max_gap" not in plain
    assert other["world"] == "noisy" and other["redundancy"] == 0.8 and other["skip"]
    assert other["max_gap"] == other["budget_tokens"] and "max_gap" in quality.line(other)
    assert other["frames_fed"] < 30  # the skip held some frames back
    noisy = quality.make_video("needle", 0, 30.0, "noisy")
    clean = quality.make_video("needle", 0, 30.0)
    assert [q.question for q in noisy.qas] == [q.question for q in clean.qas]  # same ground truth, other pixels
    assert "noisy" in quality.line(other) and "skip" in quality.line(other)


def test_runs_on_later_videos_merge_into_one_result(adapter, tmp_path):
    """`--first` runs further held-out videos; `--merge` pools them with the earlier run into one summary,
    and refuses a video counted twice."""
    import json

    parts = []
    for first in (0, 2):
        out = tmp_path / f"part{first}.json"
        quality.main(["--model", "tiny-random", "--tasks", "needle", "--seconds", "20", "--videos", "2", "--first",
                      str(first), "--policies", "combined", "--budgets", "0.5", "--threads", "1", "--out", str(out)])
        parts.append(out)
    seeds = [{a["seed"] for a in json.loads(p.read_text())["results"][0]["answers"]} for p in parts]
    assert seeds[0] == {quality.SEEDS["needle"], quality.SEEDS["needle"] + 1} and not seeds[0] & seeds[1]
    merged = tmp_path / "merged.json"
    quality.main(["--merge", *map(str, parts), "--out", str(merged)])
    result = json.loads(merged.read_text())["results"][0]
    assert result["videos"] == 4 and result["summary"]["all"]["videos"] == 4 and result["summary"]["all"]["n"] == 4
    assert result["summary"] == quality.summarise(result["answers"])
    with pytest.raises(SystemExit):  # the same videos twice
        quality.main(["--merge", str(parts[0]), str(parts[0]), "--out", str(tmp_path / "twice.json")])
