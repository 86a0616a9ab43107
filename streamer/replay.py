"""Replay a video into a session with questions at their times, the one loop of the CLI and the demo.

`replay` samples and chunks `source`, feeds each chunk to the session and, when the video reaches the time of
a stop, calls `on_stop(i)` (a question asked there sees exactly the frames up to that time), and `on_alert` for
each alert of the session's standing questions as it fires. Reading, the vision tower and the language model
overlap (`streamer.pipeline`). A progress bar on stderr shows the frames fed, the cache's tokens against its
budget and the video time; for live sources (and `--realtime`) also the lag and the frames dropped to keep up,
with a warning line when the model falls behind. A Ctrl-C that a decoder swallowed is
raised here (`streamer.entry.check_ctrl_c`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from tqdm import tqdm

from streamer.entry import check_ctrl_c
from streamer.frames import SamplerConfig, sample_frames
from streamer.pipeline import Pipeline
from streamer.session import StreamSession
from streamer.video.frame import VideoSource
from streamer.watch import Alert


def replay(session: StreamSession, source: VideoSource | str | int | os.PathLike, sampler: SamplerConfig,
           stops: Sequence[float], on_stop: Callable[[int, Pipeline], None], *, total: int | None = None,
           live: bool = False, desc: str = "ingest", on_alert: Callable[[Alert], None] | None = None) -> None:
    """Feed `source` into `session`, calling `on_stop(i, pipeline)` when the video reaches `stops[i]` (sorted) and
    `on_alert(alert)` for each alert of the session's standing questions as it fires. `live`: the source cannot
    wait for the model (`streamer.pipeline`: frames are dropped, counted, to keep up)."""
    bar = tqdm(total=total, unit="frame", desc=desc, file=sys.stderr, disable=None)
    told = session.alerts_since(0)[1]
    try:
        with Pipeline(session, sample_frames(source, sampler), sampler, list(stops), live=live) as pipeline:
            for item in pipeline:
                check_ctrl_c()
                if isinstance(item, int):
                    bar.clear()
                    on_stop(item, pipeline)
                    continue
                work_s = session.ingest(item)
                if on_alert and len(session.alerts) > told:
                    bar.clear()
                    for alert in session.alerts[told:]:
                        on_alert(alert)
                    told = session.alerts_since(0)[1]
                if warning := pipeline.ingested(item, work_s):
                    bar.write(f"warning: {warning}", file=sys.stderr)
                bar.update(len(item.times))
                postfix = {"kv": f"{session.cache.get_seq_length()}/{session.window.budget}",
                           "t": f"{session.video_time_s:.0f}s"}
                if live:
                    postfix.update(lag=f"{pipeline.lag_s:.1f}s", dropped=pipeline.frames_dropped)
                bar.set_postfix(postfix)
    finally:
        bar.close()
    check_ctrl_c()  # the stream may have ended because Ctrl-C was swallowed while it was read
