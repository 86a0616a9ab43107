"""The bounded KV cache's public surface: `KVWindowCache`, a `transformers.Cache` that never holds more
than `budget` tokens per layer, plus the names callers need with it.

Import from here: `KVWindowCache`, `WindowConfig`, `POLICIES` (settings and policy table,
`kv_config.py`), `use_window_attention`, `window_attention`, `ATTN_IMPLEMENTATION` (the attention
function, `kv_attention.py`), `KVWindowLayer` (one layer, `kv_layer.py`) and `Modality` (tags,
`shared_types.py`). The files beside this one hold one concept each; this one holds the cache that ties them.

How one pass goes. `update()` appends the chunk to each layer with the tags set by `tag()` and returns
the layer's whole cache, so a forward pass attends to at most `budget + len(chunk)` tokens. Then the
registered `kv_window` attention function (SDPA for the output) scores the cached tokens with the
chunk's last `obs_window` queries and the layer compresses back to `budget` right away, so when
`forward` returns no layer holds more than `budget` tokens. Kept keys are re-rotated to contiguous
positions, so the cache looks like an ordinary cache of `get_seq_length()` tokens: the model's default
position ids (`get_seq_length() + arange`) are right, `next_position()` says the same, and a stream can
outlive `max_position_embeddings`. With `max_gap` > 0 a layer re-rotates only once the positions left
empty by evicted tokens exceed it (capped so that a chunk of half the budget still ends inside the
model's positions); until then its keys sit further on than the model places the pass, and the
`kv_window` attention moves the pass's queries by the layer's `shift` like the layer moved its keys.
M-RoPE models (Qwen2-VL family) have 3-D positions that do not follow the token count: `tag()` places
each pass at `next_position()` and returns the `position_ids` to give the model, and compaction moves
whole position blocks (`rope.mrope_gap_deltas`). Without the attention function (another
`attn_implementation`), nothing scores the cache (scores stay at zero) and a layer is cut when the next
layer appends, once its own attention is done; the last layer when the next pass begins, or when the
caller calls `compress()` (as `StreamSession` does after every pass). Layer 0 is therefore within budget
when the model reads its length for the next pass's positions and mask. A one-layer model has no next
layer: without the attention function it needs `compress()` after every forward pass.

AirCache options (any evicting policy): `obs_select="elite"` scores with the conversation-text queries
that attend to frames most strongly and consistently across heads instead of the last `obs_window`
queries; `layer_budget="adaptive"` splits `budget x layers` across layers by how thinly each spreads its
attention (re-estimated every pass once the cache is full, never below `layer_floor`), so the total
never exceeds the uniform total. Layers then hold different lengths, which needs the `kv_window`
attention (it moves each layer's queries by the layer's `shift`).

Deliberately not here: settings (`kv_config.py`), one layer's storage and cut (`kv_layer.py`), the
attention function (`kv_attention.py`), which tokens are important (`kv_scoring.py`), merging
(`kv_merge.py`), RoPE math (`rope.py`).
"""

import contextlib
import math

import torch
from transformers.cache_utils import Cache

from streamer.errors import ConfigError
from streamer.kv_attention import ATTN_IMPLEMENTATION, _observer, use_window_attention, window_attention
from streamer.kv_config import POLICIES, WindowConfig
from streamer.kv_kernels import TurnTable
from streamer.kv_layer import KVWindowLayer, _Tags
from streamer.kv_scoring import split_budget
from streamer.rope import is_mrope, rope_inv_freq
from streamer.shared_types import Modality, MRopeLayout

__all__ = [
    "ATTN_IMPLEMENTATION", "KVWindowCache", "KVWindowLayer", "Modality", "POLICIES", "WindowConfig",
    "use_window_attention", "window_attention",
]


def aside_mask(held: int, lengths: list[int], visible: torch.Tensor | None = None) -> torch.Tensor:
    """(1, 1 or H, Q, held + Q) bool: each of the blocks of `lengths` (Q tokens in all, after `held` cached ones)
    sees the cached tokens (those `visible` (H, held) marks, per head, if given) and, causally, its own block."""
    q = sum(lengths)
    block = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    own = (block[:, None] == block[None, :]) & torch.ones(q, q, dtype=torch.bool).tril()
    if visible is None:
        return torch.cat([torch.ones(q, held, dtype=torch.bool), own], dim=1)[None, None]
    h = visible.shape[0]
    return torch.cat([visible[:, None, :].expand(h, q, held), own.to(visible.device).expand(h, q, q)], dim=-1)[None]


def window_visible(times: torch.Tensor, since: float) -> torch.Tensor:
    """(H, T) bool: of cached tokens with video `times` (H, T; NaN: text), those a question asked with `since`
    sees: the frames after `since` and the text before each head's first frame (the opening), not the chat."""
    frame = ~times.isnan()
    first = torch.where(frame.any(-1), frame.int().argmax(-1), times.shape[-1])  # (H,) each head's first frame
    return (times > since) | (torch.arange(times.shape[-1], device=times.device)[None, :] < first[:, None])


class KVWindowCache(Cache):
    """A `transformers.Cache` holding at most `cfg.budget` tokens per layer after every forward pass.

    Use: `cache = KVWindowCache(model.config, WindowConfig(budget=1024))`, `use_window_attention(model)`,
    `cache.tag(modality, times)` before a forward whose tokens are not plain text, then
    `model(input_ids=..., past_key_values=cache)` or `model.generate(..., past_key_values=cache)`.
    """

    def __init__(self, config, cfg: WindowConfig | None = None):
        self.config = cfg or WindowConfig()  # as asked
        self.cfg = self.config.resolved  # every default worked out: what the layers read
        text_cfg = config.get_text_config(decoder=True)
        self.n_layers = text_cfg.num_hidden_layers
        self.max_positions = getattr(text_cfg, "max_position_embeddings", None)
        if self.cfg.budget is not None and self.max_positions and self.cfg.budget >= self.max_positions:
            raise ConfigError(
                f"budget {self.cfg.budget} must stay below the model's {self.max_positions} positions"
            )
        inv_freq = rope_inv_freq(config)
        self.mrope = is_mrope(config)
        gap = self.cfg.max_gap  # kept keys stay inside the model's positions, with room for a chunk of budget / 2
        if gap and self.max_positions and self.cfg.budget:
            gap = max(0, min(gap, self.max_positions - self.cfg.budget - self.cfg.budget // 2))
        turns = TurnTable(inv_freq)  # shared by the layers (they rotate by the same frequencies)
        super().__init__(layers=[KVWindowLayer(self.cfg, inv_freq, i, self.mrope, gap, turns) for i in range(self.n_layers)])
        self._tags: _Tags | None = None
        self._model_position = 0
        self.aside: tuple | None = None  # (lengths, since) of passes asked aside (see `asking_aside`)

    def tag(self, modality, times=None, layout: MRopeLayout | None = None, probe: int = 0) -> torch.Tensor | None:
        """Tag the tokens of the next forward pass: modality (T,) of `Modality`, times (T,) seconds or NaN;
        `probe`: the last `probe` tokens are proxy queries (the `proxy` scorer): they score the cache and leave
        it with the pass (their logits are the pass's last; a caller that needs the chunk's own drops them).

        Untagged appends (e.g. decoding) count as text without a video time. With M-RoPE it returns the
        pass's `position_ids` (3, 1, T): `layout` (the prompt's positions from 0, None for plain text)
        placed at `next_position()`; the model must get them. With 1-D RoPE it returns None.
        """
        modality = torch.as_tensor(modality, dtype=torch.int8).flatten()
        if times is None:
            times = torch.full(modality.shape, math.nan)
        times = torch.as_tensor(times, dtype=torch.float32).flatten()
        if times.shape != modality.shape:
            raise ValueError(f"modality has {modality.shape[0]} tags but times has {times.shape[0]}")
        if not (isinstance(probe, int) and 0 <= probe < modality.shape[0] or probe == 0):
            raise ValueError(f"probe must be a number of tokens below the pass's {modality.shape[0]}, got {probe!r}")
        self._tags = _Tags(modality, times, probe=probe)
        if not self.mrope:
            return None
        start = self.next_position()
        layout = layout or MRopeLayout.text(modality.shape[0])
        if layout.anchor.shape != modality.shape:
            raise ValueError(f"the M-RoPE layout has {layout.anchor.shape[0]} tokens but modality has {modality.shape[0]}")
        self._tags.anchor, self._tags.advance = layout.anchor + start, layout.advance
        return (layout.position_ids + start).unsqueeze(1)  # (3, 1, T)

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        layer = self.layers[layer_idx]
        # The previous layer's attention is done (for layer 0: the last layer's, in the previous pass).
        # The kv_window attention has cut it back already; any other attention has not, so cut it here,
        # before the model reads layer 0's length for the next pass's positions and mask sizes.
        if self.aside is None:
            self.layers[layer_idx - 1].compress()
        held = layer.get_seq_length()
        if layer_idx == 0:
            self._model_position = self.get_seq_length()  # where the model placed this pass
            if self.mrope and self._tags is None:  # untagged (generate's decoding): text at next_position()
                self.tag(torch.full((key_states.shape[-2],), Modality.TEXT))
                self._tags.explicit = False
            if self.cfg.layer_budget == "adaptive":
                self._split_budget(key_states.shape[-2])
        keys, values = layer.update(key_states, value_states, tags=self._tags, model_position=self._model_position)
        if layer_idx == self.n_layers - 1:
            self._tags = None  # consumed by every layer
        layer.aside_mask = layer.aside_keys = None
        if self.aside is not None:
            keys, values, layer.aside_mask = self._aside_view(layer, keys, values, held, key_states.shape[-2])
            layer.aside_keys = keys  # what the attention will get: its layer's, though not its tensor
        _observer.layer = layer if self.cfg.composition.evicts or self.aside is not None else None
        return keys, values

    @contextlib.contextmanager
    def asking_aside(self, lengths: list[int] | None = None, since: float | None = None):
        """Passes of questions to be taken back (`restore`): nothing is scored and nothing is cut. A pass is
        `lengths` blocks in a row (None: one block), each seeing the cache and itself only; the caller gives
        each block its positions (each starts at `next_position()`). `since`: the questions see only the frames
        after it and the opening text before the first frame (`window_visible`), not the chat."""
        self.aside = (list(lengths) if lengths else None, since)
        try:
            yield
        finally:
            self.aside = None
            for layer in self.layers:
                layer.aside_mask = layer.aside_keys = None

    def _aside_view(self, layer: KVWindowLayer, keys, values, held: int, incoming: int) -> tuple:
        """(keys, values, mask) a pass asked aside attends to: with `since`, only the cached tokens it may see,
        gathered per head (heads may hold different tokens; the shorter ones are padded and masked), so its
        cost does not grow with the cache."""
        lengths, since = self.aside
        lengths = lengths or [incoming]
        if since is None:
            return keys, values, aside_mask(held, lengths)
        visible = window_visible(layer.times[0, :, :held], since)
        counts = visible.sum(-1)
        n = int(counts.max())
        order = torch.argsort((~visible).to(torch.int8), dim=-1, stable=True)[:, :n]  # the visible first, in order
        index = order[None, :, :, None].expand(1, -1, -1, keys.shape[-1])

        def view(x):
            return torch.cat([x[:, :, :held].gather(2, index), x[:, :, held:]], dim=2)

        padded = torch.arange(n, device=counts.device)[None, :] < counts[:, None]  # (H, n)
        return view(keys), view(values), aside_mask(n, lengths, padded)

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
        """Bring every layer back to its budget now. Only the last layer can be over it, and only without
        the `kv_window` attention (its cut otherwise waits for the next pass)."""
        for layer in self.layers:
            layer.compress()

    def next_position(self) -> int:
        """Position id the next token must get: the cache's length (1-D RoPE; a layer whose keys sit further
        on moves the pass by its `shift`); with M-RoPE, the end of the furthest layer's last position block
        (nearer layers keep a gap before it)."""
        if self.mrope:
            return max(layer.end for layer in self.layers)
        return self.get_seq_length()

    def get_max_length(self) -> int:
        return -1  # one forward pass may hold budget + its chunk: no fixed maximum for inputs

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()
        self._tags = None

    def checkpoint(self) -> tuple:
        """What `restore` needs to bring the cache back to this moment (a question asked aside and taken back).
        Cheap: the layers' tensors are shared, not copied, since a pass replaces them or writes only past
        their end; the scores, which a pass updates in place, are copied."""
        layers = []
        for layer in self.layers:
            state = dict(vars(layer))
            if "acc" in state:
                state["acc"] = state["acc"].clone()
            layers.append(state)
        return layers, self._model_position

    def restore(self, checkpoint: tuple) -> None:
        """Back to the moment of `checkpoint()`: everything appended, evicted or scored since is undone."""
        layers, self._model_position = checkpoint
        for layer, state in zip(self.layers, layers):
            vars(layer).clear()
            vars(layer).update(state)
        self._tags = None

    def kv_bytes(self) -> int:
        """Bytes allocated for keys and values, all layers (a layer's free slots for decoding included)."""
        return sum(x.untyped_storage().nbytes() for l in self.layers if l.is_initialized for x in (l.keys, l.values))

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
            "composition": self.cfg.composition.spec,
            "merge": self.cfg.merge,
            "redundancy": self.cfg.redundancy,
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
