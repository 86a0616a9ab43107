"""The synthetic world: deterministic by seed, pixels agree with the ground truth, exact answers; the
optional realism (noise, flicker, panning texture, distractors) changes pixels only, never the default."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from streamer.frames import SamplerConfig, iter_chunks
from streamer.world.sample_video import main as sample_video_main
from streamer.world.sample_video import sample_script
from streamer.world.scene import (
    COLOURS,
    NOTHING,
    Event,
    Realism,
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


# ---- realism ---------------------------------------------------------------------------------------

# sha256 (first 16 hex digits) of frames of the default world, recorded before `Realism` existed (opencv
# 5.0.0, numpy 2.4.6): the clean world must keep rendering exactly these pixels.
CLEAN_FRAMES = {
    (7, 3.5): "5f35e52da80302c2",  # random_script(7, 60, 3): purple square
    (7, 10.0): "e9901b9296755974",  # green square
    (7, 13.0): "f90a8d2e30723758",  # nothing but the ball
    (7, 52.0): "03d8d3d45ab224b9",  # red triangle
}
CLEAN_SINGLE = {11: "0120255738bbde53", 4: "7e1c98f57f5b3b80"}  # single_frame(seed)


def _digest(img: np.ndarray) -> str:
    return hashlib.sha256(img.tobytes()).hexdigest()[:16]


def test_default_world_renders_exactly_as_before():
    clean, all_off = random_script(7, 60, 3), random_script(7, 60, 3, realism=Realism())
    for (_, t), digest in CLEAN_FRAMES.items():
        assert _digest(clean.render(t)) == digest
        assert np.array_equal(all_off.render(t), clean.render(t))
    for seed, digest in CLEAN_SINGLE.items():
        assert _digest(single_frame(seed)[0].image) == digest
        assert _digest(single_frame(seed, realism=Realism())[0].image) == digest


def test_noisy_world_is_deterministic_and_keeps_its_ground_truth():
    a, b = random_script(7, 60, 3, realism=Realism.noisy()), random_script(7, 60, 3, realism=Realism.noisy())
    other, clean = random_script(8, 60, 3, realism=Realism.noisy()), random_script(7, 60, 3)
    for t in (0.0, 3.5, 13.0, 41.5):
        assert np.array_equal(a.render(t), b.render(t))
        assert not np.array_equal(a.render(t), clean.render(t)) and not np.array_equal(a.render(t), other.render(t))
    assert a.events == clean.events and video_questions(a) == video_questions(clean)
    for t in a.times():
        assert a.visible(t) == clean.visible(t) and frame_questions(a, t) == frame_questions(clean, t)
    f1, _ = single_frame(11, realism=Realism.noisy())
    f2, _ = single_frame(11, realism=Realism.noisy())
    assert np.array_equal(f1.image, f2.image)


def test_consecutive_empty_frames_differ_when_noisy_and_only_at_the_ball_when_clean():
    t = 13.0  # random_script(7, 60, 3) shows nothing at 13 s and 14 s
    noisy, clean = random_script(7, 60, 3, realism=Realism.noisy()), random_script(7, 60, 3)
    assert not noisy.visible(t) and not noisy.visible(t + 1)
    diff = np.abs(noisy.render(t).astype(int) - noisy.render(t + 1).astype(int))
    assert diff.max() > 0 and 1.0 < diff.mean() < 20.0
    changed = np.abs(clean.render(t).astype(int) - clean.render(t + 1).astype(int)).max(axis=2) > 0
    ys, xs = np.nonzero(changed)
    assert len(ys) > 0  # the ball moved
    near_a_ball = np.zeros(len(ys), dtype=bool)
    for bx, by, r in (clean.ball_at(t), clean.ball_at(t + 1)):
        near_a_ball |= np.hypot(xs - bx, ys - by) <= r + 2
    assert near_a_ball.all()


def test_sensor_noise_has_its_std_and_is_new_every_frame():
    clean, noisy = random_script(7, 60, 3), random_script(7, 60, 3, realism=Realism(noise_std=6.0))
    n13, n14 = (noisy.render(t).astype(float) - clean.render(t) for t in (13.0, 14.0))
    assert 5.0 < n13.std() < 7.0 and 5.0 < n14.std() < 7.0
    assert abs(np.corrcoef(n13.ravel(), n14.ravel())[0, 1]) < 0.05


def test_texture_and_distractors_are_grey_and_behind_the_objects():
    realism = Realism(texture=20.0, pan_px_s=2.0, n_distractors=6)  # no camera effects: exact pixels
    scene, clean = random_script(7, 60, 3, realism=realism), random_script(7, 60, 3)
    empty = scene.render(13.0)
    assert not np.array_equal(empty, clean.render(13.0))
    assert (empty[..., 0] == empty[..., 1]).all() and (empty[..., 1] == empty[..., 2]).all()  # never an answer colour
    assert not np.array_equal(scene.render(13.0), scene.render(14.0))
    (placed,) = scene.visible(3.5)
    x, y = placed.colour_probe()
    assert tuple(scene.render(3.5)[y, x]) == COLOURS[placed.obj.colour]  # objects drawn on top, exact colour


def _probe_patch(image: np.ndarray, x: int, y: int) -> np.ndarray:
    """Mean RGB of the 5x5 patch around a probe point (sensor noise averaged out)."""
    return image[y - 2:y + 3, x - 2:x + 3].reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize("seed", range(12))
def test_object_colours_survive_the_noisy_preset(seed):
    frame, script = single_frame(seed, realism=Realism.noisy())
    (placed,) = script.visible(frame.time_s)
    x, y = placed.colour_probe()
    assert nearest_colour(_probe_patch(frame.image, x, y)) == placed.obj.colour
    half = int(placed.size / 2)
    box = frame.image[int(placed.cy) - half:int(placed.cy) + half, int(placed.cx) - half:int(placed.cx) + half]
    assert (box.max(axis=2) < 60).sum() > 20  # the digit is still there


def test_noisy_sample_video_keeps_its_colours_through_h264(tmp_path, capsys):
    path = tmp_path / "noisy.mp4"
    sample_video_main([str(path), "--seconds", "4", "--noisy"])
    assert str(path) in capsys.readouterr().out
    script = sample_script(4.0, realism=Realism.noisy())
    cfg = SamplerConfig(fps=1.0, max_side=None, chunk_frames=2, backend="pyav")
    frames = [f for chunk in iter_chunks(str(path), cfg) for f in chunk.frames]
    shown = [(f, script.visible(f.time_s)) for f in frames if script.visible(f.time_s)]
    assert shown and not np.array_equal(frames[0].image, frames[1].image)
    for f, (placed,) in shown:
        assert nearest_colour(_probe_patch(f.image, *placed.colour_probe())) == placed.obj.colour


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"noise_std": -1.0}, "noise_std"),
        ({"noise_std": float("nan")}, "noise_std"),
        ({"flicker": 0.9}, "flicker"),
        ({"texture": "lots"}, "texture"),
        ({"pan_px_s": 2.0}, "needs texture"),
        ({"n_distractors": 2.5}, "n_distractors"),
        ({"n_distractors": -1}, "n_distractors"),
    ],
)
def test_invalid_realism_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        Realism(**bad)


def test_realism_must_be_a_realism():
    with pytest.raises(ValueError, match="realism"):
        SceneScript(10.0, realism={"noise_std": 6})
