"""One layer of the bounded KV cache: keys/values plus per-token, per-head bookkeeping, and the cut.

How one append goes. `update()` appends the new chunk's keys/values with their tags (modality, video
time, stream position) and returns the whole layer, so a forward pass attends to at most
`budget + len(chunk)` tokens. `observe()` (called by the `kv_window` attention, `kv_attention.py`)
scores the cached tokens with this pass's queries and compresses back to `budget` right away.
`compress()` gathers the survivors, merges the evicted into them, and re-rotates the kept keys to
contiguous positions 0..budget-1, so the layer looks like an ordinary cache of `get_seq_length()` tokens.
Once a layer has been cut, its keys and values are the first slots of a store with room up to its budget
(`_append`), so a decoding step writes one token instead of copying the whole layer the way a
concatenation does; the step that goes over the budget concatenates and cuts.
For float32 keys on the CPU the priorities, the kept tokens' tags and those three steps on keys and values
are compiled loops (`kv_kernels.py`); otherwise (and with `compiled=False`) they are the tensor functions of
`kv_scoring.py`, `kv_merge.py` and `rope.py`, with the same result.
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

from streamer.kv_config import WindowConfig
from streamer.kv_kernels import TurnTable, cut_kv, keep_rows, priority
from streamer.kv_merge import flat_rows, merge_into_kept
from streamer.kv_scoring import attention_spread, elite_attention, frame_redundancy, keep_priority, observed_attention
from streamer.rope import gap_deltas, mrope_gap_deltas, rotate
from streamer.vocab import Modality


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


class KVWindowLayer(DynamicLayer):
    """One layer's bounded cache: keys/values (B, H, T, D) plus per-token, per-head bookkeeping."""

    def __init__(self, cfg: WindowConfig, inv_freq: torch.Tensor, layer_idx: int, mrope: bool = False,
                 max_gap: int | None = None, turns: TurnTable | None = None):
        super().__init__()
        self.cfg, self.inv_freq, self.layer_idx = cfg, inv_freq, layer_idx
        self.mrope = mrope  # 3-D positions: blocks move as wholes (rope.mrope_gap_deltas), `end` is tracked
        self.max_gap = cfg.max_gap if max_gap is None else max_gap  # 1-D: empty positions a cut may leave
        self.end = 0  # the position after this layer's last token (M-RoPE: last block; the most over heads)
        self.n_seen = self.n_evicted = self.n_merged = 0
        self.budget = cfg.budget  # this layer's budget: cfg.budget, or its adaptive share
        self.spread: float | None = None  # running estimate of attention_spread (adaptive budgets)
        self.shift = 0  # this layer's positions minus the model's for the current pass (adaptive budgets)
        self.last_append = 0  # tokens in the latest append: 1 while decoding
        self.turns = turns or TurnTable(inv_freq)  # cos | sin of deltas 0, -1, ... for the compiled cut

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        b, h, dev = key_states.shape[0], key_states.shape[1], key_states.device
        self.keys = key_states.new_zeros((b, h, 0, key_states.shape[-1]))
        self.values = value_states.new_zeros((b, h, 0, value_states.shape[-1]))
        self.score = torch.zeros((b, h, 0), device=dev)  # (B, H, T) accumulated attention
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
        self.last_append = c
        if self.shift:
            key_states = rotate(key_states, self.shift, self.inv_freq)
        dev = key_states.device
        if tags is None or tags.modality.shape[0] != c:
            tags = _Tags(torch.full((c,), Modality.TEXT, dtype=torch.int8), torch.full((c,), math.nan))

        def grow(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            return torch.cat([old, new.to(dev, old.dtype).expand(b, h, c)], dim=-1)

        spare = self._spare(self.get_seq_length() + c)
        self.keys, self._key_store = _append(self.keys, key_states, self._key_store, spare)
        self.values, self._value_store = _append(self.values, value_states, self._value_store, spare)
        self.score = grow(self.score, torch.zeros(c))
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
        return max(0, self.budget - n) if self.n_evicted and self.cfg.rules.evicts else 0

    def observe(self, query: torch.Tensor, scaling: float, seen: torch.Tensor | None = None) -> None:
        """Add this pass's attention to the scores and the spread estimate, then compress.

        query: (B, Hq, Q, D), already moved to this layer's positions; seen: (B, H, T) the observation
        window's attention if the caller has it already (the `kv_window` attention computes those rows)."""
        cfg = self.cfg
        if not (cfg.rules.scored or cfg.layer_budget == "adaptive"):
            return self.compress()
        if seen is None and cfg.obs_select == "elite":
            is_text = self._is_text()[0, 0]  # (T,) tags are shared by batch rows and heads
            seen = elite_attention(query, self.keys, scaling, cfg.obs_window, is_text[-query.shape[2]:], ~is_text)
        elif seen is None:
            seen = observed_attention(query, self.keys, scaling, cfg.obs_window)  # (B, H, T)
        if cfg.rules.scored:
            self.score += seen
        if cfg.layer_budget == "adaptive":
            now = attention_spread(seen)
            m = cfg.spread_momentum
            self.spread = now if self.spread is None else m * self.spread + (1 - m) * now
        self.compress()

    def _is_text(self) -> torch.Tensor:
        """(B, H, T) bool: conversation text, as opposed to frame tokens (image, boundary, timestamp)."""
        return (self.modality == Modality.TEXT) & self.times.isnan()

    def _redundant(self) -> torch.Tensor:
        """(B, H, T) bool: frame tokens that repeat the frame before them (`kv_scoring.frame_redundancy`)."""
        return ~self.times.isnan() & (self.similar >= self.cfg.redundancy)

    def compress(self) -> None:
        """Cut this layer back to its budget: keep, merge, re-rotate, update the bookkeeping.

        It cuts `decode_slack` (one-token appends: decoding) or `chunk_slack` (chunks) tokens deeper, so
        the next appends fit without a compression each: with decode_slack 32, one compression per 32
        generated tokens."""
        t = self.get_seq_length()
        if not self.cfg.rules.evicts or t <= self.budget:
            return
        cfg, rules = self.cfg, self.cfg.rules
        keep_n = self.budget - (cfg.decode_slack if self.last_append == 1 else cfg.chunk_slack)
        compiled = cfg.compiled and (cfg.merge == "none" or cfg.merge_window is not None) and all(
            x.device.type == "cpu" and x.dtype == torch.float32 for x in (self.keys, self.values))
        if compiled:
            prio = priority(self.score if rules.scored else None, self.modality, self.times, self.similar,
                            cfg.redundancy, cfg.n_sink, cfg.recent, rules.text_prior)
        else:
            prio = keep_priority(self.score if rules.scored else None, self._is_text(), cfg.n_sink, cfg.recent,
                                 rules.text_prior, self._redundant() if cfg.redundancy is not None else None)
        if cfg.evict_per == "layer":
            prio = prio.sum(dim=1, keepdim=True).expand_as(prio)  # (B, H, T): same choice for all heads
        b, h, e = prio.shape[0], prio.shape[1], t - keep_n
        # the E lowest priorities leave (a top-E of T is cheaper than a top-K and a sort of the K kept)
        evict = prio.topk(e, dim=-1, largest=False, sorted=False).indices.sort(dim=-1).values  # (B, H, E)
        decay = cfg.score_decay if rules.decays else 1.0

        def take(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            """x (B, H, T[, D]) at `rows` (the flat kept or evicted tokens of every head): one index_select."""
            if x.dim() == 4:
                return x.reshape(-1, x.shape[-1]).index_select(0, rows).view(b, h, -1, x.shape[-1])
            return x.reshape(-1).index_select(0, rows).view(b, h, -1)

        tags = (self.score, self.modality, self.times, self.position, self.similar, self.rotary)  # (B, H, T) each
        if compiled:  # the kept tokens (B, H, K) in stream order and their tags, in one loop
            keep, (score, *tags) = keep_rows(evict, t, tags, decay)
        else:
            kept = torch.ones_like(prio, dtype=torch.bool).scatter_(-1, evict, False)  # (B, H, T)
            keep = kept.nonzero()[:, -1].view(b, h, keep_n)  # (B, H, K) in stream order
            at_keep = flat_rows(keep, t)  # rows of all heads' kept tokens at once
            score, *tags = (take(x, at_keep) if x.shape[-1] else x for x in tags)  # similar, rotary may be unused
            score = score * decay
        self.score, (self.modality, self.times, self.position, self.similar, self.rotary) = score, tags

        delta = None  # (B, H, K) <= 0: where each kept key moves
        if self.mrope:  # close the gaps left by whole evicted blocks
            at_keep = flat_rows(keep, t)
            delta, self.anchor = mrope_gap_deltas(take(self.anchor, at_keep), take(self.advance, at_keep))
            self.advance = take(self.advance, at_keep)
            self.end = int((self.anchor[..., -1] + self.advance[..., -1]).max())
        elif self.end - keep_n > self.max_gap:  # the empty positions add up to too many: close the gaps
            delta = gap_deltas(self.rotary)  # self.rotary: (B, H, K) where the kept keys are rotated now
            self.rotary, self.end = torch.arange(keep_n, device=keep.device).expand_as(keep), keep_n
        if compiled:
            table = None if delta is None else self.turns.down_to(int(delta.min()))
            keys, values, weight = cut_kv(self.keys, self.values, self.weight, keep, evict, delta, table,
                                          cfg.n_sink, cfg.merge, cfg.merge_window)
        else:
            keys, values, weight = take(self.keys, at_keep), take(self.values, at_keep), take(self.weight, at_keep)
            if cfg.merge != "none":
                at_evict = flat_rows(evict, t)
                keys, values, weight = merge_into_kept(
                    keys, values, weight, take(self.keys, at_evict), take(self.values, at_evict),
                    take(self.weight, at_evict), n_fixed=cfg.n_sink, mode=cfg.merge, window=cfg.merge_window,
                    ev_slot=evict - torch.arange(e, device=evict.device),  # (B, H, E) kept tokens before each evicted one
                    in_place=True,  # keys and values are this cut's own copies
                )
            if delta is not None:
                keys = rotate(keys, delta, self.inv_freq)
        self.keys, self.values, self.weight = keys, values, weight
        self._key_store = self._value_store = None  # the next append starts a store with room
        self.n_evicted += t - keep_n
        if cfg.merge != "none":
            self.n_merged += t - keep_n

    def reset(self) -> None:
        super().reset()
        self._key_store = self._value_store = None
        self.n_seen = self.n_evicted = self.n_merged = self.shift = self.last_append = self.end = 0
        self.budget, self.spread = self.cfg.budget, None
        self.last_frame = None

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("KVWindowCache does not support cropping (assisted decoding)")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError("KVWindowCache does not support beam search")
