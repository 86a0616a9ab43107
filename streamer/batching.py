"""Decoding steps of sessions that share one model, run together: `Batcher`.

Sessions that answer at the same time each wait on their next token; a `Batcher` (one per model) collects
the steps that arrive together and runs them as one forward pass (`streamer.kv_batch.batched_pass`): the
model's weights are read once per step for all of them, each row against its own cache, exactly as that
session alone would (to float32 rounding). A session given a batcher has its own lock instead of the
model's: its chunks and question prompts run in its own thread, its decoding steps go through here.

One worker thread per batcher; a step waits at most `gather_s` for others to join once one is pending,
and a batch holds at most `max_batch` rows.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future

import torch

from streamer.errors import ConfigError, check_number
from streamer.kv_batch import batched_pass
from streamer.rope import is_mrope

log = logging.getLogger(__name__)


class Batcher:
    """`step(cache, token)` -> the next-token logits (V,) of that cache's session, batched with whatever
    other steps are waiting."""

    def __init__(self, model, max_batch: int = 16, gather_s: float = 0.002):
        check_number("max_batch", max_batch, 1, integer=True)
        check_number("gather_s", gather_s, 0, 1)
        if is_mrope(model.config):
            raise ConfigError("batched decoding needs a model with 1-D RoPE positions (not M-RoPE)")
        self.model, self.max_batch, self.gather_s = model, max_batch, gather_s
        self.batches = self.rows = 0  # passes run, steps served (rows / batches: the mean batch)
        self._pending: queue.Queue = queue.Queue()
        threading.Thread(target=self._work, name="batcher", daemon=True).start()

    def step(self, cache, token: int) -> torch.Tensor:
        done: Future = Future()
        self._pending.put((cache, token, done))
        return done.result()

    def _work(self) -> None:
        while True:
            batch = [self._pending.get()]
            deadline = time.perf_counter() + self.gather_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._pending.get(timeout=max(0.0, deadline - time.perf_counter())))
                except queue.Empty:
                    break
            self._run(batch)
            del batch  # a session that is dropped must not stay alive here until the next step

    def _run(self, batch: list) -> None:
        try:
            logits = batched_pass(self.model, [c for c, _, _ in batch], torch.tensor([[t] for _, t, _ in batch]))
        except BaseException as err:  # noqa: BLE001 (each waiting session gets it)
            for _, _, done in batch:
                done.set_exception(err)
            return
        self.batches += 1
        self.rows += len(batch)
        for (_, _, done), row in zip(batch, logits):
            done.set_result(row)
