"""One conversation over one video stream: a model adapter plus its bounded KV cache.

`StreamSession` feeds chunks of frames into the cache (`ingest`), answers questions token by token
from whatever the cache holds (`ask`), and keeps going: earlier questions and answers stay in the cache
as text, and frames can keep arriving after a question. `stats()` reports what the cache holds and what
the process costs, measured (KV bytes of the stored tensors, process RSS), not estimated.

Threads: every model call runs under `lock`; an answer holds it until it is complete, so frames arriving
meanwhile wait instead of splitting the answer. Sessions of one model either share one lock (they take
turns) or each has its own and a shared `Batcher` runs their decoding steps together (`streamer.batching`).

Not here: reading video (`frames.py`), prompt formats (`models/`), cache policy (`kv_window.py`).
"""

import contextlib
import contextvars
import logging
import math
import threading
import time
from collections.abc import Iterator

import psutil
import torch

from streamer.batching import Batcher, on_model
from streamer.video.skip import SkipConfig, FrameSkipper
from streamer.errors import BudgetError, BusyError, ConfigError, check_number
from streamer.video.frame import Chunk
from streamer.text import check_question
from streamer.shared_types import Adapter, Conversation, Modality, PreparedChunk, Turn
from streamer.kv_window import KVWindowCache, WindowConfig, use_window_attention
from streamer.viewers import Viewer
from streamer.watch import Watcher, Watching

log = logging.getLogger(__name__)

def _check_generation(max_new_tokens: int, temperature: float) -> None:
    check_number("max_new_tokens", max_new_tokens, 1, integer=True)
    check_number("temperature", temperature, 0)


# (lock, still reading?) of the answers begun in this context: this thread, or one step of a server's worker
# that copies the context for each step (anyio, so Gradio) and so never sees another request's answers
_reading: contextvars.ContextVar[tuple] = contextvars.ContextVar("streamer_reading", default=())


def _check_not_reading(lock) -> None:
    """BusyError instead of a deadlock: the caller has an answer of a session with this lock that it has not
    read to the end, so waiting for the lock would wait for ever."""
    if any(held is lock and active[0] for held, active in _reading.get()):
        raise BusyError("an answer is still being read: read it to the end or close() it before asking, "
                        "feeding frames or resetting")


class StreamSession(Watching):
    """Feeds a stream into a model under a fixed KV budget and answers questions about it."""

    def __init__(self, adapter: Adapter, window: WindowConfig | None = None, lock=None,
                 skip: SkipConfig | None = SkipConfig(), batcher: Batcher | None = None):
        if not isinstance(window, WindowConfig | None):
            raise ConfigError(f"window must be a WindowConfig or None, got {type(window).__name__}")
        if not isinstance(skip, SkipConfig | None):
            raise ConfigError(f"skip must be a SkipConfig or None, got {type(skip).__name__}")
        self.adapter = adapter
        self.window = window or WindowConfig()
        # skip: frames that barely differ from the last one fed never reach the model (`streamer.video.skip`);
        # on by default (measured: no loss on any benchmark, large gains at small budgets); None feeds every frame
        self.skipper = FrameSkipper(skip) if skip is not None else None
        # a plain Lock, shared by sessions of one model: an answer's generator may resume in another thread
        self.lock = lock or threading.Lock()
        self.batcher = batcher  # decoding steps batched with other sessions' (`streamer.batching`)
        use_window_attention(adapter.model)
        self.cache = self._new_cache(self.window)
        self._process = psutil.Process()
        self.watcher: Watcher | None = None  # standing questions, made at the first watch()
        self.reset()

    # ---- conversation ----------------------------------------------------------------------------

    def check_window(self, window: WindowConfig) -> None:
        """ConfigError if this session's model cannot take the cache settings `window` (e.g. a budget past its
        positions); nothing changes."""
        self._new_cache(window)

    def _new_cache(self, window: WindowConfig) -> KVWindowCache:
        cache = KVWindowCache(self.adapter.model.config, window)
        if window.resolved.composition.observes("probe") and cache.mrope:
            raise ConfigError("the proxy scorer needs a model with 1-D RoPE positions (not M-RoPE)")
        return cache

    def reset(self, window: WindowConfig | None = None) -> None:
        """Forget the video and the chat: empty cache, counters at zero. `window`: the cache settings from now
        on (a bad one raises ConfigError and changes nothing)."""
        if not isinstance(window, WindowConfig | None):
            raise ConfigError(f"window must be a WindowConfig or None, got {type(window).__name__}")
        self._check_free()
        with self.lock:
            if window is not None and window != self.window:
                self.cache = self._new_cache(window)  # checks it against the model
                self.window = window
            self.cache.reset()
            self.conv = Conversation()  # where the chat stands; moves only when a prompt is fed
            self.history: list[Turn] = []
            self.frames_ingested = self.frames_skipped = 0
            self.video_time_s = 0.0
            self.last_fed = (0.0, 0.0)  # times of the first and last frames of the last chunk fed
            self.ingest_seconds = self.watch_seconds = 0.0
            self.peak_kv_bytes = 0
            if self.skipper is not None:
                self.skipper.reset()
            if self.watcher is not None:
                self.watcher.reset()

    def ingest(self, chunk: Chunk | PreparedChunk) -> float:
        """Append one chunk of frames to the cache (compressing it back to the budget); returns the
        seconds it took (preparing it included, waiting for the lock not), which also add up in `ingest_seconds`."""
        if not isinstance(chunk, Chunk | PreparedChunk):
            raise ConfigError(f"ingest() takes a Chunk of frames, got {type(chunk).__name__}")
        if isinstance(chunk, Chunk) and not chunk.frames:
            return 0.0
        self._check_free()
        with self.lock:
            if isinstance(chunk, Chunk):
                chunk = self.prepare(chunk, encode=False)  # the vision tower runs inside the model's pass
            start = time.perf_counter()
            if chunk.chunk.frames:
                self._feed_frames(chunk)  # a refused chunk raises before it counts
            self.video_time_s = max(self.video_time_s, chunk.times[-1])  # skipped frames move time on too
            self.frames_skipped += chunk.skipped
            took = time.perf_counter() - start + chunk.seconds
            self.ingest_seconds += took
        return took

    def prepare(self, chunk: Chunk, encode: bool = True, skipper: FrameSkipper | None = None) -> PreparedChunk:
        """The work on `chunk` that needs no cache, done now and outside the lock: the frame skip (the session's,
        or a pipeline's own `skipper`) and (`encode`) the vision tower. A pipeline (`streamer.pipeline`) prepares
        the next chunk while this one is ingested; chunks are prepared and ingested in their order."""
        if not isinstance(chunk, Chunk) or not chunk.frames:
            raise ConfigError(f"prepare() takes a Chunk with frames, got {chunk!r:.80}")
        start, times, skipper = time.perf_counter(), chunk.times, skipper or self.skipper
        if skipper is not None:  # what did not change is not fed; time moves on all the same
            chunk = Chunk(tuple(f for f in chunk.frames if skipper.keep(f)), chunk.index)
        pixels = self.adapter.frame_inputs(chunk.frames, encode) if chunk.frames else None
        return PreparedChunk(chunk, tuple(times), pixels, time.perf_counter() - start)

    def _feed_frames(self, prepared: PreparedChunk) -> None:
        chunk = prepared.chunk
        prompt = self.adapter.chunk_prompt(chunk, self.conv, prepared.pixels)
        self._check_room(prompt.n_tokens, "this chunk of frames")
        self._forward(prompt, probe=self.window.resolved.composition.observes("probe"))
        self.frames_ingested += len(chunk.frames)
        self.last_fed = (chunk.frames[0].time_s, chunk.frames[-1].time_s)
        self.video_time_s = max(self.video_time_s, prepared.times[-1])
        if self.watcher is not None and self.watcher.on:
            self._check_watches()

    # ---- questions ------------------------------------------------------------------------------

    def ask(self, question: str, max_new_tokens: int = 64, temperature: float = 0.0,
            viewer: Viewer | None = None) -> Iterator[str]:
        """Answer `question` from what the cache holds now; returns an iterator of text pieces.

        Everything that can be refused is refused by this call, before it returns and before anything
        touches the cache: `QuestionError` for text that is not a question (see `check_question`),
        `ConfigError` for bad generation settings, `BudgetError` for a question that does not fit.
        Generation runs, under `lock`, as the iterator is consumed. The question and the answer stay in
        the cache as text (multi-turn), unless a `viewer` of `fork()` asks: then they are taken back.
        """
        question = check_question(question)
        _check_generation(max_new_tokens, temperature)
        self._check_free()
        with self.lock:
            asked_at = self.conv
            prompt = self._question_prompt(question, max_new_tokens)
        return self._generate(question, prompt, asked_at, max_new_tokens, temperature, viewer)

    def _check_free(self) -> None:
        """BusyError if this thread still reads an answer of this session's lock (see `_check_not_reading`)."""
        _check_not_reading(self.lock)

    def fork(self) -> Viewer:
        """A viewer of this stream with a chat of its own (see `streamer.viewers`)."""
        return Viewer(self)

    def _generate(self, question: str, prompt, asked_at: Conversation, max_new_tokens: int,
                  temperature: float, viewer: Viewer | None) -> Iterator[str]:
        with self.lock, (self._aside() if viewer else contextlib.nullcontext()):
            if viewer is not None:
                viewer.recall()  # its earlier turns, aside like the rest
            if self.conv != asked_at:  # frames (or a viewer's turns) came in between: the opening differs
                prompt = self._question_prompt(question, max_new_tokens)
            else:  # the cache may have grown meanwhile
                self._check_room(prompt.n_tokens + max_new_tokens, "this question and its answer")
            history = viewer.history if viewer is not None else self.history
            ids: list[int] = []
            turn = Turn(question, "", self.video_time_s, ids)
            history.append(turn)
            logits = self._forward(prompt)
            gen = torch.Generator().manual_seed(len(history))
            active = [True]  # False once the answer is over, wherever the iterator was finished
            _reading.set(tuple(e for e in _reading.get() if e[1][0]) + ((self.lock, active),))
            try:
                for _ in range(max_new_tokens):
                    token = self._pick(logits, temperature, gen)
                    if token in self.adapter.eos_token_ids:
                        break
                    ids.append(token)
                    text = self.adapter.decode(ids)
                    piece, turn.answer = text[len(turn.answer):], text
                    if piece:
                        yield piece
                    logits = self._forward_ids([token])
            finally:  # also when the consumer stops early: close the turn so the cache stays well-formed
                active[0] = False
                self._forward(self.adapter.answer_end(self.conv))

    def answer(self, question: str, max_new_tokens: int = 64, temperature: float = 0.0) -> str:
        """`ask`, collected into one string."""
        return "".join(self.ask(question, max_new_tokens, temperature))

    # ---- measurements ----------------------------------------------------------------------------

    def stats(self) -> dict:
        """Cache stats plus what the session has done and what the process costs right now."""
        s = self.cache.stats()
        s.update(
            frames_ingested=self.frames_ingested, video_time_s=self.video_time_s,
            frames_skipped=self.frames_skipped,
            skip_static=self.skipper.cfg.min_area if self.skipper is not None else None,  # None: every frame fed
            ingest_seconds=round(self.ingest_seconds, 3),
            watch_seconds=round(self.watch_seconds, 3),  # part of ingest_seconds: the standing questions
            watches=len(self.watches), peak_kv_bytes=self.peak_kv_bytes,
            rss_bytes=self._process.memory_info().rss, turns=len(self.history), model=self.adapter.name,
        )
        return s

    # ---- internals -------------------------------------------------------------------------------

    def _question_prompt(self, question: str, max_new_tokens: int):
        """The question's prompt where the conversation stands; BudgetError if it does not fit."""
        prompt = self.adapter.question_prompt(question, self.conv)
        budget = self.window.budget
        room = budget - self.window.n_sink - self.window.resolved.recent if budget is not None else None
        if room is not None and prompt.n_tokens > room:
            raise BudgetError(f"the question takes {prompt.n_tokens} tokens but the KV budget of {budget} leaves "
                              f"room for {room}; shorten the question or raise --budget")
        self._check_room(prompt.n_tokens + max_new_tokens, "this question and its answer")
        return prompt

    def _check_room(self, n_tokens: int, what: str) -> None:
        limit = self.cache.max_positions
        if limit and self.cache.next_position() + n_tokens > limit:
            raise BudgetError(f"{what} would pass the model's {limit} positions with the cache at "
                              f"{self.cache.next_position()} tokens; use a bounded policy (--policy combined) "
                              "or a smaller --budget")

    def _forward(self, prompt, probe: bool = False) -> torch.Tensor:
        inputs, modality, times, n_probe = prompt.inputs, prompt.modality, prompt.times, 0
        if probe:  # the proxy queries after the chunk: they score the cache and leave it with the pass
            ids = torch.tensor([self.adapter.proxy_ids()])
            n_probe = ids.shape[1]
            inputs = {**inputs, "input_ids": torch.cat([inputs["input_ids"], ids], dim=1)}
            modality = torch.cat([modality, torch.full((n_probe,), int(Modality.TEXT), dtype=modality.dtype)])
            times = torch.cat([times, torch.full((n_probe,), math.nan, dtype=times.dtype)])
        position_ids = self.cache.tag(modality, times, prompt.mrope, probe=n_probe)  # M-RoPE only, else None
        logits = self._run(inputs if position_ids is None else {**inputs, "position_ids": position_ids})
        self.conv = prompt.after
        return logits

    def _forward_ids(self, ids: list[int]) -> torch.Tensor:
        if self.batcher is not None and len(ids) == 1 and not self.watching:  # a decoding step: batched
            logits = self.batcher.step(self.cache, ids[0])
            self.peak_kv_bytes = max(self.peak_kv_bytes, self.cache.kv_bytes())
            return logits
        position_ids = self.cache.tag(torch.zeros(len(ids)))  # plain text; M-RoPE models need the positions
        inputs = {"input_ids": torch.tensor([ids])}
        return self._run(inputs if position_ids is None else {**inputs, "position_ids": position_ids})

    def _run(self, inputs: dict) -> torch.Tensor:
        return on_model(self.batcher, lambda: self._pass(inputs))

    @torch.no_grad()
    def _pass(self, inputs: dict) -> torch.Tensor:
        model = self.adapter.model
        inputs = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        with self._watch_weights():
            out = model(**inputs, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.cache.compress()  # a no-op with the kv_window attention; keeps the bound with any other
        self.peak_kv_bytes = max(self.peak_kv_bytes, self.cache.kv_bytes())
        return out.logits[0, -1].float()

    @staticmethod
    def _pick(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> int:
        if temperature <= 0:
            return int(logits.argmax())
        # float64 and shifted so the best logit is 0: a tiny temperature gives -inf elsewhere (greedy), not NaN
        probs = torch.softmax((logits.double() - logits.max()) / temperature, dim=-1).cpu()
        return int(torch.multinomial(probs, 1, generator=gen))
