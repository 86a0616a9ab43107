"""Presence questions of the synthetic world (`world/presence.py`): what "on screen" means to a standing question
(a frame of the last 4 s), the question texts, and training examples whose answers follow the ground truth."""

import random

import pytest

from streamer.world.presence import NO, YES, Lookout, on_screen, presence_qa, window_times
from streamer.world.scene import Event, SceneScript, WorldObject

RED_CIRCLE_7 = WorldObject("red", "circle", "7")


def script_with(start_s: float, end_s: float) -> SceneScript:
    return SceneScript(30.0, [Event(RED_CIRCLE_7, start_s, end_s, 90.0, 90.0, 0.0, 0.0, 80.0)])


@pytest.mark.parametrize("start,end,t,seen", [
    (10, 12, 11, True),   # on screen now
    (10, 12, 14, True),   # left 3 s before the check: still in its 4 s
    (10, 12, 15, False),  # last shown at 11 s: 4 s before 15 s is outside (15 - 4, 15]
    (20, 22, 19, False),  # not yet
])  # fmt: skip
def test_on_screen_means_a_frame_of_the_last_four_seconds(start, end, t, seen):
    script = script_with(start, end)
    assert window_times(script, t) == [s for s in (t - 3, t - 2, t - 1, t) if s >= 0]
    assert on_screen(script, Lookout("red", "circle"), t) is seen
    assert on_screen(script, Lookout(digit="7"), t) is seen
    assert not on_screen(script, Lookout("red", "square"), t) and not on_screen(script, Lookout(digit="1"), t)


def test_a_lookout_is_a_colour_and_shape_or_a_digit():
    assert Lookout("red", "circle").question == "Is there a red circle on screen?"
    assert Lookout(digit="7").question == "Is the digit 7 on screen?"
    for bad in (dict(colour="red"), dict(colour="red", shape="circle", digit="7"), {}):
        with pytest.raises(ValueError):
            Lookout(**bad)


def test_presence_questions_follow_the_ground_truth_and_say_yes_often_enough():
    rng, answers = random.Random(0), []
    for i in range(200):
        script = script_with(10, 10 + i % 5 + 1)
        t = float(8 + i % 12)
        qa = presence_qa(rng, script, t)
        lookout = Lookout(digit=qa.question.split()[3]) if "digit" in qa.question else Lookout(*qa.question.split()[3:5])
        assert qa.kind == "presence" and qa.answer == (YES if on_screen(script, lookout, t) else NO)
        answers.append(qa.answer)
    assert 0.3 <= answers.count(YES) / len(answers) <= 0.7
