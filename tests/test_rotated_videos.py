"""Rotated phone videos (issue 15, class 7): upright from every backend."""

from __future__ import annotations

import numpy as np
import pytest

from streamer import errors
from streamer.frames import SamplerConfig, open_source, sample_frames


@pytest.mark.parametrize("rotation", [-90, 90, 180])  # degrees counter-clockwise; a phone's portrait is -90
@pytest.mark.parametrize("backend", ["pyav", "decord", "opencv", "auto"])
def test_rotated_videos_come_out_upright(tmp_path, video_writer, rotation, backend):
    stored = np.zeros((48, 64, 3), np.uint8)  # landscape as stored, a white marker in the top-left corner
    stored[:12, :12] = 255
    path = video_writer(tmp_path / "phone.mp4", [stored] * 6, fps=6, rotation=rotation)
    upright = np.rot90(stored, round(rotation / 90) % 4)  # what a player shows
    if backend == "decord" and rotation % 180:
        with pytest.raises(errors.UnsupportedCodecError, match="rotat"):  # decord 0.6 scrambles these
            open_source(path, backend)
        return
    with open_source(path, backend) as source:
        frames = list(sample_frames(source, SamplerConfig(fps=6, max_side=None)))
        assert (source.height, source.width) == upright.shape[:2]
    assert len(frames) == 6
    for frame in frames:
        assert frame.image.shape == upright.shape and frame.image.flags.c_contiguous
        marker = np.argwhere(frame.image[:, :, 1] > 128).mean(axis=0)
        assert np.abs(marker - np.argwhere(upright[:, :, 1] > 128).mean(axis=0)).max() < 3, (marker, rotation)
