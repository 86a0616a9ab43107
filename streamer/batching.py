"""Decoding steps of sessions that share one model, run together: `Batcher`.

Sessions that answer at the same time each wait on their next token; a `Batcher` (one per model) collects
the steps that arrive together and runs them as one forward pass (`streamer.kv_batch.batched_pass`): the
model's weights are read once per step for all of them, each row against its own cache, exactly as that
session alone would (to float32 rounding). A session given a batcher has its own lock instead of the
model's; its own passes (chunks, question prompts) also run on the batcher's worker (`call`), before the
steps that wait with them, so the model runs one pass at a time with every core.

One worker thread per batcher while steps come (it ends after `IDLE_S` without one); a step waits at most
`gather_s` for others to join once one is pending, and a batch holds at most `max_batch` rows.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import torch

from streamer.errors import ConfigError, check_number
from streamer.kv_batch import batched_pass
from streamer.rope import is_mrope

IDLE_S = 30.0  # a worker with no step for this long ends (the next step starts another)


def on_model(batcher: Batcher | None, fn: Callable[[], Any]) -> Any:
    """`fn()`, a pass of the model: on `batcher`'s worker (one pass at a time) if there is one, else here."""
    return fn() if batcher is None else batcher.call(fn)


class Batcher:
    """`step(cache, token)` -> the next-token logits (V,) of that cache's session, batched with whatever
    other steps are waiting; `call(fn)` runs a session's own pass on the same worker."""

    def __init__(self, model, max_batch: int = 16, gather_s: float = 0.002):
        check_number("max_batch", max_batch, 1, integer=True)
        check_number("gather_s", gather_s, 0, 1)
        if is_mrope(model.config):
            raise ConfigError("batched decoding needs a model with 1-D RoPE positions (not M-RoPE)")
        self.model, self.max_batch, self.gather_s = model, max_batch, gather_s
        self.batches = self.rows = 0  # passes run, steps served (rows / batches: the mean batch)
        self._pending: queue.Queue = queue.Queue()
        self._guard = threading.Lock()
        self._worker: threading.Thread | None = None  # started by the first step, ends after IDLE_S without one

    def step(self, cache, token: int) -> torch.Tensor:
        return self._submit(cache, token)

    def call(self, fn: Callable[[], Any]) -> Any:
        """`fn()` (a session's own pass: a question's prompt, a chunk) on the worker, between batches: the model
        runs one pass at a time with every core instead of several passes fighting over them."""
        return self._submit(None, fn)

    def _submit(self, cache, what) -> Any:
        done: Future = Future()
        if threading.current_thread() is self._worker:  # from a pass on the worker itself: served at once
            self._serve([(cache, what, done)])
            return done.result()
        with self._guard:
            self._pending.put((cache, what, done))
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="batcher", daemon=True)
                self._worker.start()
        return done.result()

    def _work(self) -> None:
        while True:
            try:
                batch = [self._pending.get(timeout=IDLE_S)]
            except queue.Empty:
                with self._guard:  # a step queued meanwhile would find no worker: look again under the guard
                    if self._pending.empty():
                        self._worker = None
                        return
                continue
            deadline = time.perf_counter() + self.gather_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._pending.get(timeout=max(0.0, deadline - time.perf_counter())))
                except queue.Empty:
                    break
            self._serve(batch)
            del batch  # a session that is dropped must not stay alive here until the next step

    def _serve(self, batch: list) -> None:
        for _, fn, done in (item for item in batch if item[0] is None):  # passes of their own first, in order
            try:
                with torch.no_grad():
                    done.set_result(fn())
            except BaseException as err:  # noqa: BLE001 (the caller gets it)
                done.set_exception(err)
        steps = [item for item in batch if item[0] is not None]
        if steps:
            self._run(steps)

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
