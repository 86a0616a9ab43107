"""Settings of the bounded KV cache: `WindowConfig` and the table of eviction policies (`POLICIES`).

Policies (`WindowConfig.policy`), all one mechanism with different scorers:

| policy        | keeps                                             | scores  | text prior | merge default | redundancy default |
|---------------|---------------------------------------------------|---------|------------|---------------|--------------------|
| `full`        | everything (baseline, no budget)                  | -       | -          | -             | -                  |
| `sink-recent` | `n_sink` first + the latest tokens (StreamingLLM) | -       | no         | none          | off                |
| `saddle`      | sinks + recent + top accumulated attention        | decayed | no         | none          | off                |
|               | (Inf-MLLM "attention saddles")                    |         |            |               |                    |
| `text-prior`  | sinks + recent + text before visual, by attention | summed  | yes        | pivot         | off                |
|               | (LOOK-M), evicted pairs merged                    |         |            |               |                    |
| `combined`    | Inf-MLLM retention + LOOK-M text prior and merging| decayed | yes        | pivot         | 0.9                |
|               | + repeated frame tokens first (InfiniPot-V-like)  |         |            |               |                    |

The redundancy signal is part of `combined` because it measured better there (issue 16, docs/redundancy.md;
trained `tiny` at 10% budgets, 10 held-out videos each): five objects in 5 minutes 23/50 with it against
11/50 without, a moving-scene control 25/50 against 13/50 (paired, McNemar p 0.02 and 0.01), one needle in
5 minutes at 5% 40/40 against 22/40 (40 videos). `redundancy=None` turns it off.

Deliberately not here: anything that holds or cuts tensors (`kv_layer.py`, `kv_window.py`) or scores
tokens (`kv_scoring.py`). This module only names the choices and checks that they fit together.
"""

from dataclasses import dataclass

from streamer.errors import ConfigError
from streamer.kv_merge import MERGE_MODES


@dataclass(frozen=True)
class _Policy:
    evicts: bool  # False only for the full-cache baseline
    scored: bool  # accumulate observed attention and keep the highest (else keep the newest)
    decays: bool  # multiply accumulated scores by score_decay at each compression (Inf-MLLM bias)
    text_prior: bool  # conversation text outranks visual tokens (LOOK-M)
    redundancy: float | None = None  # default WindowConfig.redundancy (None: off)


POLICIES = {
    "full": _Policy(evicts=False, scored=False, decays=False, text_prior=False),
    "sink-recent": _Policy(evicts=True, scored=False, decays=False, text_prior=False),
    "saddle": _Policy(evicts=True, scored=True, decays=True, text_prior=False),
    "text-prior": _Policy(evicts=True, scored=True, decays=False, text_prior=True),
    "combined": _Policy(evicts=True, scored=True, decays=True, text_prior=True, redundancy=0.9),
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
    merge_window: int | None = 8  # merging compares each evicted key with this many kept keys around the
    #                                 place it leaves (RoPE'd keys are most alike near each other); None = all
    evict_per: str = "head"  # "head": each KV head keeps its own tokens; "layer": all heads the same
    obs_select: str = "last"  # which queries score the cache: "last" N, or "elite" text queries (AirCache)
    layer_budget: str = "uniform"  # "uniform": budget per layer; "adaptive": budget x layers split by spread
    layer_floor: int | None = None  # adaptive: least tokens per layer; None = max(n_sink + recent, budget // 4)
    spread_momentum: float = 0.7  # adaptive: weight of the past in each layer's running spread estimate
    decode_slack: int | None = None  # a one-token append (decoding) over budget cuts to budget - this;
    #                                  None = min(32, budget // 16), within what the budget allows
    chunk_slack: int = 0  # a longer append (a chunk) over budget cuts to budget - this, so the next
    #                       chunks append without a compression: fewer compressions, fewer tokens held
    max_gap: int | None = 0  # 1-D RoPE: positions that evicted tokens may leave empty between kept keys before
    #   a cut closes the gaps (re-rotates every kept key to 0..T-1). Fewer re-rotations; meanwhile kept keys
    #   stand as far apart as in the stream. 0 = close them at every cut (Inf-MLLM); None = up to the budget.
    #   Needs the kv_window attention (it turns the queries like the new keys). M-RoPE closes at every cut.
    compiled: bool = True  # float32 caches on the CPU rank tokens and cut keys and values with compiled loops
    #   (kv_kernels.py: the same tokens kept, the same result to float32 rounding, faster); False = tensor ops only
    redundancy: float | str | None = "policy"  # frame tokens whose value has at least this cosine similarity
    #   with the same place in the frame before are evicted first (InfiniPot-V-like); a frame whose image
    #   tokens all repeat goes with its timestamp; None = off; "policy" = the policy's default (see POLICIES)

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
        if self.merge_window is not None and (not isinstance(self.merge_window, int) or self.merge_window < 1):
            raise ConfigError(f"merge_window must be a positive number of tokens or None, got {self.merge_window!r}")
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
        if self.max_gap is None:
            self.max_gap = self.budget or 0
        if not isinstance(self.max_gap, int) or self.max_gap < 0:
            raise ConfigError(f"max_gap must be a number of positions >= 0 or None, got {self.max_gap!r}")
        if self.redundancy == "policy":
            self.redundancy = self.rules.redundancy
        if self.redundancy is not None and not (isinstance(self.redundancy, (int, float)) and -1.0 < self.redundancy <= 1.0):
            raise ConfigError(f"redundancy must be a cosine threshold in (-1, 1], None (off) or 'policy', got {self.redundancy!r}")
        if not 0.0 <= self.spread_momentum < 1.0:
            raise ConfigError(f"spread_momentum must be in [0, 1), got {self.spread_momentum}")

    @property
    def rules(self) -> _Policy:
        return POLICIES[self.policy]
