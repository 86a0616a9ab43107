"""The bounded KV cache: a `transformers.Cache` that never holds more than `budget` tokens per layer.

Policies (`WindowConfig.policy`), all one mechanism with different scorers:

| policy        | keeps                                             | scores  | text prior | merge default |
|---------------|---------------------------------------------------|---------|------------|---------------|
| `full`        | everything (baseline, no budget)                  | -       | -          | -             |
| `sink-recent` | `n_sink` first + the latest tokens (StreamingLLM) | -       | no         | none          |
| `saddle`      | sinks + recent + top accumulated attention        | decayed | no         | none          |
|               | (Inf-MLLM "attention saddles")                    |         |            |               |
| `text-prior`  | sinks + recent + text before visual, by attention | summed  | yes        | pivot         |
|               | (LOOK-M), evicted pairs merged                    |         |            |               |
| `combined`    | Inf-MLLM retention + LOOK-M text prior and merging| decayed | yes        | pivot         |

How one append goes. `update()` appends the new chunk's keys/values with their tags (modality, video
time, stream position) and returns the whole cache, so a forward pass attends to at most
`budget + len(chunk)` tokens. Then the registered `kv_window` attention function (SDPA for the output)
scores the cached tokens with the chunk's last `obs_window` queries and the layer compresses back to
`budget` right away, so when `forward` returns no layer holds more than `budget` tokens. Compression
gathers the survivors, merges the evicted into them, and re-rotates the kept keys to contiguous
positions 0..budget-1. The cache therefore looks like an ordinary cache of `get_seq_length()` tokens:
the model's default position ids (`get_seq_length() + arange`) are right, `next_position()` says the
same, and a stream can outlive `max_position_embeddings`. Without the attention function (another
`attn_implementation`), a layer that is over budget compresses on its next append, or when the caller
calls `compress()`; scores then stay at zero.

Eviction is per KV head (`evict_per="head"`, default): every head keeps the same number of tokens, but
each keeps the tokens its own queries attend to. Heads specialise (some track recent text, some the
visual detail), and a per-layer choice forces one compromise on all of them at the same memory. The cost
is bookkeeping per head (tags are (B, H, T)); `evict_per="layer"` sums scores over heads and keeps the
same tokens in every head. `bench/bench_kv.py` measures both.

AirCache options (any evicting policy): `obs_select="elite"` scores with the conversation-text queries
that attend to frames most strongly and consistently across heads instead of the last `obs_window`
queries; `layer_budget="adaptive"` splits `budget x layers` across layers by how thinly each spreads its
attention (re-estimated every pass once the cache is full, never below `layer_floor`), so the total
never exceeds the uniform total. Layers then hold different lengths: each layer moves its new keys and
its queries by its own `shift` so that every layer sees one contiguous stream, which needs the
`kv_window` attention.

Not here: which tokens are important (`kv_scoring.py`), how evicted pairs are folded in (`kv_merge.py`),
RoPE math (`rope.py`). Batch size is whatever the model sends, but tags are shared by the batch rows.
"""

import logging
import math
import threading
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from streamer.errors import ConfigError
from streamer.kv_merge import MERGE_MODES, merge_into_kept
from streamer.kv_scoring import (
    attention_spread, elite_attention, keep_priority, observed_attention, split_budget,
)
from streamer.rope import rope_inv_freq, rotate
from streamer.vocab import Modality

log = logging.getLogger(__name__)

ATTN_IMPLEMENTATION = "kv_window"


@dataclass(frozen=True)
class _Policy:
    evicts: bool  # False only for the full-cache baseline
    scored: bool  # accumulate observed attention and keep the highest (else keep the newest)
    decays: bool  # multiply accumulated scores by score_decay at each compression (Inf-MLLM bias)
    text_prior: bool  # conversation text outranks visual tokens (LOOK-M)


POLICIES = {
    "full": _Policy(evicts=False, scored=False, decays=False, text_prior=False),
    "sink-recent": _Policy(evicts=True, scored=False, decays=False, text_prior=False),
    "saddle": _Policy(evicts=True, scored=True, decays=True, text_prior=False),
    "text-prior": _Policy(evicts=True, scored=True, decays=False, text_prior=True),
    "combined": _Policy(evicts=True, scored=True, decays=True, text_prior=True),
}


@dataclass
class WindowConfig:
    """Settings of the bounded cache. Invalid values raise `ConfigError` (a `ValueError`)."""

    policy: str = "combined"  # one of POLICIES
    budget: int | None = 2048  # max tokens kept per layer after every append; None only with policy "full"
    n_sink: int = 4  # first tokens of the stream that are never evicted (attention sinks)
    recent: int | None = None  # latest tokens never evicted; None = budget // 8
    obs_window: int = 32  # latest queries of each forward pass whose attention scores the cache
    score_decay: float = 0.9  # factor on accumulated scores at each compression (decaying policies)
    merge: str | None = None  # none | average | pivot | weighted; None = the policy's default
    evict_per: str = "head"  # "head": each KV head keeps its own tokens; "layer": all heads the same
    obs_select: str = "last"  # which queries score the cache: "last" N, or "elite" text queries (AirCache)
    layer_budget: str = "uniform"  # "uniform": budget per layer; "adaptive": budget x layers split by spread
    layer_floor: int | None = None  # adaptive: least tokens per layer; None = max(n_sink + recent, budget // 4)
    spread_momentum: float = 0.7  # adaptive: weight of the past in each layer's running spread estimate
    decode_slack: int | None = None  # a one-token append (decoding) over budget cuts to budget - this;
    #                                  None = min(32, budget // 16), within what the budget allows
    chunk_slack: int = 0  # a longer append (a chunk) over budget cuts to budget - this, so the next
    #                       chunks append without a compression: fewer compressions, fewer tokens held

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ConfigError(f"unknown policy {self.policy!r}; choose one of: {', '.join(POLICIES)}")
        if self.budget is None and self.policy != "full":
            raise ConfigError(f"policy {self.policy!r} needs a budget (tokens per layer)")
        if self.budget is not None and (not isinstance(self.budget, int) or self.budget < 8):
            raise ConfigError(f"budget must be an integer of at least 8 tokens, got {self.budget!r}")
        if self.n_sink < 0 or self.obs_window < 1:
            raise ConfigError("n_sink must be >= 0 and obs_window >= 1")
        if self.recent is None:
            self.recent = max(1, (self.budget or 8) // 8)
        if self.budget is not None and self.n_sink + self.recent > self.budget:
            raise ConfigError(
                f"n_sink ({self.n_sink}) + recent ({self.recent}) must fit in the budget ({self.budget})"
            )
        if not 0.0 < self.score_decay <= 1.0:
            raise ConfigError(f"score_decay must be in (0, 1], got {self.score_decay}")
        if self.merge is None:
            self.merge = "pivot" if POLICIES[self.policy].text_prior else "none"
        if self.merge not in MERGE_MODES:
            raise ConfigError(f"unknown merge {self.merge!r}; choose one of: {', '.join(MERGE_MODES)}")
        if self.evict_per not in ("head", "layer"):
            raise ConfigError(f"evict_per must be 'head' or 'layer', got {self.evict_per!r}")
        if self.obs_select not in ("last", "elite"):
            raise ConfigError(f"obs_select must be 'last' or 'elite', got {self.obs_select!r}")
        if self.layer_budget not in ("uniform", "adaptive"):
            raise ConfigError(f"layer_budget must be 'uniform' or 'adaptive', got {self.layer_budget!r}")
        if self.layer_floor is None and self.budget is not None:
            self.layer_floor = max(self.n_sink + self.recent, self.budget // 4)
        if self.budget is not None and not self.n_sink + self.recent <= self.layer_floor <= self.budget:
            raise ConfigError(
                f"layer_floor ({self.layer_floor}) must lie between n_sink + recent "
                f"({self.n_sink + self.recent}) and the budget ({self.budget})"
            )
        # a cut must still hold the sinks and the recent window of the smallest layer
        room = (self.layer_floor if self.layer_budget == "adaptive" else self.budget or 0) - self.n_sink - self.recent
        if self.decode_slack is None:
            self.decode_slack = max(0, min(32, (self.budget or 0) // 16, room))
        if self.budget is not None:
            for name in ("decode_slack", "chunk_slack"):
                if not 0 <= getattr(self, name) <= room:
                    raise ConfigError(f"{name} ({getattr(self, name)}) must lie between 0 and {room} "
                                      f"(the smallest layer budget - n_sink - recent)")
        if not 0.0 <= self.spread_momentum < 1.0:
            raise ConfigError(f"spread_momentum must be in [0, 1), got {self.spread_momentum}")

    @property
    def rules(self) -> _Policy:
        return POLICIES[self.policy]


@dataclass
class _Tags:
    """Facts about the tokens of the next append, shared by all layers."""

    modality: torch.Tensor  # (T,) int8 Modality
    times: torch.Tensor  # (T,) float32 video seconds, NaN for text


class KVWindowLayer(DynamicLayer):
    """One layer's bounded cache: keys/values (B, H, T, D) plus per-token, per-head bookkeeping."""

    def __init__(self, cfg: WindowConfig, inv_freq: torch.Tensor, layer_idx: int):
        super().__init__()
        self.cfg, self.inv_freq, self.layer_idx = cfg, inv_freq, layer_idx
        self.n_seen = self.n_evicted = self.n_merged = 0
        self.budget = cfg.budget  # this layer's budget: cfg.budget, or its adaptive share
        self.spread: float | None = None  # running estimate of attention_spread (adaptive budgets)
        self.shift = 0  # this layer's positions minus the model's for the current pass (adaptive budgets)
        self.last_append = 0  # tokens in the latest append: 1 while decoding

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

    def update(self, key_states, value_states, *args, tags: _Tags | None = None, model_position: int = 0,
               **kwargs):
        """Append a chunk. `model_position` is where the model placed it; a layer holding a different
        number of tokens (adaptive budgets) moves it to its own next position, and `window_attention`
        turns the queries by the same `shift`, so every layer sees a contiguous stream."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.compress()  # only does work if the previous pass was never observed
        b, h, c = key_states.shape[:3]
        self.shift = self.get_seq_length() - model_position
        self.last_append = c
        if self.shift:
            key_states = rotate(key_states, torch.full((b, h, c), self.shift), self.inv_freq)
        dev = key_states.device
        if tags is None or tags.modality.shape[0] != c:
            tags = _Tags(torch.full((c,), Modality.TEXT, dtype=torch.int8), torch.full((c,), math.nan))

        def grow(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            return torch.cat([old, new.to(dev, old.dtype).expand(b, h, c)], dim=-1)

        self.keys = torch.cat([self.keys, key_states], dim=-2)
        self.values = torch.cat([self.values, value_states], dim=-2)
        self.score = grow(self.score, torch.zeros(c))
        self.weight = grow(self.weight, torch.ones(c))
        self.modality = grow(self.modality, tags.modality)
        self.times = grow(self.times, tags.times)
        self.position = grow(self.position, torch.arange(self.n_seen, self.n_seen + c))
        self.n_seen += c
        return self.keys, self.values

    def observe(self, query: torch.Tensor, scaling: float) -> None:
        """Add this pass's attention to the scores and the spread estimate, then compress.

        query: (B, Hq, Q, D), already moved to this layer's positions."""
        cfg = self.cfg
        if not (cfg.rules.scored or cfg.layer_budget == "adaptive"):
            return self.compress()
        if cfg.obs_select == "elite":
            is_text = self._is_text()[0, 0]  # (T,) tags are shared by batch rows and heads
            seen = elite_attention(query, self.keys, scaling, cfg.obs_window, is_text[-query.shape[2]:], ~is_text)
        else:
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
        prio = keep_priority(self.score if rules.scored else None, self._is_text(), cfg.n_sink, cfg.recent,
                             rules.text_prior)
        if cfg.evict_per == "layer":
            prio = prio.sum(dim=1, keepdim=True).expand_as(prio)  # (B, H, T): same choice for all heads
        keep = prio.topk(keep_n, dim=-1).indices.sort(dim=-1).values  # (B, H, K) in stream order
        dropped = torch.ones_like(prio, dtype=torch.bool).scatter_(-1, keep, False)  # (B, H, T)
        evict = dropped.nonzero()[:, -1].view(*keep.shape[:2], t - keep_n)  # (B, H, E)

        def take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            if x.dim() == 4:
                return x.gather(2, idx.unsqueeze(-1).expand(-1, -1, -1, x.shape[-1]))
            return x.gather(2, idx)

        keys, values, weight = merge_into_kept(
            take(self.keys, keep), take(self.values, keep), take(self.weight, keep),
            take(self.keys, evict), take(self.values, evict), take(self.weight, evict),
            can_absorb=keep >= cfg.n_sink, mode=cfg.merge,
        )
        delta = torch.arange(keep_n, device=keep.device) - keep  # (B, H, K) <= 0: close the gaps
        self.keys, self.values, self.weight = rotate(keys, delta, self.inv_freq), values, weight
        self.score = take(self.score, keep) * (cfg.score_decay if rules.decays else 1.0)
        self.modality, self.times, self.position = (take(x, keep) for x in (self.modality, self.times, self.position))
        self.n_evicted += t - keep_n
        if cfg.merge != "none":
            self.n_merged += t - keep_n

    def reset(self) -> None:
        super().reset()
        self.n_seen = self.n_evicted = self.n_merged = self.shift = self.last_append = 0
        self.budget, self.spread = self.cfg.budget, None

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("KVWindowCache does not support cropping (assisted decoding)")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError("KVWindowCache does not support beam search")


class _Observer(threading.local):
    """The layer whose attention the next `kv_window` call should score (per thread)."""

    layer: KVWindowLayer | None = None


_observer = _Observer()


def window_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """SDPA for the output; then the cache layer that was just updated scores its tokens and compresses.

    query: (B, Hq, Q, D); key, value: (B, Hkv, T, D) the whole cache of this layer. A layer whose length
    differs from the one the model built its mask for (adaptive budgets) gets its own causal mask, and
    its queries move by the layer's `shift` like its new keys did."""
    layer = _observer.layer
    ours = layer is not None and getattr(module, "layer_idx", None) == layer.layer_idx
    if ours:
        _observer.layer = None
        if layer.shift:
            b, h, q_len = query.shape[:3]
            query = rotate(query, torch.full((b, h, q_len), layer.shift), layer.inv_freq)
        if attention_mask is not None and attention_mask.shape[-1] != key.shape[-2]:
            attention_mask = _causal_mask(query.shape[2], key.shape[-2], key.device)
    out, weights = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    if ours:
        layer.observe(query, scaling if scaling is not None else query.shape[-1] ** -0.5)
    return out, weights


def _causal_mask(q_len: int, kv_len: int, device) -> torch.Tensor:
    """(1, 1, Q, T) bool: query i sees keys up to T - Q + i (the new tokens are the last Q)."""
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device).unsqueeze(-1)
    return (torch.arange(kv_len, device=device) <= q_pos)[None, None]


AttentionInterface.register(ATTN_IMPLEMENTATION, window_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_IMPLEMENTATION, sdpa_mask)  # same masks as SDPA


def use_window_attention(model) -> None:
    """Switch a model to the `kv_window` attention (SDPA output + cache scoring); the vision tower too,
    where it is plain SDPA since it has no cache."""
    model.set_attn_implementation(ATTN_IMPLEMENTATION)


class KVWindowCache(Cache):
    """A `transformers.Cache` holding at most `cfg.budget` tokens per layer after every forward pass.

    Use: `cache = KVWindowCache(model.config, WindowConfig(budget=1024))`, `use_window_attention(model)`,
    `cache.tag(modality, times)` before a forward whose tokens are not plain text, then
    `model(input_ids=..., past_key_values=cache)` or `model.generate(..., past_key_values=cache)`.
    """

    def __init__(self, config, cfg: WindowConfig | None = None):
        self.cfg = cfg or WindowConfig()
        text_cfg = config.get_text_config(decoder=True)
        self.n_layers = text_cfg.num_hidden_layers
        self.max_positions = getattr(text_cfg, "max_position_embeddings", None)
        if self.cfg.budget is not None and self.max_positions and self.cfg.budget >= self.max_positions:
            raise ConfigError(
                f"budget {self.cfg.budget} must stay below the model's {self.max_positions} positions"
            )
        inv_freq = rope_inv_freq(config)
        super().__init__(layers=[KVWindowLayer(self.cfg, inv_freq, i) for i in range(self.n_layers)])
        self._tags: _Tags | None = None
        self._model_position = 0

    def tag(self, modality, times=None) -> None:
        """Tag the tokens of the next forward pass: modality (T,) of `Modality`, times (T,) seconds or NaN.

        Untagged appends (e.g. decoding) count as text without a video time.
        """
        modality = torch.as_tensor(modality, dtype=torch.int8).flatten()
        if times is None:
            times = torch.full(modality.shape, math.nan)
        times = torch.as_tensor(times, dtype=torch.float32).flatten()
        if times.shape != modality.shape:
            raise ValueError(f"modality has {modality.shape[0]} tags but times has {times.shape[0]}")
        self._tags = _Tags(modality, times)

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        layer = self.layers[layer_idx]
        if layer_idx == 0:
            self._model_position = self.get_seq_length()  # where the model placed this pass
            if self.cfg.layer_budget == "adaptive":
                self._split_budget(key_states.shape[-2])
        keys, values = layer.update(key_states, value_states, tags=self._tags, model_position=self._model_position)
        if layer_idx == self.n_layers - 1:
            self._tags = None  # consumed by every layer
        _observer.layer = layer if self.cfg.rules.evicts else None
        return keys, values

    def _split_budget(self, incoming: int) -> None:
        """AirCache: once the cache is full, re-split budget x layers by each layer's attention spread."""
        layers = self.layers
        if any(l.spread is None for l in layers) or layers[0].get_seq_length() + incoming <= self.cfg.budget:
            return  # nothing measured yet, or still filling: uniform budgets, nothing evicted
        total = self.cfg.budget * self.n_layers
        cap = min(total - (self.n_layers - 1) * self.cfg.layer_floor, (self.max_positions or total) // 2)
        for layer, b in zip(layers, split_budget(total, [l.spread for l in layers], self.cfg.layer_floor, cap)):
            layer.budget = b

    def compress(self) -> None:
        """Bring every layer back to its budget now (only needed without the `kv_window` attention)."""
        for layer in self.layers:
            layer.compress()

    def next_position(self) -> int:
        """Position id the next token must get: kept keys always sit at 0..len-1."""
        return self.get_seq_length()

    def get_max_length(self) -> int:
        return -1  # one forward pass may hold budget + its chunk: no fixed maximum for inputs

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()
        self._tags = None

    def kv_bytes(self) -> int:
        """Bytes of the stored key and value tensors, all layers."""
        return sum(l.keys.nbytes + l.values.nbytes for l in self.layers if l.is_initialized)

    def budget_bytes(self) -> int | None:
        """Theoretical bytes at budget: budget x layers x kv_heads x head_dim x 2 x bytes per element."""
        first = self.layers[0]
        if self.cfg.budget is None or not first.is_initialized:
            return None
        b, h, _, d = first.keys.shape
        return self.cfg.budget * self.n_layers * b * h * d * 2 * first.keys.element_size()

    def stats(self) -> dict:
        """Tokens per layer, real KV bytes, evicted/merged counts, kept tokens by modality, video times."""
        live = [l for l in self.layers if l.is_initialized]
        tokens = [l.get_seq_length() for l in self.layers]
        by_mod = {m.name.lower(): 0 for m in Modality}
        times: list[float] = []
        if live:
            first = live[0]
            h = first.modality.shape[1]
            for m in Modality:  # mean over heads of the first layer (heads may keep different tokens)
                by_mod[m.name.lower()] = round(int((first.modality[0] == m).sum()) / h)
            all_times = torch.cat([l.times[0].flatten() for l in live])
            times = sorted(all_times[~all_times.isnan()].unique().tolist())
        return {
            "policy": self.cfg.policy,
            "merge": self.cfg.merge,
            "budget": self.cfg.budget,
            "layer_budgets": [l.budget for l in self.layers],
            "tokens_per_layer": tokens,
            "kv_tokens": max(tokens, default=0),
            "total_tokens": sum(tokens),
            "kv_bytes": self.kv_bytes(),
            "budget_bytes": self.budget_bytes(),
            "seen_tokens": live[0].n_seen if live else 0,
            "evicted": sum(l.n_evicted for l in self.layers),
            "merged": sum(l.n_merged for l in self.layers),
            "kept_by_modality": by_mod,
            "video_times": times,
            "next_position": self.next_position(),
        }
