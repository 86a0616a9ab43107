"""Standing questions ("tell me when ..."): yes/no questions answered after every chunk, alerts when one turns yes.

`StreamSession.watch(question)` adds one; after each chunk the session asks every standing question against
the cache as it is then and takes the question back without a trace (`KVWindowCache.checkpoint`/`restore`):
the cache, the chat and later answers are those of a session without it. `Watcher` keeps the questions and
their debounce state: an alert fires when a question's answer turns positive and not again until it has
turned negative (an object that stays on screen is one alert; it fires again after it has left and come
back). Each `Alert` carries the video time of the check (the last frame of the chunk), the question, the
model's answer and its confidence: the probability of a "yes" over "yes" or "no" for the first answer token.

Deliberately not here: the forward passes (`StreamSession`), what "on screen" means to the
built-in model (`world/presence.py`: a frame of the last 4 s).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import torch

from streamer.errors import BudgetError, ConfigError
from streamer.text import check_question

log = logging.getLogger(__name__)

ANSWER_TOKENS = 8  # longest answer text of an alert
MAX_WATCHES = 16  # standing questions per session: each costs a question's forward pass per chunk
MAX_ALERTS = 1000  # alerts a session keeps (the latest); `fired` counts them all
THRESHOLD = 0.5  # confidence at and above which an answer is positive
WINDOW_S = 4.0  # a standing question sees the frames of the last 4 s (one default chunk) and the opening text


@dataclass(frozen=True)
class Alert:
    """A standing question whose answer turned positive at `video_time_s`."""

    question: str
    answer: str
    video_time_s: float
    confidence: float  # probability of the positive answer

    def to_json(self) -> dict:
        return {"alert": self.question, "answer": self.answer, "video_time_s": self.video_time_s,
                "confidence": round(self.confidence, 4)}


def debounce(on: bool, confidence: float, threshold: float = THRESHOLD) -> tuple[bool, bool]:
    """(fires, positive now) for a check of `confidence` after a check that was positive (`on`) or not: an alert
    fires when the answer turns positive, not while it stays so."""
    positive = confidence >= threshold
    return positive and not on, positive


def answer_token_ids(tokenizer, words: tuple[str, ...]) -> list[int]:
    """First token ids of `words` as an answer may start them: with or without a leading space, any case."""
    ids = set()
    for word in words:
        for text in (word, " " + word, word.capitalize(), " " + word.capitalize(), word.upper(), " " + word.upper()):
            found = tokenizer(text, add_special_tokens=False)["input_ids"]
            if found:
                ids.add(found[0])
    return sorted(ids)


class Watcher:
    """A session's standing questions (in the order added), their debounce state and the alerts fired."""

    def __init__(self, tokenizer) -> None:
        self.on: dict[str, bool] = {}  # question -> positive at the last check
        self.last: dict[str, float] = {}  # question -> confidence at the last check
        self.alerts: list[Alert] = []  # the latest MAX_ALERTS alerts fired, oldest first
        self.fired = 0  # alerts fired since the video started
        self.yes_ids = answer_token_ids(tokenizer, ("yes",))
        self.no_ids = answer_token_ids(tokenizer, ("no",))
        if set(self.yes_ids) & set(self.no_ids):
            raise ConfigError("this model's tokenizer starts 'yes' and 'no' with the same token: it cannot watch")

    @property
    def questions(self) -> list[str]:
        return list(self.on)

    def add(self, question: str) -> None:
        if question in self.on:
            return
        if len(self.on) >= MAX_WATCHES:
            raise ConfigError(f"at most {MAX_WATCHES} standing questions per session; remove one first")
        self.on[question] = False

    def remove(self, question: str) -> None:
        if self.on.pop(question, None) is None:
            raise ConfigError(f"not a standing question: {question!r}")
        self.last.pop(question, None)

    def reset(self) -> None:
        """A new video: every question starts negative again, no alerts yet."""
        self.on = dict.fromkeys(self.on, False)
        self.last, self.alerts, self.fired = {}, [], 0

    def fire(self, alert: Alert) -> None:
        self.alerts.append(alert)
        self.fired += 1
        del self.alerts[:-MAX_ALERTS]

    def confidence(self, logits: torch.Tensor) -> float:
        """P(yes) / (P(yes) + P(no)) for the first answer token's `logits` (V,)."""
        probs = torch.softmax(logits.double(), dim=-1)
        yes, no = float(probs[self.yes_ids].sum()), float(probs[self.no_ids].sum())
        return yes / (yes + no) if yes + no > 0 else 0.0

    def update(self, question: str, confidence: float) -> bool:
        """Record a check; True when it fires (positive now, negative at the check before)."""
        self.last[question] = confidence
        fires, self.on[question] = debounce(self.on[question], confidence)
        return fires


class Watching:
    """The standing-question half of `StreamSession`: `_check_watches` runs after each chunk it feeds, under its
    lock. `watch_window_s`: a standing question sees the cached frames of this many seconds up to the last frame
    fed (at least the last chunk's) and the opening text before the first frame, not the chat; None: the whole
    cache."""

    watch_window_s: float | None = WINDOW_S
    watching = False  # True while the standing questions run: their passes take the model's `watch_delta`

    def watch(self, question: str) -> str:
        """Ask the yes/no `question` after every chunk from now on; returns it as kept. Refused like `ask`
        (QuestionError, BudgetError), and past `MAX_WATCHES` (ConfigError)."""
        question = check_question(question)
        self._check_free()
        with self.lock:
            self._question_prompt(question, ANSWER_TOKENS)  # one that cannot fit is refused now
            if self.watcher is None:
                self.watcher = Watcher(self.adapter.tokenizer)
            self.watcher.add(question)
        return question

    def unwatch(self, question: str) -> None:
        """Stop asking `question` (ConfigError if it is not a standing question)."""
        with self.lock:
            if self.watcher is None:
                raise ConfigError(f"not a standing question: {question!r}")
            self.watcher.remove(question.strip())

    @property
    def watches(self) -> list[str]:
        return self.watcher.questions if self.watcher is not None else []

    @property
    def alerts(self) -> list[Alert]:
        """The alerts fired since the video started (the latest `MAX_ALERTS`), oldest first."""
        return list(self.watcher.alerts) if self.watcher is not None else []

    def alerts_since(self, seen: int) -> tuple[list[Alert], int]:
        """(the alerts fired after the first `seen` of this video, still kept; how many fired in all)."""
        if self.watcher is None:
            return [], 0
        new = self.watcher.fired - seen
        return (self.watcher.alerts[-new:] if new > 0 else []), self.watcher.fired

    def _check_watches(self) -> None:
        """Ask every standing question aside (side by side in one pass, or one by one with M-RoPE) and fire
        the alerts whose answers turned positive."""
        start = time.perf_counter()
        with self.watch_passes():
            self._ask_watches()
        self.watch_seconds += time.perf_counter() - start

    @contextlib.contextmanager
    def watch_passes(self):
        """Inside, this session's passes are standing questions': they take the model's `watch_delta` (and
        train/train_watch.py trains it here)."""
        self.watching = True
        try:
            yield
        finally:
            self.watching = False

    def _ask_watches(self) -> None:
        questions = self.watcher.questions
        try:
            prompts = [self._question_prompt(q, ANSWER_TOKENS) for q in questions]
        except BudgetError as err:  # the full cache has reached the model's positions: ingest says so next
            log.warning("standing questions skipped: %s", err)
            return
        since = self._watch_since()
        if self.cache.mrope:  # positions of M-RoPE models are laid out per prompt: one pass each
            firsts = []
            for prompt in prompts:
                with self._aside_window(since):
                    firsts.append(self._forward(prompt))
        else:
            firsts = self._side_by_side(prompts, since)
        for question, prompt, logits in zip(questions, prompts, firsts):
            confidence = self.watcher.confidence(logits)
            if self.watcher.update(question, confidence):
                with self._aside_window(since):  # the answer's words: greedy, from a pass of this question alone
                    answer = self.adapter.decode(self._greedy(self._forward(prompt), ANSWER_TOKENS)).strip()
                self.watcher.fire(Alert(question, answer, self.video_time_s, confidence))

    def _watch_weights(self):
        """The model's standing-question weights inside, while the standing questions run (else nothing)."""
        delta = self.adapter.watch_delta
        return delta.on() if delta is not None and self.watching else contextlib.nullcontext()

    def _watch_since(self) -> float | None:
        """The video time after which a standing question sees the cached frames (None: all of them)."""
        if self.watch_window_s is None:
            return None
        first, last = self.last_fed
        return min(last - self.watch_window_s, first - 1e-3)

    def _side_by_side(self, prompts: list, since: float | None, grad: bool = False) -> list[torch.Tensor]:
        """The first answer token's logits (V,) of each question prompt, all in one pass over the cache (the
        model's weights are read once: a pass of a few tokens costs about what its weights take to read).
        `grad`: with gradient, for training the model's `watch_delta` (train/train_watch.py)."""
        from streamer.batching import on_model  # here: the CLI imports this module before the model libraries

        lengths = [p.n_tokens for p in prompts]
        first = self.cache.next_position()
        positions = torch.cat([torch.arange(first, first + n) for n in lengths])[None]
        ends = torch.tensor(lengths).cumsum(0) - 1
        model = self.adapter.model
        with self._aside_window(since, lengths), torch.set_grad_enabled(grad):
            self.cache.tag(torch.cat([p.modality for p in prompts]), torch.cat([p.times for p in prompts]))
            out = on_model(self.batcher, lambda: self._watch_pass(model, prompts, positions, ends))
        return list(out.logits[0].float())

    def _watch_pass(self, model, prompts: list, positions: torch.Tensor, ends: torch.Tensor):
        with self._watch_weights():
            return model(input_ids=torch.cat([p.inputs["input_ids"] for p in prompts], dim=1),
                         position_ids=positions.to(model.device), past_key_values=self.cache, use_cache=True,
                         logits_to_keep=ends.to(model.device))

    @contextlib.contextmanager
    def _aside_window(self, since: float | None, lengths: list[int] | None = None):
        """Passes of standing questions: taken back afterwards (`_aside`), seeing the window after `since`
        (`KVWindowCache.asking_aside`)."""
        with self._aside(), self.cache.asking_aside(lengths, since):
            yield

    @contextlib.contextmanager
    def _aside(self):
        """Whatever runs inside leaves no trace: the cache and the conversation are put back afterwards."""
        checkpoint, conv = self.cache.checkpoint(), self.conv
        try:
            yield
        finally:
            self.cache.restore(checkpoint)
            self.conv = conv

    def _greedy(self, logits: torch.Tensor, max_new_tokens: int) -> list[int]:
        ids: list[int] = []
        for _ in range(max_new_tokens):
            token = int(logits.argmax())
            if token in self.adapter.eos_token_ids:
                break
            ids.append(token)
            logits = self._forward_ids([token])
        return ids
