"""Writes the demo's sample video: a scene of the synthetic world (`streamer.world`) with its ground truth.

    python -m streamer.world.sample_video sample.mp4 [--seconds 60] [--seed 3] [--fps 4] [--noisy]

prints the path, then what happens in it ("00:00:07-00:00:12  blue circle with the digit 3") and
questions the built-in `tiny` model was trained on, with their right answers, so a user can check the
model's answers. It exists so the README's first command runs on a fresh machine with no download.
`--noisy` films the same scene through `Realism.noisy()` (sensor noise, flicker, a panning textured
background, distractors): same events and answers, no two frames pixel-equal.
Deliberately not here: the world itself (world/scene.py).
"""

import argparse
from pathlib import Path

from streamer.shared_types import format_timestamp
from streamer.world.scene import Realism, SceneScript, random_script, video_questions

SAMPLE_SEED = 3  # the README's demo questions are written for this seed


def sample_script(seconds: float = 60.0, seed: int = SAMPLE_SEED, frame_size: int = 192,
                  realism: Realism | None = None) -> SceneScript:
    """A scene of `seconds` (at least 2) with one event (an object on screen for 3-6 s, less in very short
    scenes) per 12 s, at least one and at most five; `realism` changes its pixels, not its events."""
    longest = max(1, min(6, int(seconds) - 1))
    return random_script(seed, duration_s=seconds, n_events=max(1, min(5, int(seconds // 12))),
                         event_s=(min(3, longest), longest), frame_size=frame_size, realism=realism)


def write_sample(path: str | Path, seconds: float = 60.0, fps: int = 4, seed: int = SAMPLE_SEED,
                 frame_size: int = 192, realism: Realism | None = None) -> Path:
    """Encode the sample scene to `path` (H.264 in mp4) and return the path."""
    return sample_script(seconds, seed, frame_size, realism).write_video(path, fps=fps)


def describe(script: SceneScript) -> list[str]:
    """One line per event, then one video question of each kind with its answer."""
    lines = [f"{format_timestamp(e.start_s)}-{format_timestamp(e.end_s)}  {e.obj.name} with the digit {e.obj.digit}"
             for e in script.events]
    first = {qa.kind: qa for qa in reversed(video_questions(script))}  # the earliest question of each kind
    return lines + [f"Q: {qa.question}  A: {qa.answer}" for qa in first.values()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", nargs="?", default="sample.mp4")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--fps", type=int, default=4, help="frames per second written (the model samples 1 fps)")
    p.add_argument("--seed", type=int, default=SAMPLE_SEED)
    p.add_argument("--noisy", action="store_true",
                   help="sensor noise, flicker, a panning textured background and distractors (Realism.noisy())")
    args = p.parse_args(argv)
    if args.seconds < 2 or args.fps < 1:
        p.error("--seconds must be at least 2 and --fps at least 1")
    realism = Realism.noisy() if args.noisy else None
    print(write_sample(args.path, args.seconds, args.fps, args.seed, realism=realism))
    print("\n".join(describe(sample_script(args.seconds, args.seed, realism=realism))))


if __name__ == "__main__":
    main()
