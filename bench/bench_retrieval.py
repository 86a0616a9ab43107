"""Text retrieval with SmolLM2-135M-Instruct: our cache policies beside NVIDIA kvpress's presses.

Task (`retrieval_task.py`): one 4-digit code in a timestamped system log of `--lines` events
(about 17 tokens a line), asked for after the log; right = the greedy continuation starts with the
code. Same prompts, same token ids, same model weights (the cached float32 checkpoint of
`common.load_lm`) on both sides.

- Ours (this venv): the full cache (`DynamicCache`, one prefill), then each bounded policy at 10% and
  20% of the context's tokens, two ways: `stream` (the context arrives in chunks of `--chunk` tokens,
  the cache stays within budget all along: what the product does; every policy) and `prefill` (the
  context in one forward pass, then cut to the budget: what kvpress does; `--prefill-policies`). Then the question, then greedy decoding.
- kvpress (its own venv, `kvpress_venv.py`, run as a subprocess `kvpress_worker.py`): no press (full),
  then SnapKV, StreamingLLM, TOVA, KNorm and ExpectedAttention at compression_ratio 0.9 / 0.8 (10% /
  20% kept) during the context prefill; the question goes at positions after the whole context, as
  kvpress's pipeline does. Streaming (`/stream`): the same presses while the context arrives in chunks:
  kvpress compresses the first prefill only, so later chunks stay whole and the cache grows.

Reported per configuration: accuracy with its 95% Wilson interval, KL(full || config) of the first
answer token (nats, mean over prompts; each side against its own full cache), prefill seconds (context
ingest), decode ms per token (the greedy steps after the first answer token), KV tokens held at the
question. Each side's times are ratios to its own full cache in the same run; the two processes run at
the same time on the 2 cores (one thread each). Writes bench/results/retrieval[_quick].json and .png.

    .venv/bin/python bench/bench_retrieval.py [--quick] [--prompts 30] [--lines 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from transformers import DynamicCache

import common
import kvpress_venv
from common import POLICIES, wilson
from retrieval_task import is_right, make_prompt
from streamer.kv_window import KVWindowCache, use_window_attention

PRESSES = ["SnapKV", "StreamingLLM", "TOVA", "KNorm", "ExpectedAttention"]
STREAM_PRESSES = ["SnapKV", "StreamingLLM"]
FRACTIONS = [0.1, 0.2]


@torch.no_grad()
def ours_one(model, cache, context: torch.Tensor, question: torch.Tensor, new_tokens: int, chunk: int | None) -> dict:
    start = time.perf_counter()
    pieces = [context] if chunk is None else list(context.split(chunk, dim=1))
    for piece in pieces:
        model(input_ids=piece, past_key_values=cache, use_cache=True, logits_to_keep=1)
    if isinstance(cache, KVWindowCache):
        cache.compress()
    prefill_s = time.perf_counter() - start
    kv_tokens = cache.get_seq_length()
    out = model(input_ids=question, past_key_values=cache, use_cache=True, logits_to_keep=1)
    logp = out.logits[0, -1].float().log_softmax(-1)
    tokens = [int(logp.argmax())]
    start = time.perf_counter()
    for _ in range(new_tokens - 1):
        step = model(input_ids=torch.tensor([[tokens[-1]]]), past_key_values=cache, use_cache=True, logits_to_keep=1)
        tokens.append(int(step.logits[0, -1].argmax()))
    decode_ms = (time.perf_counter() - start) * 1e3 / max(new_tokens - 1, 1)
    return {"logp": logp, "tokens": tokens, "decode_ms_per_token": decode_ms, "prefill_s": prefill_s,
            "kv_tokens": kv_tokens}


def summarise(per_prompt: list[dict], prompts: list[dict], tokenizer) -> dict:
    """{config: accuracy, Wilson interval, mean KL, prefill s, decode ms/token, KV tokens, ratios to full}."""
    configs = list(per_prompt[0]["runs"])
    out = {}
    for c in configs:
        runs = [pp["runs"][c] for pp in per_prompt]
        right = [is_right(tokenizer.decode(r["tokens"], skip_special_tokens=True), p["answer"])
                 for r, p in zip(runs, prompts)]
        k, n = sum(right), len(right)
        lo, hi = wilson(k, n)
        out[c] = {"right": k, "n": n, "accuracy": k / n, "wilson95": [lo, hi],
                  "kl_first": statistics.fmean(r["kl_first"] for r in runs),
                  "prefill_s": statistics.fmean(r["prefill_s"] for r in runs),
                  "decode_ms_per_token": statistics.fmean(r["decode_ms_per_token"] for r in runs),
                  "kv_tokens": statistics.fmean(r["kv_tokens"] for r in runs)}
    full = out["full"]
    for r in out.values():
        r["prefill_vs_full"] = r["prefill_s"] / full["prefill_s"]
        r["decode_speedup_vs_full"] = full["decode_ms_per_token"] / r["decode_ms_per_token"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="6 prompts")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--lines", type=int, default=60, help="log lines per prompt (about 17 tokens each)")
    ap.add_argument("--chunk", type=int, default=256, help="tokens per chunk in the streaming runs")
    ap.add_argument("--new-tokens", type=int, default=6)
    ap.add_argument("--prefill-policies", nargs="*", default=["combined"],
                    help="policies also run in one-prefill mode (all: the stream mode)")
    ap.add_argument("--no-kvpress", action="store_true", help="our side only (no kvpress venv)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    common.setup(args.threads)
    n = 6 if args.quick else args.prompts
    started = common.machine()
    model, tokenizer = common.load_lm()
    use_window_attention(model)
    prompts = [make_prompt(seed, args.lines) for seed in range(n)]
    ids = [{"seed": p["seed"],
            "context_ids": tokenizer(p["context"], add_special_tokens=False)["input_ids"],
            "question_ids": tokenizer(p["question"], add_special_tokens=False)["input_ids"]} for p in prompts]

    worker, job_dir = None, Path(tempfile.mkdtemp(prefix="kvpress_job_"))
    if not args.no_kvpress:
        python = kvpress_venv.ensure()
        from streamer.models.smollm2_tokenizer import cache_root
        job = {"model_dir": str(cache_root() / "bench-smollm2-135m-instruct"), "prompts": ids, "presses": PRESSES,
               "ratios": [round(1 - f, 2) for f in FRACTIONS], "new_tokens": args.new_tokens,
               "stream_presses": STREAM_PRESSES, "stream_chunk": args.chunk, "threads": args.threads}
        (job_dir / "job.json").write_text(json.dumps(job))
        worker = subprocess.Popen([str(python), str(Path(__file__).with_name("kvpress_worker.py")),
                                   str(job_dir / "job.json"), str(job_dir / "out.json")])

    ours = []
    for p in ids:
        context, question = torch.tensor([p["context_ids"]]), torch.tensor([p["question_ids"]])
        runs = {"full": ours_one(model, DynamicCache(), context, question, args.new_tokens, None)}
        for frac in FRACTIONS:
            budget = int(frac * context.shape[1])
            for policy in POLICIES:
                for mode, chunk in (("stream", args.chunk), ("prefill", None)):
                    if mode == "prefill" and policy not in args.prefill_policies:
                        continue
                    cache = KVWindowCache(model.config, common.window(policy, budget))
                    runs[f"{policy}@{frac:.0%}/{mode}"] = ours_one(model, cache, context, question, args.new_tokens, chunk)
        ref = runs["full"]["logp"]
        for r in runs.values():
            r["kl_first"] = float((ref.exp() * (ref - r.pop("logp"))).sum())
        ours.append({"seed": p["seed"], "runs": runs})
        print(f"ours prompt {p['seed']}: " + ", ".join(
            f"{c} {'ok' if is_right(tokenizer.decode(r['tokens']), prompts[p['seed']]['answer']) else '--'}"
            for c, r in runs.items() if c == "full" or "10%" in c), flush=True)

    out = {"settings": {"model": "SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to float32)", "prompts": n,
                        "lines": args.lines, "chunk": args.chunk, "new_tokens": args.new_tokens,
                        "context_tokens_mean": statistics.fmean(len(p["context_ids"]) for p in ids),
                        "question_tokens_mean": statistics.fmean(len(p["question_ids"]) for p in ids),
                        "fractions": FRACTIONS, "threads_per_process": args.threads},
           "ours": summarise(ours, prompts, tokenizer)}
    if worker is not None:
        if worker.wait() != 0:
            raise RuntimeError("kvpress worker failed")
        theirs = json.loads((job_dir / "out.json").read_text())
        out["kvpress_versions"] = theirs["versions"]
        out["kvpress"] = summarise(theirs["results"], prompts, tokenizer)
    for side in ("ours", "kvpress"):
        for c, r in out.get(side, {}).items():
            print(f"{side:7s} {c:28s} {r['right']:2d}/{r['n']} [{r['wilson95'][0]:.2f}, {r['wilson95'][1]:.2f}]  "
                  f"KL {r['kl_first']:.3f}  prefill {r['prefill_s']:.2f} s (x{r['prefill_vs_full']:.2f})  "
                  f"decode {r['decode_ms_per_token']:.1f} ms/token (x{r['decode_speedup_vs_full']:.2f})  KV {r['kv_tokens']:.0f}")
    name = "retrieval_quick" if args.quick else "retrieval"
    common.write_json(name, out, started)
    plot(out, name)


def plot(out: dict, name: str) -> None:
    plt = common.plt()
    rows = [(f"ours {c}", r) for c, r in out["ours"].items()] + [(f"kvpress {c}", r) for c, r in out.get("kvpress", {}).items()]
    fig, ax = plt.subplots(figsize=(12, 4.5))
    acc = [r["accuracy"] for _, r in rows]
    err = [[max(0.0, r["accuracy"] - r["wilson95"][0]) for _, r in rows],
           [max(0.0, r["wilson95"][1] - r["accuracy"]) for _, r in rows]]
    colors = ["tab:blue" if label.startswith("ours") else "tab:orange" for label, _ in rows]
    ax.bar(range(len(rows)), acc, yerr=err, color=colors, capsize=2)
    ax.set_xticks(range(len(rows)), [label for label, _ in rows], rotation=70, ha="right", fontsize=6)
    ax.set(ylabel="accuracy (95% Wilson)", ylim=(0, 1.05),
           title=f"Code retrieval, SmolLM2-135M, {out['settings']['context_tokens_mean']:.0f}-token logs, "
                 f"{out['settings']['prompts']} prompts")
    common.save_fig(fig, name)


if __name__ == "__main__":
    main()
