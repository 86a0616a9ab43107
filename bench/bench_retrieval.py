"""Text retrieval with SmolLM2-135M-Instruct: our cache compositions beside NVIDIA kvpress's presses.

Tasks (`retrieval_task.py`, about 17 tokens a line, 60 lines = about 1,000 tokens): `needle` (one code in a
timestamped system log), `multikey` (the asked code among three others of the same form), `captions` (a
timestamped caption stream of a live video, a plate number in one caption, the question at a later time).
The question comes after the context, never inside it (kvpress's `query_aware: false` way: the cache must
keep what a later question needs without knowing it). Right = the greedy continuation starts with the code.
Same prompts, same token ids, same weights (the cached float32 checkpoint of `common.load_lm`) on both sides.

- Ours (`--side ours`): the full cache (`DynamicCache`), then each composition (`--specs`, any
  `WindowConfig.policy`) at each fraction of the context's tokens, `stream` (the context arrives in chunks of
  `--chunk` tokens and the cache stays within budget all along: what the product does) and `prefill` (the
  context in one forward pass, then cut: what kvpress does). A composition with the `proxy` scorer gets the
  ChatML assistant opening appended to each pass as proxy queries (`KVWindowCache.tag(probe=...)`).
- kvpress (`--side kvpress`, its own venv `kvpress_venv.py`, run as a subprocess `kvpress_worker.py`): no press,
  then each press (`--presses`) at compression_ratio 1 - fraction during the context prefill; the question at
  positions after the whole context, as kvpress's pipeline does.

Each side writes bench/results/retrieval/<task>_<side>[_<first>].json with, per prompt and configuration,
right/wrong and KL(full || config) of the first answer token; `--report` pools the files of a task (halves run
apart merge), prints accuracy with 95% Wilson intervals and paired McNemar tests of our best against
kvpress's best per cell, and writes bench/results/retrieval_<task>.json and .png.

    .venv/bin/python bench/bench_retrieval.py --side ours --task needle --prompts 50
    .venv/bin/python bench/bench_retrieval.py --side kvpress --task needle --prompts 50
    .venv/bin/python bench/bench_retrieval.py --report --task needle
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import DynamicCache

import common
import kvpress_venv
from common import mcnemar_p, wilson
from retrieval_task import PROXY, TASKS, is_right
from streamer.kv_window import KVWindowCache, WindowConfig, use_window_attention
from streamer.shared_types import Modality

SPECS = ["sink-recent", "saddle", "text-prior", "combined", "knorm", "knorm+pool=9", "proxy+pool=9"]
PRESSES = ["SnapKV", "StreamingLLM", "TOVA", "KNorm", "ExpectedAttention", "KeyDiff"]
FRACTIONS = [0.1, 0.2, 0.4]
PARTS = Path(__file__).resolve().parent / "results" / "retrieval"


@torch.no_grad()
def ours_one(model, cache, context: torch.Tensor | None, question: torch.Tensor, new_tokens: int, chunk: int | None,
             proxy: torch.Tensor | None, prefilled: list | None = None) -> dict:
    """Ingest the context (in chunks, or one pass), then the question, then greedy decoding. `prefilled`: the
    full cache's keys and values after the context, one pair per layer, appended by hand instead of a prefill
    (for a composition that scores without attention this is the same cut as a prefill: see run_ours)."""
    start = time.perf_counter()
    if prefilled is not None:
        for i, (k, v) in enumerate(prefilled):
            cache.update(k, v, i)
    for piece in ([] if prefilled is not None else [context] if chunk is None else list(context.split(chunk, dim=1))):
        if proxy is not None:  # proxy queries after the piece: they score the cache, then leave it
            piece = torch.cat([piece, proxy], dim=1)
            cache.tag(torch.full((piece.shape[1],), int(Modality.TEXT)), probe=proxy.shape[1])
        model(input_ids=piece, past_key_values=cache, use_cache=True, logits_to_keep=1)
    if isinstance(cache, KVWindowCache):
        cache.compress()
    prefill_s = time.perf_counter() - start
    kv_tokens = cache.get_seq_length()
    snapshot = [(l.keys.clone(), l.values.clone()) for l in cache.layers] if prefilled is None and chunk is None else None
    out = model(input_ids=question, past_key_values=cache, use_cache=True, logits_to_keep=1)
    logp = out.logits[0, -1].float().log_softmax(-1)
    tokens = [int(logp.argmax())]
    for _ in range(new_tokens - 1):
        step = model(input_ids=torch.tensor([[tokens[-1]]]), past_key_values=cache, use_cache=True, logits_to_keep=1)
        tokens.append(int(step.logits[0, -1].argmax()))
    return {"logp": logp, "tokens": tokens, "prefill_s": prefill_s, "kv_tokens": kv_tokens, "snapshot": snapshot}


def run_ours(args, prompts, ids, tokenizer) -> list[dict]:
    model, _ = common.load_lm()
    use_window_attention(model)
    proxy = torch.tensor([tokenizer(PROXY, add_special_tokens=False)["input_ids"]])
    results = []
    for n, (p, x) in enumerate(zip(tqdm(prompts, desc=f"ours {args.task}"), ids)):
        context, question = torch.tensor([x["context_ids"]]), torch.tensor([x["question_ids"]])
        runs = {"full": ours_one(model, DynamicCache(), context, question, args.new_tokens, None, None)}
        full_kv = runs["full"].pop("snapshot")
        for frac in args.fractions:
            for entry in args.specs:
                spec, only_frac, only_mode = (entry.split(":") + [None, None])[:3]  # SPEC[:FRACTION[:MODE]]
                if only_frac is not None and abs(float(only_frac) - frac) > 1e-9:
                    continue
                cfg = WindowConfig(policy=spec, budget=int(frac * context.shape[1]))
                comp = cfg.resolved.composition
                probe = proxy if comp.observes("probe") else None
                for mode in [only_mode] if only_mode else args.modes:
                    # one prefill, cut: a composition that scores without attention cuts the full cache's keys and
                    # values the same way whether they come from a forward pass or by hand (checked on prompt 0)
                    shared = mode == "prefill" and not (comp.observes("chunk") or comp.observes("probe"))
                    name = f"{spec}@{frac:.0%}/{mode}"
                    runs[name] = ours_one(model, KVWindowCache(model.config, cfg), context, question, args.new_tokens,
                                          args.chunk if mode == "stream" else None, probe, full_kv if shared else None)
                    if shared and n == 0:
                        check = ours_one(model, KVWindowCache(model.config, cfg), context, question, args.new_tokens,
                                         None, None)
                        if check["tokens"] != runs[name]["tokens"]:
                            raise RuntimeError(f"{name}: the shared prefill differs from a forward pass")
                    runs[name].pop("snapshot")
        results.append(score_runs(p, runs, tokenizer))
    return results


def score_runs(prompt: dict, runs: dict, tokenizer) -> dict:
    """{seed, depth, runs: {config: {right, kl_first, prefill_s, kv_tokens}}} with KL against the side's full cache."""
    out = {}
    for name, r in runs.items():
        if "logp" in r:  # ours; the kvpress worker computes its KL itself
            ref, logp = runs["full"]["logp"], r["logp"]
            r["kl_first"] = float((ref.exp() * (ref - logp)).sum())
        out[name] = {"right": is_right(tokenizer.decode(r["tokens"], skip_special_tokens=True), prompt["answer"]),
                     "kl_first": round(r["kl_first"], 5),
                     "prefill_s": round(r["prefill_s"], 4), "kv_tokens": r["kv_tokens"]}
    return {"seed": prompt["seed"], "depth": prompt["depth"], "runs": out}


def run_kvpress(args, prompts, ids, tokenizer) -> list[dict]:
    python = kvpress_venv.ensure()
    from streamer.models.smollm2_tokenizer import cache_root

    job_dir = PARTS / "jobs"
    job_dir.mkdir(parents=True, exist_ok=True)
    job = {"model_dir": str(cache_root() / "bench-smollm2-135m-instruct"), "prompts": ids, "presses": args.presses,
           "ratios": [round(1 - f, 2) for f in args.fractions], "new_tokens": args.new_tokens, "threads": args.threads}
    stem = f"{args.task}_{args.first}"
    (job_dir / f"{stem}.json").write_text(json.dumps(job))
    subprocess.run([str(python), str(Path(__file__).with_name("kvpress_worker.py")), str(job_dir / f"{stem}.json"),
                    str(job_dir / f"{stem}_out.json")], check=True)
    out = json.loads((job_dir / f"{stem}_out.json").read_text())
    return [score_runs(p, r["runs"], tokenizer) for p, r in zip(prompts, out["results"])], out["versions"]


def summarise(parts: list[dict]) -> dict:
    """{config: {right, n, accuracy, wilson95, kl_first, prefill_s, kv_tokens}} over the prompts of `parts`."""
    out = {}
    for name in parts[0]["runs"]:
        runs = [p["runs"][name] for p in parts]
        k, n = sum(r["right"] for r in runs), len(runs)
        out[name] = {"right": k, "n": n, "accuracy": round(k / n, 4), "wilson95": [round(x, 3) for x in wilson(k, n)],
                     "kl_first": round(statistics.fmean(r["kl_first"] for r in runs), 4),
                     "prefill_s": round(statistics.fmean(r["prefill_s"] for r in runs), 4),
                     "kv_tokens": round(statistics.fmean(r["kv_tokens"] for r in runs), 1)}
    return out


def load_side(task: str, side: str) -> tuple[list[dict], dict]:
    """Every prompt of `task` on `side` from bench/results/retrieval/ (halves pooled, one entry per seed)."""
    seeds, meta = {}, {}
    for f in sorted(PARTS.glob(f"{task}_{side}_*.json")):
        data = json.loads(f.read_text())
        meta = data.get("settings", meta)
        for p in data["prompts"]:  # runs of one prompt from several files (other compositions) join
            seeds.setdefault(p["seed"], {**p, "runs": {}})["runs"].update(p["runs"])
    return [seeds[s] for s in sorted(seeds)], meta


def report(task: str) -> dict:
    ours, settings = load_side(task, "ours")
    theirs, kv_settings = load_side(task, "kvpress")
    common_seeds = sorted({p["seed"] for p in ours} & {p["seed"] for p in theirs}) if theirs else [p["seed"] for p in ours]
    ours = [p for p in ours if p["seed"] in common_seeds]
    theirs = [p for p in theirs if p["seed"] in common_seeds]
    out = {"task": task, "prompts": len(ours), "settings": settings, "kvpress_versions": kv_settings.get("versions"),
           "ours": summarise(ours), "kvpress": summarise(theirs) if theirs else {}, "cells": {}}
    fractions = sorted({float(c.split("@")[1].split("%")[0]) / 100 for c in out["ours"] if "@" in c})
    for frac in fractions:
        tag = f"@{frac:.0%}"
        best_kv = max((c for c in out["kvpress"] if tag in c), key=lambda c: out["kvpress"][c]["right"], default=None)
        for mode in ("stream", "prefill"):
            mine = [c for c in out["ours"] if tag in c and c.endswith(mode)]
            if not mine:
                continue
            best = max(mine, key=lambda c: out["ours"][c]["right"])
            cell = {"best_ours": best, "best_ours_accuracy": out["ours"][best]["accuracy"]}
            if best_kv:
                a = [p["runs"][best]["right"] for p in ours]
                b = [p["runs"][best_kv]["right"] for p in theirs]
                cell.update(best_kvpress=best_kv, best_kvpress_accuracy=out["kvpress"][best_kv]["accuracy"],
                            points=round(100 * (out["ours"][best]["accuracy"] - out["kvpress"][best_kv]["accuracy"]), 1),
                            only_ours=sum(x and not y for x, y in zip(a, b)), only_kvpress=sum(y and not x for x, y in zip(a, b)))
                cell["p_value"] = round(mcnemar_p(cell["only_ours"], cell["only_kvpress"]), 4)
            out["cells"][f"{frac:.0%}/{mode}"] = cell
    for side in ("ours", "kvpress"):
        for c, r in out[side].items():
            print(f"{task:8s} {side:7s} {c:44s} {r['right']:3d}/{r['n']} [{r['wilson95'][0]:.2f}, {r['wilson95'][1]:.2f}]"
                  f"  KL {r['kl_first']:.3f}  prefill {r['prefill_s']:.2f} s  KV {r['kv_tokens']:.0f}")
    for cell, c in out["cells"].items():
        print(f"{task:8s} {cell:12s} ours {c['best_ours']} {c['best_ours_accuracy']:.2f}"
              + (f" vs kvpress {c['best_kvpress']} {c['best_kvpress_accuracy']:.2f}: {c['points']:+.1f} points, "
                 f"{c['only_ours']}/{c['only_kvpress']} discordant, McNemar p {c['p_value']}" if "best_kvpress" in c else ""))
    common.write_json(f"retrieval_{task}", out)
    plot(out, f"retrieval_{task}")
    return out


def plot(out: dict, name: str) -> None:
    plt = common.plt()
    rows = [(f"ours {c}", r) for c, r in out["ours"].items()] + [(f"kvpress {c}", r) for c, r in out["kvpress"].items()]
    fig, ax = plt.subplots(figsize=(max(8, 0.22 * len(rows)), 4.5))
    acc = [r["accuracy"] for _, r in rows]
    err = [[max(0.0, r["accuracy"] - r["wilson95"][0]) for _, r in rows],
           [max(0.0, r["wilson95"][1] - r["accuracy"]) for _, r in rows]]
    ax.bar(range(len(rows)), acc, yerr=err, capsize=2,
           color=["tab:blue" if label.startswith("ours") else "tab:orange" for label, _ in rows])
    ax.set_xticks(range(len(rows)), [label for label, _ in rows], rotation=80, ha="right", fontsize=5)
    ax.set(ylabel="accuracy (95% Wilson)", ylim=(0, 1.05),
           title=f"{out['task']}: SmolLM2-135M, {out['prompts']} prompts; blue ours, orange kvpress")
    common.save_fig(fig, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=list(TASKS), default="needle")
    ap.add_argument("--side", choices=["ours", "kvpress"], default="ours")
    ap.add_argument("--report", action="store_true", help="pool the saved files of --task and report; runs nothing")
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--first", type=int, default=0, help="first prompt seed (to run halves apart)")
    ap.add_argument("--lines", type=int, default=60, help="context lines per prompt (about 17 tokens each)")
    ap.add_argument("--chunk", type=int, default=256, help="tokens per chunk in the stream mode")
    ap.add_argument("--new-tokens", type=int, default=6)
    ap.add_argument("--fractions", type=float, nargs="+", default=FRACTIONS)
    ap.add_argument("--specs", nargs="+", default=SPECS,
                    help="our compositions (WindowConfig.policy values); SPEC:FRACTION[:MODE] runs that cell only")
    ap.add_argument("--modes", nargs="+", choices=["stream", "prefill"], default=["stream", "prefill"])
    ap.add_argument("--presses", nargs="+", default=PRESSES, help="kvpress presses (kvpress_worker.PRESSES)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="", help="suffix of the output file (runs of other compositions beside it)")
    args = ap.parse_args()
    common.setup(args.threads)
    if args.report:
        report(args.task)
        return
    started = common.machine()
    from streamer.models.smollm2_tokenizer import load_smollm2_tokenizer

    tokenizer = load_smollm2_tokenizer()
    prompts = [TASKS[args.task](seed, args.lines) for seed in range(args.first, args.first + args.prompts)]
    ids = [{"seed": p["seed"], "context_ids": tokenizer(p["context"], add_special_tokens=False)["input_ids"],
            "question_ids": tokenizer(p["question"], add_special_tokens=False)["input_ids"]} for p in prompts]
    settings = {"model": "SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to float32)", "lines": args.lines,
                "chunk": args.chunk, "new_tokens": args.new_tokens, "fractions": args.fractions,
                "context_tokens_mean": statistics.fmean(len(x["context_ids"]) for x in ids), "threads": args.threads}
    if args.side == "ours":
        results = run_ours(args, prompts, ids, tokenizer)
    else:
        results, settings["versions"] = run_kvpress(args, prompts, ids, tokenizer)
    stem = f"{args.task}_{args.side}_{args.first}{args.tag}"
    common.write_json(stem, {"settings": settings, "prompts": results}, started, path=PARTS / f"{stem}.json")


if __name__ == "__main__":
    sys.exit(main())
