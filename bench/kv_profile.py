"""Where the compression time of ingest goes: scoring, selection, gather, merge, re-rotation, per layer.

SmolLM2-135M-Instruct with synthetic image embeddings, exactly as `bench_ingest.py`'s 135M run (64
tokens per frame, chunks of 4 frames = 256 tokens, every cache pre-filled to its budget with the model's
own KV of one synthetic chunk), at budgets 1024, 2048 and 4096. The functions `kv_layer` calls are
wrapped with timers for this script only (`observed_attention`/`elite_attention`: scoring;
`keep_priority`: priorities; `merge_into_kept`: LOOK-M merge; `rotate`: re-rotation; `cut_kv`: the
compiled CPU loop that gathers, merges and re-rotates keys and values in one call, `kv_kernels.py`), and
`compress` and `observe` as wholes, so "selection + gather + bookkeeping" is compress minus those phases.
Where the `kv_window` attention computes the observation rows itself (`_attend_and_observe`: their
softmax is their output and the scores; SDPA does the other rows), that call minus `observe` is
"attention": the layer's whole attention, not compression; the end-to-end check below covers it.
Each configuration ingests the same chunks round-robin; the share is phase time / whole chunk time.
End to end: `no-cut` is a plain DynamicCache of the same length, cropped back to the budget after
every chunk (a compression that costs nothing); `overhead` = chunk time / no-cut chunk time - 1.

    .venv/bin/python bench/kv_profile.py [--budgets 1024 2048 4096] [--chunks 6] [--configs combined/pivot ...]
"""

from __future__ import annotations

import argparse
import time

import torch

import common
from transformers import DynamicCache

from streamer import kv_attention, kv_layer
from streamer.kv_window import KVWindowCache, use_window_attention
from streamer.shared_types import Modality

PHASES = {"scoring": ("observed_attention", "elite_attention", "attend_and_score"), "priority": ("keep_priority", "priority"),
          "merge": ("merge_into_kept",), "rotate": ("rotate",), "compiled k/v cut": ("cut_kv",)}
DEFAULT_CONFIGS = ["sink-recent", "saddle", "text-prior/pivot", "combined/none", "combined/average",
                   "combined/pivot", "combined/weighted"]
CLOCK: dict[str, float] = {}


def _timed(name: str, fn):
    def wrapper(*a, **kw):
        start = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            CLOCK[name] = CLOCK.get(name, 0.0) + time.perf_counter() - start
    return wrapper


def install_timers() -> None:
    """Wrap the functions and methods kv_layer uses (this process only)."""
    for names in PHASES.values():
        for name in names:
            if hasattr(kv_layer, name):
                setattr(kv_layer, name, _timed(name, getattr(kv_layer, name)))
    if hasattr(kv_attention, "_attend_and_observe"):
        kv_attention._attend_and_observe = _timed("rows", kv_attention._attend_and_observe)
    for method in ("observe", "compress"):
        setattr(kv_layer.KVWindowLayer, method, _timed(method, getattr(kv_layer.KVWindowLayer, method)))


def phase_times(clock: dict) -> dict:
    out = {phase: sum(clock.get(n, 0.0) for n in names) for phase, names in PHASES.items()}
    # compress is nested in observe for scored policies; selection etc. = compress - the phases inside it
    out["select+gather+bookkeeping"] = clock.get("compress", 0.0) - sum(out[p] for p in PHASES if p != "scoring")
    out["observe+compress"] = clock.get("observe", 0.0) + (clock.get("compress", 0.0) if not clock.get("observe") else 0.0)
    out["attention"] = clock.get("rows", 0.0) - (clock.get("observe", 0.0) if clock.get("rows") else 0.0)
    return out


@torch.no_grad()
def run(budget: int, chunks: int, labels: list[str]) -> dict:
    model, _ = common.load_lm(max_positions=32768)
    use_window_attention(model)
    emb = model.get_input_embeddings().weight
    n, tpf = 256, 64
    gen = torch.Generator().manual_seed(0)
    stream = [torch.randn(1, n, emb.shape[1], generator=gen) * float(emb.std()) for _ in range(chunks + 2)]
    seed = model(inputs_embeds=stream[0], use_cache=True).past_key_values
    reps = -(-budget // n)
    caches = {"no-cut": DynamicCache()}
    for i, layer in enumerate(seed.layers):
        caches["no-cut"].update(layer.keys.repeat(1, 1, reps, 1)[:, :, :budget].clone(),
                                layer.values.repeat(1, 1, reps, 1)[:, :, :budget].clone(), i)
    for label in labels:
        cache = KVWindowCache(model.config, common.window(budget=budget, **common.parse_label(label)))
        cache.tag(torch.full((budget,), int(Modality.IMAGE)), torch.arange(budget) // tpf)
        for i, layer in enumerate(seed.layers):
            cache.update(layer.keys.repeat(1, 1, reps, 1)[:, :, :budget].clone(),
                         layer.values.repeat(1, 1, reps, 1)[:, :, :budget].clone(), i)
        caches[label] = cache
    per = {label: {"chunk": 0.0} for label in caches}
    for j in range(1, chunks + 2):  # chunk 1 is a warm-up
        times = (torch.arange(n) // tpf + budget // tpf + 4 * (j - 1)).float()
        for label, cache in caches.items():
            CLOCK.clear()
            start = time.perf_counter()
            if label == "no-cut":
                model(inputs_embeds=stream[j], past_key_values=cache, use_cache=True, logits_to_keep=1)
                cache.crop(-n)  # back to the budget: a cut that costs nothing
            else:
                cache.tag(torch.full((n,), int(Modality.IMAGE)), times)
                model(inputs_embeds=stream[j], past_key_values=cache, use_cache=True, logits_to_keep=1)
                cache.compress()
            elapsed = time.perf_counter() - start
            if j == 1:
                continue
            per[label]["chunk"] += elapsed
            for k, v in phase_times(CLOCK).items():
                per[label][k] = per[label].get(k, 0.0) + v
    out = {}
    for label, r in per.items():
        chunk = r.pop("chunk")
        out[label] = {"chunk_ms": chunk * 1e3 / chunks, "per_layer_chunk_ms": chunk * 1e3 / chunks / model.config.num_hidden_layers,
                      **{f"{k}_share": v / chunk for k, v in r.items()},
                      **{f"{k}_ms_per_layer": v * 1e3 / chunks / model.config.num_hidden_layers for k, v in r.items()}}
    for r in out.values():
        r["overhead_vs_no_cut"] = r["chunk_ms"] / out["no-cut"]["chunk_ms"] - 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", type=int, nargs="*", default=[1024, 2048, 4096])
    ap.add_argument("--chunks", type=int, default=6)
    ap.add_argument("--configs", nargs="*", default=DEFAULT_CONFIGS)
    ap.add_argument("--name", default="kv_profile")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    common.setup(args.threads)
    started = common.machine()
    install_timers()
    results = {}
    settings = {"model": "SmolLM2-135M-Instruct + synthetic image embeddings", "chunk_tokens": 256,
                "timed_chunks": args.chunks, "budgets": args.budgets, "configs": args.configs}
    for budget in args.budgets:
        results[str(budget)] = run(budget, args.chunks, args.configs)
        for label, r in results[str(budget)].items():
            parts = "  ".join(f"{p} {100 * r[p + '_share']:.1f}%" for p in (*PHASES, "select+gather+bookkeeping"))
            print(f"budget {budget:5d} {label:18s} chunk {r['chunk_ms']:7.0f} ms  vs no-cut {100 * r['overhead_vs_no_cut']:+5.1f}%"
                  f"  compression {100 * r['observe+compress_share']:5.1f}%  ({parts}; attention {100 * r['attention_share']:.1f}%)",
                  flush=True)
        common.write_json(args.name, {"settings": settings, "results": results}, started)  # a partial run counts


if __name__ == "__main__":
    main()
