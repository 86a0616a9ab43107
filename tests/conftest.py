"""Shared pytest fixtures: small videos written inside the tests (nothing is downloaded).

`write_video` turns RGB frames into a video file with PyAV (any codec/container PyAV can write,
optional explicit timestamps for variable frame rate, optional audio track); `write_audio` writes an
audio-only file. What the frames show is up to each test module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
import threading
import time

import av
import numpy as np
import pytest


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],  # each (H, W, 3) uint8 RGB, all the same size
    *,
    fps: float = 30.0,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    gop: int | None = None,  # keyframe interval in frames (None: the encoder's default)
    times: Sequence[float] | None = None,  # explicit presentation times in s (variable frame rate)
    options: dict[str, str] | None = None,  # encoder options, e.g. {"preset": "ultrafast"}
    container_options: dict[str, str] | None = None,  # muxer options, e.g. {"movflags": "faststart"}
    rotation: float | None = None,  # display-matrix rotation, degrees counter-clockwise (a phone's portrait: -90)
) -> Path:
    """Encode `frames` into `path`; the container follows the file extension. Returns `path`."""
    path = Path(path)
    if codec == "libx264" and options is None:
        options = {"preset": "ultrafast"}
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(path), "w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.pix_fmt = pix_fmt
        stream.options = dict(options or {})
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if gop is not None:
            stream.codec_context.gop_size = gop
            if codec == "libx264":  # exact keyframe interval, no scene-cut keyframes
                stream.options["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0"
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, image in enumerate(frames):
            if i == 0:
                stream.width, stream.height = image.shape[1], image.shape[0]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if times is not None:
                frame.pts = round(times[i] * 1000)
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_audio(path: str | Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    """Write an audio-only file (AAC, a 440 Hz tone) to `path`. Returns `path`."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        t = np.arange(int(seconds * rate), dtype=np.float32) / rate
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]  # (1, n)
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="session")
def video_writer():
    """The `write_video` function, for session-scoped fixtures that build test videos."""
    return write_video


@pytest.fixture(scope="session")
def audio_writer():
    """The `write_audio` function."""
    return write_audio


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    """One temporary folder shared by all generated test videos of the session."""
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def hub_dirs(tmp_path_factory) -> dict[str, str]:
    """family -> a checkpoint directory laid out like its hub repository, at toy size (models/hub_layout.py)."""
    from streamer.models.hub_layout import HUB_LAYOUTS, write_checkpoint

    dirs = {}
    for family in HUB_LAYOUTS:
        path = tmp_path_factory.mktemp(f"hub-{family}")
        write_checkpoint(family, path, size="tiny")
        dirs[family] = str(path)
    return dirs


class OneLayerCache:
    """A one-layer `KVWindowCache` (2 KV heads of dim 16, 4 query heads) driven by hand, the way a model drives
    it: `append(keys, values, query)` tags the chunk, updates the layer and lets it observe the queries."""

    def __init__(self, policy: str, budget: int, **kw):
        import torch
        from transformers import LlamaConfig

        from streamer.kv_window import KVWindowCache, WindowConfig

        cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
        self.cache = KVWindowCache(cfg, WindowConfig(policy=policy, budget=budget, **kw))
        self.layer = self.cache.layers[0]
        self.gen = torch.Generator().manual_seed(0)

    def randn(self, n: int):
        import torch

        return torch.randn(1, 2, n, 16, generator=self.gen)

    def append(self, keys=None, values=None, query=None, n: int | None = None, probe: int = 0):
        """Append n tokens (random keys/values/queries unless given; query (1, 4, n, 16)); returns the layer."""
        import torch

        from streamer.shared_types import Modality

        n = n or (keys.shape[2] if keys is not None else values.shape[2])
        keys = keys if keys is not None else self.randn(n)
        values = values if values is not None else self.randn(n)
        query = query if query is not None else torch.randn(1, 4, n, 16, generator=self.gen)
        self.cache.tag(torch.full((n,), int(Modality.TEXT)), probe=probe)
        self.cache.update(keys, values, 0)
        self.layer.observe(query, 0.25)
        return self.layer


@pytest.fixture
def one_layer():
    """Factory: one_layer(policy, budget, **WindowConfig options) -> OneLayerCache."""
    return OneLayerCache


class FakeClock:
    """A wall clock the test moves: `sleep` on the test's thread advances it at once (and is recorded), nothing
    waits. Another thread (a feed left running by an earlier test) that sleeps on it really sleeps and does not
    move it, so it cannot change what this test sees."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []
        self.owner = threading.get_ident()

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        if threading.get_ident() != self.owner:
            time.sleep(min(seconds, 0.05))
            return
        self.slept.append(seconds)
        self.t += seconds


@pytest.fixture
def wall(monkeypatch) -> FakeClock:
    """The project's wall clock (`streamer.video.frame.WALL`: pushed frames' default times, realtime pacing, lag)
    replaced by a `FakeClock` for this test."""
    from streamer.video import frame

    clock = FakeClock()
    monkeypatch.setattr(frame, "WALL", clock)
    return clock


# ---- a tiny random Llama and cache settings for the cache's tests (test_kv_window, test_kv_kernels, ...) ----

SLOW_A, SLOW_B = 7, 15  # head dimensions with the slowest RoPE rotation: a crafted key or query there keeps its direction


def tiny_config(**kw):
    """A 2-layer Llama config small enough for property tests (64 hidden, 4 heads, 2 KV heads, 256 positions)."""
    from transformers import LlamaConfig

    base = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaConfig(**{**base, **kw})


def window(policy="combined", merge=None, budget=64, **kw):
    """WindowConfig for `policy`, with no budget for "full"."""
    from streamer.kv_window import WindowConfig

    return WindowConfig(policy=policy, merge=merge, budget=None if policy == "full" else budget, **kw)


def _variants():
    from streamer.kv_merge import MERGE_MODES
    from streamer.kv_window import POLICIES

    return [(p, None) for p in POLICIES] + [(p, m) for p in ("text-prior", "combined") for m in MERGE_MODES]


VARIANTS = _variants()  # every policy, and every merge variant under the policies that merge by default


# ---- the CLI as a user runs it --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    """A 4-second sample of the synthetic world at 2 fps (H.264 mp4)."""
    from streamer.world.sample_video import write_sample

    return str(write_sample(tmp_path_factory.mktemp("sample") / "sample.mp4", seconds=4, fps=2))


def cli_process(*args: str, **kwargs):
    """The CLI in a child process with Ctrl-C delivered as in a terminal (a background job ignores it)."""
    import signal
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "streamer.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            **kwargs)


def one_line(err: str) -> str:
    """The single error line of a CLI run (the random model's note aside)."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def world_chunks(seconds: int = 24, per_chunk: int = 4):
    """(script, chunks): `seconds` of the synthetic world with two objects, at 1 fps, `per_chunk` frames a chunk."""
    from streamer.video.frame import Chunk
    from streamer.world.scene import random_script

    script = random_script(5, duration_s=seconds, n_events=2, event_s=(3, 4))
    frames = list(script.frames(1.0))
    return script, [Chunk(tuple(frames[i:i + per_chunk]), i // per_chunk) for i in range(0, len(frames), per_chunk)]


def stream_frames(cache, gen, chunks: int = 6, n: int = 20, heads: int = 2, dim: int = 16, dtype=None,
                  device: str = "cpu") -> None:
    """Append `chunks` chunks of n random frame tokens (9 image tokens + 1 timestamp per frame) to every layer
    of `cache`, cutting after each; every other chunk is a near repeat of the one before (the redundancy signal
    has something to find). Drawn in float32 from `gen`, then cast to `dtype` on `device`: caches of
    different dtypes see the same stream."""
    import torch

    from streamer.shared_types import Modality

    prev = None
    for j in range(chunks):
        kinds = torch.tensor([Modality.IMAGE] * 9 + [Modality.TEXT]).repeat(n // 10)
        cache.tag(kinds, (torch.arange(n) // 10 + j * (n // 10)).float())
        now = []
        for layer in range(len(cache.layers)):
            k, v = torch.randn(1, heads, n, dim, generator=gen), torch.randn(1, heads, n, dim, generator=gen)
            if prev is not None and j % 2:
                v = prev[layer] + 0.01 * v
            now.append(v)
            cache.update(k.to(device, dtype), v.to(device, dtype), layer)
        prev = now
        cache.compress()


def cache_state(session) -> list:
    """Every tensor and number each layer of a `StreamSession`'s cache holds (store slots past a layer's end
    excluded)."""
    import torch

    state = []
    for layer in session.cache.layers:
        state.append({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in vars(layer).items()
                      if not k.startswith("_") and k not in ("cut", "turns", "inv_freq", "cfg", "comp", "observing")})
    return state


def assert_same_state(a: list, b: list) -> None:
    import torch

    for la, lb in zip(a, b, strict=True):
        assert la.keys() == lb.keys()
        for k in la:
            if isinstance(la[k], torch.Tensor):
                torch.testing.assert_close(la[k], lb[k], rtol=0, atol=0, equal_nan=True, msg=k)
            else:
                assert la[k] == lb[k], k


def slow_ingest(monkeypatch, seconds_per_frame: float) -> None:
    """Make `StreamSession.ingest` a model that needs `seconds_per_frame` (real seconds) for each frame of a chunk,
    and says so in the seconds it returns, as ingest does."""
    import time

    from streamer.session import StreamSession

    fast = StreamSession.ingest

    def ingest(self, chunk):
        fast(self, chunk)
        time.sleep(seconds_per_frame * len(chunk.times))
        return seconds_per_frame * len(chunk.times)

    monkeypatch.setattr(StreamSession, "ingest", ingest)
