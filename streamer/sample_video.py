"""Writes a small synthetic sample video (H.264 mp4) so the demo needs no download.

`python -m streamer.sample_video sample.mp4 --seconds 60` draws a few coloured shapes that move and
change over time, plus a big clock, at 10 fps and 320x180. It exists so the README's first command runs
on a fresh machine; it is not a benchmark world with ground truth.
"""

import argparse
import math
from pathlib import Path

import av
import cv2
import numpy as np

COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (240, 220, 40)}


def draw_frame(t: float, width: int = 320, height: int = 180) -> np.ndarray:
    """RGB uint8 (H, W, 3) frame at video time t seconds."""
    img = np.full((height, width, 3), 235, dtype=np.uint8)
    for i, (name, rgb) in enumerate(COLOURS.items()):
        if int(t / 10) % len(COLOURS) == i:  # a different shape takes the stage every 10 s
            continue
        x = int((0.5 + 0.4 * math.sin(t * (0.3 + 0.1 * i) + i)) * width)
        y = int((0.3 + 0.15 * i) * height)
        if i % 2:
            cv2.circle(img, (x, y), 14, rgb, -1)
        else:
            cv2.rectangle(img, (x - 12, y - 12), (x + 12, y + 12), rgb, -1)
    clock = f"{int(t) // 60:02d}:{int(t) % 60:02d}"
    cv2.putText(img, clock, (8, height - 12), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (20, 20, 20), 2)
    return img


def write_sample(path: str | Path, seconds: float = 60.0, fps: int = 10, width: int = 320, height: int = 180) -> Path:
    """Encode `seconds` of the synthetic scene to `path` (H.264 in mp4) and return the path."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "g": str(2 * fps)})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(draw_frame(i / fps, width, height), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", nargs="?", default="sample.mp4")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--fps", type=int, default=10)
    args = p.parse_args(argv)
    print(write_sample(args.path, args.seconds, args.fps))


if __name__ == "__main__":
    main()
