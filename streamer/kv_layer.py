"""One layer of the bounded KV cache: keys/values plus per-token, per-head bookkeeping, and the cut.

How one append goes. `update()` appends the new chunk's keys/values with their tags (modality, video
time, stream position) and returns the whole layer, so a forward pass attends to at most
`budget + len(chunk)` tokens. `observe()` (called by the `kv_window` attention, `kv_attention.py`)
hands this pass's attention to the composition's scorers that observe (`kv_scorers/`: each keeps one
accumulator column of `acc`) and compresses back to `budget` right away; `priority()` combines every
scorer's score with the composition's parts (pooling, text prior, redundancy, sinks and recent window).
Proxy-query tokens at the end of a pass (`probe`) score the cache and leave it before the cut.
`compress()` gathers the survivors, merges the evicted into them, and re-rotates the kept keys to
contiguous positions 0..budget-1, so the layer looks like an ordinary cache of `get_seq_length()` tokens.
Once a layer has been cut, its keys and values are the first slots of a store with room up to its budget
(`_append`), so a decoding step writes one token instead of copying the whole layer the way a
concatenation does; the step that goes over the budget concatenates and cuts.
The gather, merge and re-rotation run on one of two backends chosen once per layer (`kv_cut.py`): compiled
loops for float32 CPU caches (`kv_kernels.py`), tensor operations otherwise (and with `compiled=False`),
with the same result.
With `max_gap` > 0 (1-D RoPE) kept keys stay where they are until the positions left empty by evicted
tokens add up to more than `max_gap`; until then the layer's positions run ahead of the model's by its
`shift`, which moves the new keys here and the queries in the `kv_window` attention.

Eviction is per KV head (`evict_per="head"`, default): every head keeps the same number of tokens, but
each keeps the tokens its own queries attend to. Heads specialise (some track recent text, some the
visual detail), and a per-layer choice forces one compromise on all of them at the same memory. The cost
is bookkeeping per head (tags are (B, H, T)); `evict_per="layer"` sums scores over heads and keeps the
same tokens in every head. `bench/bench_kv.py` measures both.

With adaptive layer budgets (AirCache) layers hold different lengths: each layer moves its new keys by
its own `shift` so that every layer sees one contiguous stream (the attention turns the queries too).

Deliberately not here: which tokens are important (`kv_scoring.py`), how evicted pairs are folded in
(`kv_merge.py`), RoPE math (`rope.py`), the split of budgets across layers and the model-facing
`Cache` (`kv_window.py`), the attention function (`kv_attention.py`). Batch size is whatever the model
sends, but tags are shared by the batch rows.
"""

import math
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicLayer

from streamer.kv_config import Window
from streamer.kv_cut import choose, take
from streamer.kv_kernels import TurnTable
from streamer.kv_scorers import combine_scoped
from streamer.kv_scoring import (attention_probs, attention_spread, elite_attention, frame_redundancy, keep_priority,
                                 observed_attention)
from streamer.rope import gap_deltas, mrope_gap_deltas, rotate
from streamer.shared_types import Modality


def _append(held: torch.Tensor, new: torch.Tensor, store: torch.Tensor | None, spare: int
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`held` (B, H, T, D) with `new` (B, H, C, D) appended, and the store it is a view of (or None).

    When `held` is the start of `store` (B, H, S, D) and S >= T + C, `new` is written into the free slots
    (a decoding step then copies one token, not the layer); otherwise into a fresh store with `spare` free
    slots after it (none: a plain concatenation). Slots a returned view covers are never written again."""
    t, n = held.shape[2], held.shape[2] + new.shape[2]
    if store is None or store.shape[2] < n or store.data_ptr() != held.data_ptr():
        if not spare:
            return torch.cat([held, new], dim=2), None
        store = held.new_empty(*held.shape[:2], n + spare, *held.shape[3:])
        store[:, :, :t] = held
    store[:, :, t:n] = new
    return store[:, :, :n], store


@dataclass
class _Tags:
    """Facts about the tokens of the next append, shared by all layers."""

    modality: torch.Tensor  # (T,) int8 Modality
    times: torch.Tensor  # (T,) float32 video seconds, NaN for text
    anchor: torch.Tensor | None = None  # (T,) int64 M-RoPE only: start position of each token's block
    advance: torch.Tensor | None = None  # (T,) int64 M-RoPE only: positions that block takes
    explicit: bool = True  # set by the caller (a chunk); False: filled in for an untagged pass (decoding)
    probe: int = 0  # the last `probe` tokens are proxy queries: they score the cache, then leave it


class KVWindowLayer(DynamicLayer):
    """One layer's bounded cache: keys/values (B, H, T, D) plus per-token, per-head bookkeeping."""

    def __init__(self, cfg: Window, inv_freq: torch.Tensor, layer_idx: int, mrope: bool = False,
                 max_gap: int | None = None, turns: TurnTable | None = None):
        super().__init__()
        self.cfg, self.inv_freq, self.layer_idx = cfg, inv_freq, layer_idx
        self.comp = cfg.composition
        self.mrope = mrope  # 3-D positions: blocks move as wholes (rope.mrope_gap_deltas), `end` is tracked
        self.max_gap = cfg.max_gap if max_gap is None else max_gap  # 1-D: empty positions a cut may leave
        self.end = 0  # the position after this layer's last token (M-RoPE: last block; the most over heads)
        self.n_seen = self.n_evicted = self.n_merged = 0
        self.budget = cfg.budget  # this layer's budget: cfg.budget, or its adaptive share
        self.spread: float | None = None  # running estimate of attention_spread (adaptive budgets)
        self.shift = 0  # this layer's positions minus the model's for the current pass (adaptive budgets)
        self.decoding = False  # the latest append was one untagged token (a decoding step)
        self.probe = 0  # proxy-query tokens at the end of the latest append, still held until observed
        self.turns = turns
        # the scorers that accumulate attention, each with its slot of `acc`
        self.observing = [s for s in self.comp.scorers if s.observes]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        b, h, dev = key_states.shape[0], key_states.shape[1], key_states.device
        self.keys = key_states.new_zeros((b, h, 0, key_states.shape[-1]))
        self.values = value_states.new_zeros((b, h, 0, value_states.shape[-1]))
        self.acc = torch.zeros((b, h, 0, len(self.observing)), device=dev)  # (B, H, T, S) attention per scorer
        self.weight = torch.zeros((b, h, 0), device=dev)  # (B, H, T) original tokens each one stands for
        self.modality = torch.zeros((b, h, 0), dtype=torch.int8, device=dev)  # (B, H, T)
        self.times = torch.zeros((b, h, 0), device=dev)  # (B, H, T) video seconds, NaN = none
        self.position = torch.zeros((b, h, 0), dtype=torch.int64, device=dev)  # (B, H, T) stream position
        self.rotary = torch.zeros((b, h, 0), dtype=torch.int64, device=dev)  # (B, H, T) 1-D: position its key is at
        self.anchor = torch.zeros((b, h, 0), dtype=torch.int64, device=dev)  # (B, H, T) M-RoPE block start
        self.advance = torch.zeros((b, h, 0), dtype=torch.int64, device=dev)  # (B, H, T) M-RoPE block size
        self.similar = torch.zeros((b, h, 0), device=dev)  # (B, H, T) cosine with the same place one frame back
        self.last_frame = None  # (B, H, P, D) image-token values of the last frame appended (redundancy)
        self._key_store = self._value_store = None  # (B, H, S, D): keys/values are their first T slots (_append)
        self.cut = choose(self.cfg, key_states, self.inv_freq, self.turns)  # the cut backend, chosen once

    def update(self, key_states, value_states, *args, tags: _Tags | None = None, model_position: int = 0,
               **kwargs):
        """Append a chunk. `model_position` is where the model placed it; a layer holding a different
        number of tokens (adaptive budgets) moves it to its own next position, and `window_attention`
        turns the queries by the same `shift`, so every layer sees a contiguous stream."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.compress()  # only does work if nothing cut the last pass (or the adaptive split lowered the budget)
        b, h, c = key_states.shape[:3]
        self.shift = 0 if self.mrope else self.end - model_position  # M-RoPE: gaps are allowed
        self.decoding = c == 1 and (tags is None or not tags.explicit)
        if self.shift:
            key_states = rotate(key_states, self.shift, self.inv_freq)
        dev = key_states.device
        if tags is None or tags.modality.shape[0] != c:
            tags = _Tags(torch.full((c,), Modality.TEXT, dtype=torch.int8), torch.full((c,), math.nan))
        self.probe = min(tags.probe, c)

        def grow(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            return torch.cat([old, new.to(dev, old.dtype).expand(b, h, c)], dim=-1)

        spare = self._spare(self.get_seq_length() + c)
        self.keys, self._key_store = _append(self.keys, key_states, self._key_store, spare)
        self.values, self._value_store = _append(self.values, value_states, self._value_store, spare)
        self.acc = torch.cat([self.acc, self.acc.new_zeros(b, h, c, self.acc.shape[-1])], dim=2)
        self.weight = grow(self.weight, torch.ones(c))
        self.modality = grow(self.modality, tags.modality)
        self.times = grow(self.times, tags.times)
        if self.cfg.redundancy is not None:
            similar, self.last_frame = frame_redundancy(value_states, tags.times, tags.modality == Modality.IMAGE,
                                                        self.last_frame)
            self.similar = torch.cat([self.similar, similar.to(dev)], dim=-1)
        self.position = grow(self.position, torch.arange(self.n_seen, self.n_seen + c))
        if self.mrope:
            self.anchor, self.advance = grow(self.anchor, tags.anchor), grow(self.advance, tags.advance)
            self.end = max(self.end, int(tags.anchor[-1] + tags.advance[-1]))
        else:
            self.rotary = grow(self.rotary, torch.arange(self.end, self.end + c))
            self.end += c
        self.n_seen += c
        return self.keys, self.values

    def _spare(self, n: int) -> int:
        """Free slots to leave after `n` tokens when the key/value store must grow: a layer that has been cut
        keeps room up to its budget, so decoding appends in place until the step that goes over it (which
        concatenates, then cuts); never more slots than the budget."""
        return max(0, self.budget - n) if self.n_evicted and self.comp.evicts else 0

    @property
    def wants_attention(self) -> bool:
        """Whether `observe` needs this pass's attention (a scorer observes, or adaptive budgets measure spread)."""
        return bool(self.observing) or self.cfg.layer_budget == "adaptive"

    def observe(self, query: torch.Tensor, scaling: float, probs: torch.Tensor | None = None) -> None:
        """Add this pass's attention to the scorers' accumulators and the spread estimate, then compress.

        query: (B, Hq, Q, D), already moved to this layer's positions; probs: (B, H, G, W, T) the observation
        window's attention if the caller has it already (the `kv_window` attention computes those rows)."""
        cfg, comp = self.cfg, self.comp
        if not self.wants_attention:
            return self.compress()
        q_len, probe = query.shape[2], self.probe
        held = self.keys.shape[2] - probe  # the tokens the probe scores (not itself)
        if probe and comp.observes("probe"):
            rows = torch.arange(q_len - probe, q_len)
            probe_probs = attention_probs(query, self.keys, scaling, rows)[..., :held]
            self._accumulate("probe", probe_probs)
        if comp.observes("chunk") or cfg.layer_budget == "adaptive":
            if probs is None:
                chunk = query[:, :, : q_len - probe]
                if cfg.obs_select == "elite":
                    is_text = self._is_text()[0, 0, :held]  # (T,) tags are shared by batch rows and heads
                    probs = elite_attention(chunk, self.keys[:, :, :held], scaling, cfg.obs_window,
                                            is_text[-chunk.shape[2]:], ~is_text)
                else:
                    probs = observed_attention(chunk, self.keys[:, :, :held], scaling, cfg.obs_window)
            self._accumulate("chunk", probs)
            if cfg.layer_budget == "adaptive":
                now = attention_spread(probs.sum(dim=(2, 3)))
                m = cfg.spread_momentum
                self.spread = now if self.spread is None else m * self.spread + (1 - m) * now
        self.compress()

    def _accumulate(self, queries: str, probs: torch.Tensor) -> None:
        """Each scorer that observes `queries` folds probs (B, H, G, W, T') into its slot (the first T' tokens)."""
        held = probs.shape[-1]
        for i, s in enumerate(self.observing):
            if s.observes == queries:
                self.acc[:, :, :held, i] = s.observe(self.acc[:, :, :held, i], probs)

    def _is_text(self) -> torch.Tensor:
        """(B, H, T) bool: conversation text, as opposed to frame tokens (image, boundary, timestamp)."""
        return (self.modality == Modality.TEXT) & self.times.isnan()

    def _drop_probe(self) -> None:
        """Take the proxy-query tokens at the end back out: the layer is as before they were appended."""
        n, t = self.probe, self.get_seq_length()
        self.probe = 0
        keep = t - n
        self.keys, self.values = self.keys[:, :, :keep], self.values[:, :, :keep]
        self.acc = self.acc[:, :, :keep]
        for name in ("weight", "modality", "times", "position", "rotary", "anchor", "advance", "similar"):
            x = getattr(self, name)
            if x.shape[-1] >= t:
                setattr(self, name, x[..., :keep])
        self.n_seen -= n
        if self.mrope:
            self.end = int((self.anchor[..., -1] + self.advance[..., -1]).max()) if keep else 0
        else:
            self.end -= n

    def priority(self) -> torch.Tensor:
        """(B, H, T) keep priority of every held token: the scorers' combined score, pooled, under the text
        prior and the redundancy signal, sinks and the recent window at +inf (`kv_scoring.keep_priority`)."""
        cfg, comp = self.cfg, self.comp
        acc = iter(self.acc.unbind(-1))
        is_text = self._is_text()  # (B, H, T): heads keep different tokens
        score = combine_scoped(comp.scorers, [s.score(self, next(acc) if s.observes else None) for s in comp.scorers],
                               is_text, comp.union)
        if comp.pool > 1:  # each text token: the best score of the text tokens around it
            pooled = torch.nn.functional.max_pool1d(score.float().masked_fill(~is_text, float("-inf")).flatten(0, 1),
                                                    comp.pool, 1, comp.pool // 2).view_as(score)
            score = torch.where(is_text, pooled, score)
        redundant = ~self.times.isnan() & (self.similar >= cfg.redundancy) if cfg.redundancy is not None else None
        prio = keep_priority(score, is_text, cfg.n_sink, cfg.recent, comp.text_prior, redundant)
        if cfg.evict_per == "layer":
            prio = prio.sum(dim=1, keepdim=True).expand_as(prio)  # (B, H, T): same choice for all heads
        return prio

    def compress(self) -> None:
        """Cut this layer back to its budget: keep, merge, re-rotate, update the bookkeeping.

        Proxy-query tokens still held leave first. A decoding step cuts `decode_slack` tokens deeper, a chunk
        `chunk_slack`, so the next appends fit without a compression each: with decode_slack 32, one
        compression per 32 generated tokens."""
        if self.probe:
            self._drop_probe()
        t = self.get_seq_length()
        cfg, comp = self.cfg, self.comp
        if not comp.evicts or t <= self.budget:
            return
        keep_n = self.budget - (cfg.decode_slack if self.decoding else cfg.chunk_slack)
        prio = self.priority()
        # the E lowest priorities leave (a top-E of T is cheaper than a top-K and a sort of the K kept)
        evict = prio.topk(t - keep_n, dim=-1, largest=False, sorted=False).indices.sort(dim=-1).values  # (B, H, E)
        keep, tags = self.cut.keep(evict, t, (self.modality, self.times, self.position, self.similar, self.rotary))
        self.modality, self.times, self.position, self.similar, self.rotary = tags
        self.acc = take(self.acc, keep) if self.observing else self.acc[:, :, :keep_n]
        if comp.decay:
            self.acc = self.acc * cfg.score_decay

        delta = None  # (B, H, K) <= 0: where each kept key moves
        if self.mrope:  # close the gaps left by whole evicted blocks
            delta, self.anchor = mrope_gap_deltas(take(self.anchor, keep), take(self.advance, keep))
            self.advance = take(self.advance, keep)
            self.end = int((self.anchor[..., -1] + self.advance[..., -1]).max())
        elif self.end - keep_n > self.max_gap:  # the empty positions add up to too many: close the gaps
            delta = gap_deltas(self.rotary)  # self.rotary: (B, H, K) where the kept keys are rotated now
            self.rotary, self.end = torch.arange(keep_n, device=keep.device).expand_as(keep), keep_n
        self.keys, self.values, self.weight = self.cut.kv(self.keys, self.values, self.weight, keep, evict, delta, cfg)
        self._key_store = self._value_store = None  # the next append starts a store with room
        self.n_evicted += t - keep_n
        if cfg.merge != "none":
            self.n_merged += t - keep_n

    def reset(self) -> None:
        super().reset()
        self._key_store = self._value_store = None
        self.n_seen = self.n_evicted = self.n_merged = self.shift = self.end = self.probe = 0
        self.decoding = False
        self.budget, self.spread = self.cfg.budget, None
        self.last_frame = None

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("KVWindowCache does not support cropping (assisted decoding)")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError("KVWindowCache does not support beam search")
