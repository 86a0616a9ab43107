"""The video path's public face: everything a program needs to turn a file, URL or webcam into timed chunks of
frames. The code lives in `streamer/video/`, one file per step a frame takes (see its `__init__`):

    open_source(path_or_url_or_webcam)  -> VideoSource          (streamer.video.opening)
    sample_frames(source, SamplerConfig) -> Frame, Frame, ...    (streamer.video.sample)
    iter_chunks(source, SamplerConfig)   -> Chunk, Chunk, ...    sampling and chunking in one call
    SkipConfig                           the frame skip a StreamSession applies (streamer.video.skip)
"""

from streamer.video.frame import Chunk, Frame, PushSource, VideoSource
from streamer.video.opening import BACKENDS, open_source
from streamer.video.sample import (
    LagMeter, SamplerConfig, chunk_frames, chunks_and_stops, iter_chunks, resize_max_side, sample_frames,
)
from streamer.video.skip import SkipConfig

__all__ = ["BACKENDS", "Chunk", "Frame", "LagMeter", "PushSource", "SamplerConfig", "SkipConfig", "VideoSource",
           "chunk_frames", "chunks_and_stops", "iter_chunks", "open_source", "resize_max_side", "sample_frames"]
