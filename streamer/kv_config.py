"""Settings of the bounded KV cache: `WindowConfig` (what the user asks for), `Composition` (which parts
decide what is kept) and the named policies (`POLICIES`).

A policy is a composition of parts, written as a spec string of `+`-joined parts (a named policy among
them stands for its parts: `combined+knorm+pool=9`; a later setting of the same part wins):

| part            | what it does                                                                     |
|-----------------|----------------------------------------------------------------------------------|
| a scorer name   | scores every held token (`kv_scorers`: recency, attention, tova, proxy, knorm,    |
|                 | vnorm, keydiff); several are averaged as ranks; `@text`/`@frames` scopes one     |
| `union`         | several scorers: each token's best rank counts (else the mean of its ranks)      |
| `decay`         | accumulated attention is multiplied by `score_decay` at every cut (Inf-MLLM bias)|
| `prior`         | conversation text outranks every frame token (LOOK-M text prior)                 |
| `redundancy=C`  | frame tokens repeating the frame before (cosine >= C) go first (InfiniPot-V-like)|
| `pool=K`        | each text token takes the best score of the K text tokens around it (phrases)    |
| `merge=MODE`    | evicted pairs are merged into kept ones: average, pivot, weighted (LOOK-M)       |

Sinks (`n_sink`) and the recent window (`recent`) are always kept; the budget is per layer (or split
across layers: `layer_budget`) and per KV head (or per layer: `evict_per`). The named policies:

| policy        | composition                                          |
|---------------|------------------------------------------------------|
| `full`        | nothing evicted (the baseline; no budget)            |
| `sink-recent` | `recency` (StreamingLLM)                             |
| `saddle`      | `attention+decay` (Inf-MLLM)                          |
| `text-prior`  | `attention+prior+merge=pivot` (LOOK-M)               |
| `combined`    | `attention+decay+prior+redundancy=0.9+merge=pivot`   |
| `recall`      | `combined`, but text ranked by key norm pooled over 9 tokens (`knorm@text+pool=9`) and frames by |
|               | attention (`attention@frames`): the product default, chosen by `bench/bench_retrieval.py`        |

`WindowConfig` is frozen and holds exactly what was asked (None = the default); `WindowConfig.resolved`
is the one place defaults are worked out, so `dataclasses.replace(cfg, policy=...)` equals building a
new config with those arguments. Deliberately not here: anything that holds or cuts tensors
(`kv_layer.py`, `kv_window.py`) or scores tokens (`kv_scorers/`, `kv_scoring.py`).
"""

import dataclasses
from dataclasses import dataclass, field, fields

from streamer.errors import ConfigError, check_number
from streamer.kv_merge import MERGE_MODES
from streamer.kv_scorers import SCOPES, SCORERS, Scorer

POLICIES = {
    "full": "",
    "sink-recent": "recency",
    "saddle": "attention+decay",
    "text-prior": "attention+prior+merge=pivot",
    "combined": "attention+decay+prior+redundancy=0.9+merge=pivot",
    "recall": "attention@frames+knorm@text+decay+prior+redundancy=0.9+pool=9+merge=pivot",
}
DEFAULT_POLICY = "recall"  # chosen by measurement (BENCHMARKS.md, "Keeping what a later question needs")


@dataclass(frozen=True)
class Composition:
    """The parts that decide what a bounded cache keeps (see the module docstring)."""

    scorers: tuple[Scorer, ...] = ()  # () only for the full cache (nothing evicted)
    decay: bool = False  # accumulated attention times score_decay at each cut
    text_prior: bool = False  # conversation text outranks frame tokens
    redundancy: float | None = None  # cosine threshold of the repeated-frame signal; None = off
    pool: int = 1  # max-pool the text tokens' score over this many neighbouring text tokens (odd; 1 = off)
    merge: str = "none"  # one of kv_merge.MERGE_MODES
    union: bool = False  # several scorers: a token is ranked by the best of its ranks (else their mean)

    @property
    def evicts(self) -> bool:
        return bool(self.scorers)

    def observes(self, queries: str) -> bool:
        """Whether a scorer wants the attention of these queries ("chunk" or "probe")."""
        return any(s.observes == queries for s in self.scorers)

    @property
    def spec(self) -> str:
        parts = [s.spec for s in self.scorers] + (["union"] if self.union else []) + (["decay"] if self.decay else []) + (["prior"] if self.text_prior else [])
        parts += [f"redundancy={self.redundancy:g}"] if self.redundancy is not None else []
        parts += [f"pool={self.pool}"] if self.pool > 1 else []
        return "+".join(parts + ([f"merge={self.merge}"] if self.merge != "none" else []))

    @classmethod
    def parse(cls, policy: str) -> "Composition":
        """A named policy or a spec string ("knorm+pool=5+merge=pivot") -> Composition; ConfigError names the bad part."""
        spec = "+".join(POLICIES.get(part.strip(), part) for part in policy.split("+"))  # a named policy is its parts
        if spec == "":
            return cls()
        scorers, kw = [], {}
        for part in spec.split("+"):
            name, _, value = part.strip().partition("=")
            name, _, scope = name.partition("@")
            try:
                if name in SCORERS and not value and scope in ("",) + SCOPES:
                    scorers.append(SCORERS[name](scope=scope or "all"))
                elif scope:
                    raise ValueError
                elif name in ("decay", "prior", "union") and not value:
                    kw[{"prior": "text_prior"}.get(name, name)] = True
                elif name == "redundancy":
                    kw["redundancy"] = float(value) if value else 0.9
                elif name == "pool" and value:
                    kw["pool"] = int(value)
                elif name == "merge" and value:
                    kw["merge"] = value
                else:
                    raise ValueError
            except ValueError:
                what = f"unknown policy {policy!r}" if "+" not in spec else f"bad policy part {part!r} in {policy!r}"
                raise ConfigError(
                    f"{what}: use a named policy ({', '.join(POLICIES)}) or parts "
                    f"joined by '+': scorers ({', '.join(SCORERS)}, each may end in @text or @frames), decay, prior, union, "
                    f"redundancy=COS, pool=K, "
                    f"merge=MODE") from None
        if not scorers:
            raise ConfigError(f"policy {policy!r} names no scorer; add one of: {', '.join(SCORERS)}")
        if len({s.spec for s in scorers}) != len(scorers):
            raise ConfigError(f"policy {policy!r} names a scorer twice")
        out = cls(scorers=tuple(scorers), **kw)
        out.check()
        return out

    def check(self) -> None:
        if self.merge not in MERGE_MODES:
            raise ConfigError(f"unknown merge {self.merge!r}; choose one of: {', '.join(MERGE_MODES)}")
        if self.redundancy is not None and not (isinstance(self.redundancy, (int, float)) and -1.0 < self.redundancy <= 1.0):
            raise ConfigError(f"redundancy must be a cosine threshold in (-1, 1], None (off) or 'policy', got {self.redundancy!r}")
        if not isinstance(self.pool, int) or self.pool < 1 or self.pool % 2 == 0:
            raise ConfigError(f"pool must be an odd number of tokens >= 1, got {self.pool!r}")


@dataclass(frozen=True)
class WindowConfig:
    """Settings of the bounded cache, as asked: None means "the default", worked out by `resolved`.
    Invalid values raise `ConfigError` (a `ValueError`) naming the field."""

    policy: str = DEFAULT_POLICY  # a name in POLICIES or a spec string of parts (module docstring)
    budget: int | None = 2048  # max tokens kept per layer after every append; None only with policy "full"
    n_sink: int = 4  # first tokens of the stream that are never evicted (attention sinks)
    recent: int | None = None  # latest tokens never evicted; None = budget // 8
    obs_window: int = 32  # latest queries of each forward pass whose attention scores the cache
    score_decay: float = 0.9  # factor on accumulated scores at each compression (policies with `decay`)
    merge: str | None = None  # none | average | pivot | weighted; None = the policy's
    merge_window: int | None = 8  # merging compares each evicted key with this many kept keys around the
    #                                 place it leaves (RoPE'd keys are most alike near each other); None = all
    evict_per: str = "head"  # "head": each KV head keeps its own tokens; "layer": all heads the same
    obs_select: str = "last"  # which queries score the cache: "last" N, or "elite" text queries (AirCache)
    layer_budget: str = "uniform"  # "uniform": budget per layer; "adaptive": budget x layers split by spread
    layer_floor: int | None = None  # adaptive: least tokens per layer; None = max(n_sink + recent, budget // 4)
    spread_momentum: float = 0.7  # adaptive: weight of the past in each layer's running spread estimate
    decode_slack: int | None = None  # a decoding step over budget cuts to budget - this;
    #                                  None = min(32, budget // 16), within what the budget allows
    chunk_slack: int = 0  # a chunk over budget cuts to budget - this, so the next chunks append without a
    #                       compression: fewer compressions, fewer tokens held
    max_gap: int | None = 0  # 1-D RoPE: positions that evicted tokens may leave empty between kept keys before
    #   a cut closes the gaps (re-rotates every kept key to 0..T-1). Fewer re-rotations; meanwhile kept keys
    #   stand as far apart as in the stream. 0 = close them at every cut (Inf-MLLM); None = up to the budget.
    #   Needs the kv_window attention (it turns the queries like the new keys). M-RoPE closes at every cut.
    compiled: bool = True  # float32 caches on the CPU cut keys and values with compiled loops
    #   (kv_kernels.py: the same tokens kept, the same result to float32 rounding, faster); False = tensor ops only
    redundancy: float | str | None = "policy"  # frame tokens whose value has at least this cosine similarity
    #   with the same place in the frame before are evicted first (InfiniPot-V-like); a frame whose image
    #   tokens all repeat goes with its timestamp; None = off; "policy" = the policy's (see POLICIES)
    resolved: "Window" = field(init=False, repr=False, compare=False)  # every default worked out

    def __post_init__(self):
        object.__setattr__(self, "resolved", _resolve(self))


@dataclass(frozen=True)
class Window:
    """A `WindowConfig` with every default worked out: what the cache reads. Same field names, plus the
    parsed `composition`; `policy` is the name asked for (or the spec)."""

    policy: str
    composition: Composition
    budget: int | None
    n_sink: int
    recent: int
    obs_window: int
    score_decay: float
    merge: str
    merge_window: int | None
    evict_per: str
    obs_select: str
    layer_budget: str
    layer_floor: int | None
    spread_momentum: float
    decode_slack: int
    chunk_slack: int
    max_gap: int
    compiled: bool
    redundancy: float | None


def _int(cfg: WindowConfig, name: str, low: int, none_ok: bool = False) -> None:
    check_number(name, getattr(cfg, name), low, integer=True, none_ok=none_ok)


def _resolve(cfg: WindowConfig) -> Window:
    """Check `cfg` and work out its defaults (the one place they are)."""
    if not isinstance(cfg.policy, str) or not cfg.policy.strip():
        raise ConfigError(f"policy must be a name ({', '.join(POLICIES)}) or a spec string, got {cfg.policy!r}")
    comp = Composition.parse(cfg.policy)
    if cfg.budget is None and comp.evicts:
        raise ConfigError(f"policy {cfg.policy!r} needs a budget (tokens per layer)")
    if cfg.budget is not None and (isinstance(cfg.budget, bool) or not isinstance(cfg.budget, int) or cfg.budget < 8):
        raise ConfigError(f"budget must be an integer of at least 8 tokens, got {cfg.budget!r}")
    for name, low, none_ok in (("n_sink", 0, False), ("obs_window", 1, False), ("recent", 1, True),
                               ("chunk_slack", 0, False), ("decode_slack", 0, True), ("max_gap", 0, True),
                               ("layer_floor", 1, True), ("merge_window", 1, True)):
        _int(cfg, name, low, none_ok)
    recent = cfg.recent if cfg.recent is not None else max(1, (cfg.budget or 8) // 8)
    if cfg.budget is not None and cfg.n_sink + recent > cfg.budget:
        raise ConfigError(f"n_sink ({cfg.n_sink}) + recent ({recent}) must fit in the budget ({cfg.budget})")
    if not (isinstance(cfg.score_decay, (int, float)) and 0.0 < cfg.score_decay <= 1.0):
        raise ConfigError(f"score_decay must be in (0, 1], got {cfg.score_decay!r}")
    merge = cfg.merge if cfg.merge is not None else comp.merge
    redundancy = comp.redundancy if cfg.redundancy == "policy" else cfg.redundancy
    comp = dataclasses.replace(comp, redundancy=redundancy, merge=merge)
    comp.check()
    for name, ok in (("evict_per", ("head", "layer")), ("obs_select", ("last", "elite")),
                     ("layer_budget", ("uniform", "adaptive"))):
        if getattr(cfg, name) not in ok:
            raise ConfigError(f"{name} must be {' or '.join(map(repr, ok))}, got {getattr(cfg, name)!r}")
    layer_floor = cfg.layer_floor
    if layer_floor is None and cfg.budget is not None:
        layer_floor = max(cfg.n_sink + recent, cfg.budget // 4)
    if cfg.budget is not None and not cfg.n_sink + recent <= layer_floor <= cfg.budget:
        raise ConfigError(f"layer_floor ({layer_floor}) must lie between n_sink + recent "
                          f"({cfg.n_sink + recent}) and the budget ({cfg.budget})")
    # a cut must still hold the sinks and the recent window of the smallest layer
    room = (layer_floor if cfg.layer_budget == "adaptive" else cfg.budget or 0) - cfg.n_sink - recent
    decode_slack = cfg.decode_slack if cfg.decode_slack is not None else max(0, min(32, (cfg.budget or 0) // 16, room))
    if cfg.budget is not None:
        for name, v in (("decode_slack", decode_slack), ("chunk_slack", cfg.chunk_slack)):
            if not 0 <= v <= room:
                raise ConfigError(f"{name} ({v}) must lie between 0 and {room} (the smallest layer budget - n_sink - recent)")
    if not (isinstance(cfg.spread_momentum, (int, float)) and 0.0 <= cfg.spread_momentum < 1.0):
        raise ConfigError(f"spread_momentum must be in [0, 1), got {cfg.spread_momentum!r}")
    if not isinstance(cfg.compiled, bool):
        raise ConfigError(f"compiled must be True or False, got {cfg.compiled!r}")
    values = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.init}
    values.update(composition=comp, recent=recent, merge=merge, redundancy=redundancy, layer_floor=layer_floor,
                  decode_slack=decode_slack, max_gap=cfg.max_gap if cfg.max_gap is not None else cfg.budget or 0)
    return Window(**values)
