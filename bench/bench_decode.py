"""Decode speed of SmolLM2-135M-Instruct: ms per generated token against context length, per cache policy.

For each context length L (1k, 2k, 4k, 8k, 16k tokens; --quick: 2k, 8k) and each configuration
(the full cache, and every bounded policy at 10% and 20% of L), a cache is filled with L tokens and
then greedy decode steps `model(input_ids=[[tok]], past_key_values=cache)` are timed. The bounded
caches start at their budget; every step scores the cache with its query, and once a layer is over
budget it cuts `decode_slack` (32) tokens deeper, so it compresses (keep/merge, re-rotation) once per 32
steps. That overhead is part of what is measured (its cost comes in bursts, hence means over whole
multiples of 32 steps), and its share is reported too.

How the caches are filled: prefilling 16k real tokens is too slow on CPU, so the model's own KV of one
real prefill (`--prefill` tokens of timestamped captions, default 512) is tiled along the sequence to L
tokens (positions repeat; it is only a speed test), tagged as IMAGE tokens with video times (a video
stream), written into the cache layer by layer and compressed once to the budget. The model's
`max_position_embeddings` is raised to 32768 so the full cache can hold 16k tokens (RoPE is not
rescaled; the real model is trained for 8192 positions).

Timing: all configurations of one length are timed round-robin, one decode step each per round, and
means are taken; the speed-up is mean(full) / mean(config) from the same rounds. One torch
thread by default (the machine is shared). Writes bench/results/decode[_quick].json and .png.

    .venv/bin/python bench/bench_decode.py --quick     # 2k, 8k
    .venv/bin/python bench/bench_decode.py             # 1k .. 16k
"""

import argparse
import gc

import torch
from transformers import DynamicCache

import common
from common import POLICIES
from streamer.kv_window import KVWindowCache, use_window_attention
from streamer.shared_types import Modality, format_timestamp


FLOOR = "dynamic"  # transformers' DynamicCache holding the budget's tokens: no policy, the ceiling of any speed-up


def caption_text(n_words: int) -> str:
    words = "a red car stops at the gate then a blue truck turns left near the old bridge".split()
    out, t = [], 0
    while len(out) < n_words:
        out.append(format_timestamp(t))
        out += words[t % 5: t % 5 + 8]
        t += 7
    return " ".join(out)


@torch.no_grad()
def prefill_kv(model, tokenizer, n: int):
    """[(keys, values)] per layer, each (1, H, n, D), from one real prefill of n tokens."""
    ids = tokenizer(caption_text(2 * n), return_tensors="pt")["input_ids"][:, :n]
    out = model(input_ids=ids, use_cache=True)
    return [(layer.keys, layer.values) for layer in out.past_key_values.layers]


def tiled(kv, length: int):
    """Each layer's (keys, values) of `kv` repeated along the sequence to `length` tokens, one layer at a time."""
    reps = -(-length // kv[0][0].shape[2])
    return ((k.repeat(1, 1, reps, 1)[:, :, :length].clone(), v.repeat(1, 1, reps, 1)[:, :, :length].clone())
            for k, v in kv)


def plain_cache(kv, length: int) -> DynamicCache:
    """transformers' own DynamicCache holding the first `length` tiled tokens: the model's decode cost at
    that many cached tokens with no policy at all, the floor any cache of that size can reach."""
    cache = DynamicCache()
    for i, (k, v) in enumerate(tiled(kv, length)):
        cache.update(k, v, i)
    return cache


def filled_cache(model, cfg, kv, length: int) -> KVWindowCache:
    """A cache holding `length` tiled tokens (IMAGE, 1 s apart in groups of 64), compressed to budget."""
    cache = KVWindowCache(model.config, cfg)
    cache.tag(torch.full((length,), int(Modality.IMAGE)), torch.arange(length) // 64)
    for i, (k, v) in enumerate(tiled(kv, length)):
        cache.update(k, v, i)
    cache.compress()
    return cache


class Decoder:
    """Greedy decoding into one cache; `step()` runs one token."""

    def __init__(self, model, cache, first_token: int):
        self.model, self.cache, self.token = model, cache, first_token
        self.clock = common.instrument(cache) if isinstance(cache, KVWindowCache) else {"s": 0.0}
        self.steps = 0

    @torch.no_grad()
    def step(self):
        out = self.model(input_ids=torch.tensor([[self.token]]), past_key_values=self.cache, use_cache=True,
                         logits_to_keep=1)
        self.token = int(out.logits[0, -1].argmax())
        self.steps += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="contexts 2k and 8k, fewer rounds")
    ap.add_argument("--lengths", type=int, nargs="*", help="context lengths in tokens")
    ap.add_argument("--fractions", type=float, nargs="*", default=[0.1, 0.2], help="budgets as fractions of L")
    ap.add_argument("--rounds", type=int, help="timed decode steps per configuration and length")
    ap.add_argument("--prefill", type=int, default=512, help="real tokens prefilled once, then tiled")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    common.setup(args.threads)
    lengths = args.lengths or ([2048, 8192] if args.quick else [1024, 2048, 4096, 8192, 16384])
    rounds = args.rounds or (32 if args.quick else 64)  # whole periods of decode_slack (32) compressions
    started = common.machine()

    model, tokenizer = common.load_lm(max_positions=32768)
    use_window_attention(model)
    kv = prefill_kv(model, tokenizer, args.prefill)
    first = tokenizer("The", add_special_tokens=False)["input_ids"][0]
    points = []
    for length in lengths:
        decoders = {"full": Decoder(model, filled_cache(model, common.window("full", None), kv, length), first)}
        for frac in args.fractions:
            for policy in POLICIES:
                budget = int(length * frac)
                decoders[f"{policy}@{frac:.0%}"] = Decoder(
                    model, filled_cache(model, common.window(policy, budget), kv, length), first)
            decoders[f"{FLOOR}@{frac:.0%}"] = Decoder(model, plain_cache(kv, int(length * frac)), first)
        for d in decoders.values():
            d.clock["s"] = 0.0
        times = common.interleaved({k: d.step for k, d in decoders.items()}, rounds=rounds, warmup=1)
        full_ms = times["full"]["mean_ms"]
        for label, t in times.items():
            d = decoders[label]
            policy, _, frac = label.partition("@")
            points.append({
                "context": length, "label": label, "policy": policy,
                "budget_fraction": float(frac.rstrip("%")) / 100 if frac else None,
                "kv_tokens": d.cache.get_seq_length(),
                "kv_bytes": sum(x.untyped_storage().nbytes() for layer in d.cache.layers for x in (layer.keys, layer.values)),
                **t, "speedup_vs_full": full_ms / t["mean_ms"],
                "compress_ms_per_step": d.clock["s"] * 1e3 / max(d.steps, 1),
            })
            print(f"L={length:6d} {label:18s} {t['mean_ms']:7.1f} ms/token  x{full_ms / t['mean_ms']:.2f}"
                  f"  compress {d.clock['s'] * 1e3 / max(d.steps, 1):.1f} ms/step")
        del decoders
        gc.collect()

    goal = [p for p in points if p["context"] == 8192 and p["budget_fraction"] == 0.1]
    name = "decode_quick" if args.quick else "decode"
    common.write_json(name, {
        "settings": {
            "model": "SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to float32), max_position_embeddings 32768",
            "fill": f"model's own KV of one real {args.prefill}-token prefill, tiled to the context length, "
                    "tagged IMAGE; bounded caches compressed to budget before timing",
            "timing": "round-robin over configurations, one greedy decode step per round, means over whole "
                      "decode_slack periods; speed-up = mean(full) / mean(config) in the same rounds",
            "lengths": lengths, "fractions": args.fractions, "rounds": rounds,
        },
        "points": points,
        "goal": {"target": "speed-up >= 1.5 at 8k context, 10% budget (issue 18: >= 2.3); "
                           f"'{FLOOR}' is a plain DynamicCache of the budget's tokens, the ceiling for any cache that size",
                 "at_8k_10pct": {p["policy"]: round(p["speedup_vs_full"], 2) for p in goal}},
    }, started)
    plot(points, lengths, args.fractions, name)


def plot(points, lengths, fractions, name) -> None:
    plt = common.plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    full = [p["mean_ms"] for p in points if p["label"] == "full"]
    ax.plot(lengths, full, "k-o", label="full")
    styles = ["--", ":"]
    for fi, frac in enumerate(fractions):
        for policy in POLICIES:
            ys = [p["mean_ms"] for p in points if p["policy"] == policy and abs(p["budget_fraction"] - frac) < 1e-9]
            ax.plot(lengths, ys, styles[fi % 2], marker=".", label=f"{policy} {frac:.0%}")
    ax.set(xscale="log", xlabel="context length (tokens)", ylabel="ms per generated token (mean)",
           title="Decode latency, SmolLM2-135M, CPU")
    ax.minorticks_off()
    ax.set_xticks(lengths, [f"{x // 1024}k" for x in lengths])
    ax.legend(fontsize=7)
    ax = axes[1]
    for fi, frac in enumerate(fractions):
        for policy in POLICIES:
            ys = [p["speedup_vs_full"] for p in points if p["policy"] == policy and abs(p["budget_fraction"] - frac) < 1e-9]
            ax.plot(lengths, ys, styles[fi % 2], marker=".", label=f"{policy} {frac:.0%}")
    ax.axhline(1.5, color="red", lw=0.8, label="goal 1.5x")
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set(xscale="log", xlabel="context length (tokens)", ylabel="speed-up vs full (same rounds)",
           title="Speed-up over the full cache")
    ax.minorticks_off()
    ax.set_xticks(lengths, [f"{x // 1024}k" for x in lengths])
    ax.legend(fontsize=7)
    common.save_fig(fig, name)


if __name__ == "__main__":
    main()
