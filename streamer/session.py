"""One conversation over one video stream: a model adapter plus its bounded KV cache.

`StreamSession` feeds chunks of frames into the cache (`ingest`), answers questions token by token
from whatever the cache holds (`ask`), and keeps going: earlier questions and answers stay in the cache
as text, and frames can keep arriving after a question. `stats()` reports what the cache holds and what
the process costs, measured (KV bytes of the stored tensors, process RSS), not estimated.

Threads: every model call runs under `lock`. Sessions that share one model (the web UI) share one lock,
so two users never interleave their forward passes; an answer holds the lock until it is complete, so
frames arriving meanwhile wait instead of splitting the answer.

Not here: reading video (`frames.py`), prompt formats (`models/`), cache policy (`kv_window.py`).
"""

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import torch

from streamer.errors import BudgetError
from streamer.frames import Chunk
from streamer.vocab import Conversation
from streamer.kv_window import KVWindowCache, WindowConfig, use_window_attention

log = logging.getLogger(__name__)


@dataclass
class Turn:
    """One question and its answer, with the video time it was asked at."""

    question: str
    answer: str
    video_time_s: float


class StreamSession:
    """Feeds a stream into a model under a fixed KV budget and answers questions about it."""

    def __init__(self, adapter, window: WindowConfig | None = None, lock=None):
        self.adapter = adapter
        self.window = window or WindowConfig()
        # a plain Lock, shared by sessions of one model: an answer's generator may resume in another thread
        self.lock = lock or threading.Lock()
        use_window_attention(adapter.model)
        self.cache = KVWindowCache(adapter.model.config, self.window)
        self._process = psutil.Process()
        self.reset()

    # ---- conversation ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the video and the chat: empty cache, counters at zero."""
        with self.lock:
            self.cache.reset()
            self.conv = Conversation()  # where the chat stands; moves only when a prompt is fed
            self.history: list[Turn] = []
            self.frames_ingested = 0
            self.video_time_s = 0.0
            self.ingest_seconds = 0.0
            self.peak_kv_bytes = 0

    def ingest(self, chunk: Chunk) -> None:
        """Append one chunk of frames to the cache (compressing it back to the budget)."""
        if not chunk.frames:
            return
        with self.lock:
            start = time.perf_counter()
            prompt = self.adapter.chunk_prompt(chunk, self.conv)
            self._check_room(prompt.n_tokens, "this chunk of frames")
            self._forward(prompt)
            self.frames_ingested += len(chunk.frames)
            self.video_time_s = max(self.video_time_s, chunk.frames[-1].time_s)
            self.ingest_seconds += time.perf_counter() - start

    def ask(self, question: str, max_new_tokens: int = 64, temperature: float = 0.0) -> Iterator[str]:
        """Answer `question` from what the cache holds now; yields text pieces as they are generated.

        The question and the answer stay in the cache as text (multi-turn). A question that does not
        fit the budget raises `BudgetError` before anything touches the cache.
        """
        question = question.strip()
        if not question:
            raise BudgetError("the question is empty; type a question")
        if max_new_tokens < 1:
            raise BudgetError("max_new_tokens must be at least 1")
        with self.lock:
            prompt = self.adapter.question_prompt(question, self.conv)
            self._check_question(prompt.n_tokens, max_new_tokens)
            self._check_room(prompt.n_tokens + max_new_tokens, "this question and its answer")
            turn = Turn(question, "", self.video_time_s)
            self.history.append(turn)
            logits = self._forward(prompt)
            ids: list[int] = []
            gen = torch.Generator().manual_seed(len(self.history))
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
                self._forward(self.adapter.answer_end(self.conv))

    def answer(self, question: str, max_new_tokens: int = 64, temperature: float = 0.0) -> str:
        """`ask`, collected into one string."""
        return "".join(self.ask(question, max_new_tokens, temperature))

    # ---- measurements ----------------------------------------------------------------------------

    def stats(self) -> dict:
        """Cache stats plus what the session has done and what the process costs right now."""
        s = self.cache.stats()
        s.update(
            frames_ingested=self.frames_ingested,
            video_time_s=self.video_time_s,
            ingest_seconds=round(self.ingest_seconds, 3),
            peak_kv_bytes=self.peak_kv_bytes,
            rss_bytes=self._process.memory_info().rss,
            turns=len(self.history),
            model=self.adapter.name,
        )
        return s

    # ---- internals -------------------------------------------------------------------------------

    def _check_question(self, n_tokens: int, max_new_tokens: int) -> None:
        budget = self.window.budget
        if budget is None:
            return
        room = budget - self.window.n_sink - self.window.recent
        if n_tokens > room:
            raise BudgetError(
                f"the question takes {n_tokens} tokens but the KV budget of {budget} leaves room for {room}; "
                "shorten the question or raise --budget"
            )

    def _check_room(self, n_tokens: int, what: str) -> None:
        limit = self.cache.max_positions
        if limit and self.cache.next_position() + n_tokens > limit:
            raise BudgetError(
                f"{what} would pass the model's {limit} positions with the cache at "
                f"{self.cache.next_position()} tokens; use a bounded policy (--policy combined) or a "
                "smaller --budget"
            )

    def _forward(self, prompt) -> torch.Tensor:
        position_ids = self.cache.tag(prompt.modality, prompt.times, prompt.mrope)  # M-RoPE only, else None
        logits = self._run(prompt.inputs if position_ids is None else {**prompt.inputs, "position_ids": position_ids})
        self.conv = prompt.after
        return logits

    def _forward_ids(self, ids: list[int]) -> torch.Tensor:
        position_ids = self.cache.tag(torch.zeros(len(ids)))  # plain text; M-RoPE models need the positions
        inputs = {"input_ids": torch.tensor([ids])}
        return self._run(inputs if position_ids is None else {**inputs, "position_ids": position_ids})

    @torch.no_grad()
    def _run(self, inputs: dict) -> torch.Tensor:
        model = self.adapter.model
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        out = model(**inputs, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.cache.compress()  # a no-op with the kv_window attention; keeps the bound with any other
        self.peak_kv_bytes = max(self.peak_kv_bytes, self.cache.kv_bytes())
        return out.logits[0, -1].float()

    @staticmethod
    def _pick(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> int:
        if temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits / temperature, dim=-1).cpu()
        return int(torch.multinomial(probs, 1, generator=gen))
