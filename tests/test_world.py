"""The synthetic world: deterministic by seed, pixels agree with the ground truth, exact answers."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.frames import SamplerConfig, iter_chunks
from streamer.world.scene import (
    COLOURS,
    NOTHING,
    Event,
    SceneScript,
    WorldObject,
    frame_questions,
    nearest_colour,
    random_script,
    single_frame,
    video_questions,
)


def test_same_seed_same_world_other_seed_other_world():
    a, b, c = random_script(7, 60, 3), random_script(7, 60, 3), random_script(8, 60, 3)
    assert a.events == b.events and a.events != c.events
    for t in (0.0, 13.0, 41.5):
        assert np.array_equal(a.render(t), b.render(t))
    f1, _ = single_frame(11)
    f2, _ = single_frame(11)
    assert np.array_equal(f1.image, f2.image) and f1.time_s == f2.time_s


@pytest.mark.parametrize("seed", range(12))
def test_rendered_colour_matches_ground_truth(seed):
    frame, script = single_frame(seed)
    (placed,) = script.visible(frame.time_s)
    x, y = placed.colour_probe()
    assert nearest_colour(frame.image[y, x]) == placed.obj.colour
    # the digit is drawn in black near the centre: some dark pixels inside the object's box
    half = int(placed.size / 2)
    box = frame.image[int(placed.cy) - half:int(placed.cy) + half, int(placed.cx) - half:int(placed.cx) + half]
    assert (box.max(axis=2) < 60).sum() > 20


def test_events_happen_at_the_chosen_times():
    red7 = WorldObject("red", "square", "7")
    script = SceneScript(120.0, [Event(red7, 41.0, 44.0, 96, 96, size=80)], seed=1)
    assert script.event_at(40.9) is None and script.event_at(41.0).obj == red7 and script.event_at(44.0) is None
    probe_x, probe_y = script.visible(42.0)[0].colour_probe()
    assert nearest_colour(script.render(42.0)[probe_y, probe_x]) == "red"
    assert not script.visible(45.0)
    qas = {q.kind: q for q in video_questions(script)}
    assert qas["needle_digit"].question == "What digit was on the red square?" and qas["needle_digit"].answer == "7"
    assert qas["when"].answer == "00:00:41"
    assert qas["needle_any"].answer == "7"
    assert qas["now"].answer == NOTHING


def test_overlapping_events_are_refused():
    o = WorldObject("blue", "circle", "3")
    with pytest.raises(ValueError, match="overlap"):
        SceneScript(60.0, [Event(o, 1, 5, 90, 90), Event(o, 4, 6, 90, 90)])
    with pytest.raises(ValueError, match="colour"):
        WorldObject("pink", "circle", "3")


def test_video_question_answers_follow_the_script():
    script = random_script(3, duration_s=90, n_events=4)
    seen = script.seen_events()
    assert len(seen) == 4 and all(e.start_s == int(e.start_s) for e in seen)
    by_q = {q.question: q.answer for q in video_questions(script)}
    first, second = seen[0].obj, seen[1].obj
    assert by_q[f"What appeared after the {first.name}?"] == second.name
    assert by_q[f"What appeared before the {second.name}?"] == first.name
    assert by_q[f"What digit was on the {second.name}?"] == second.digit
    assert by_q[f"How many times did a {first.colour} shape appear?"] == "1"


def test_count_question_counts_repeats():
    objs = [WorldObject("green", "circle", "1"), WorldObject("green", "square", "2"), WorldObject("blue", "circle", "3")]
    script = SceneScript(30.0, [Event(o, 5 * i + 1, 5 * i + 3, 96, 96) for i, o in enumerate(objs)])
    by_q = {q.question: q.answer for q in video_questions(script)}
    assert by_q["How many times did a green shape appear?"] == "2"
    assert by_q["How many times did a blue shape appear?"] == "1"


def test_frame_questions_have_exact_answers():
    frame, script = single_frame(4)
    o = script.visible(frame.time_s)[0].obj
    answers = {q.kind: q.answer for q in frame_questions(script, frame.time_s)}
    assert answers == {"colour": o.colour, "shape": o.shape, "digit": o.digit, "what": o.name}
    assert o.colour in COLOURS
    empty, script = single_frame(1, p_empty=1.0)
    assert [q.answer for q in frame_questions(script, empty.time_s)] == [NOTHING]


def test_video_file_is_written_and_readable(tmp_path):
    red7 = WorldObject("red", "square", "7")
    script = SceneScript(6.0, [Event(red7, 2.0, 4.0, 96, 96, size=90)], seed=2)
    path = script.write_video(tmp_path / "world.mp4", fps=4)
    cfg = SamplerConfig(fps=1.0, max_side=None, chunk_frames=2, backend="pyav")
    frames = [f for chunk in iter_chunks(str(path), cfg) for f in chunk.frames]
    assert [round(f.time_s, 3) for f in frames] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert frames[0].image.shape == (192, 192, 3)
    x, y = script.visible(2.0)[0].colour_probe()
    assert nearest_colour(frames[2].image[y, x]) == "red"
    assert nearest_colour(frames[0].image[y, x]) != "red"  # the square is not there yet
