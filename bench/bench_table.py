"""Policy table: one row per policy x merge variant and AirCache option, at 5%, 10% and 20% budgets.

Columns:
- KV: measured KV bytes after the decode run, as a share of the full cache at the same context;
- decode speed-up: the script's own short run, SmolLM2-135M greedy decode at one context length (4k
  with --quick, 8k otherwise), every variant and budget plus the full cache timed round-robin
  (bench_decode.py's method: model KV tiled to the context, compression on every step); also the
  share of each decode step spent compressing;
- ingest overhead: compression share of ingest time from bench_ingest's JSON (SmolLM2-135M with
  synthetic image tokens, budget 2048; per variant when bench_ingest ran with --variants);
- quality: from bench_captions' JSON (forced-choice accuracy, p(correct colour), KL of the first answer
  token against the full cache) where that script ran the variant at that budget: captions_variants
  (`bench_captions.py --variants`, all variants at 5/10/20%) first, then captions (10/20/50%).
The best value per column is marked with *. Writes bench/results/table[_quick].json, .md and .png.

    .venv/bin/python bench/bench_table.py --quick
"""

import argparse

import common
from bench_decode import Decoder, filled_cache, prefill_kv
from streamer.kv_window import use_window_attention

FRACTIONS = [0.05, 0.1, 0.2]  # budgets as fractions of the context (--quick: 10% only)


def decode_run(context: int, rounds: int, variants: list[dict], fractions: list[float]) -> dict:
    model, tokenizer = common.load_lm(max_positions=32768)
    use_window_attention(model)
    kv = prefill_kv(model, tokenizer, 512)
    first = tokenizer("The", add_special_tokens=False)["input_ids"][0]
    decoders = {"full": Decoder(model, filled_cache(model, common.window("full", None), kv, context), first)}
    for frac in fractions:
        for v in variants:
            cfg = common.window(v["policy"], int(context * frac), v["merge"], v["obs_select"], v["layer_budget"])
            decoders[f"{v['label']}@{frac:.0%}"] = Decoder(model, filled_cache(model, cfg, kv, context), first)
    times = common.interleaved({k: d.step for k, d in decoders.items()}, rounds=rounds, warmup=1)
    full_ms, full_bytes = times["full"]["mean_ms"], decoders["full"].cache.kv_bytes()  # means: compressions are bursts
    out = {}
    for k, t in times.items():
        d = decoders[k]
        out[k] = {"mean_ms": t["mean_ms"], "speedup": full_ms / t["mean_ms"],
                  "kv_bytes": d.cache.kv_bytes(), "kv_share": d.cache.kv_bytes() / full_bytes,
                  "compress_share_decode": d.clock["s"] / max(d.steps, 1) * 1e3 / t["mean_ms"]}
    return out


def lookup_ingest(ingest: dict | None, label: str, policy: str) -> float | None:
    """Compression share of ingest for a variant: its own row, or its policy's row when it is that
    policy's default (bench_ingest without --variants runs the policies with their default merge)."""
    if not ingest:
        return None
    res = ingest.get("lm_135m", {}).get("results", {})
    default = {"text-prior": "text-prior/pivot", "combined": "combined/pivot"}.get(policy, policy)
    r = res.get(label) or (res.get(policy) if label == default else None)
    return None if not r or "compress_share" not in r else r["compress_share"]


def lookup_captions(captions: dict | None, v: dict, frac: float) -> dict | None:
    if not captions:
        return None
    for r in captions["rows"]:
        if r["policy"] != v["policy"] or abs(r["fraction"] - frac) > 1e-9:
            continue
        if r.get("merge") == (v["merge"] or r.get("merge")) and r.get("obs_select", "last") == v["obs_select"] \
                and r.get("layer_budget", "uniform") == v["layer_budget"]:
            return r
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--context", type=int)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the decode timings of the last table JSON; only re-read the other scripts' JSON")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    common.setup(args.threads)
    started = common.machine()
    context = args.context or (4096 if args.quick else 8192)
    rounds = args.rounds or (32 if args.quick else 64)  # whole decode_slack (32) periods
    variants = common.table_variants()
    fractions = [0.1] if args.quick else FRACTIONS
    suffix = "_quick" if args.quick else ""
    old = common.read_json("table" + suffix) if args.reuse else None
    if old:
        dec, context, rounds, started = old["decode"], old["settings"]["decode_context"], old["settings"]["rounds"], old["machine"]
        fractions = old["settings"]["fractions"]
    else:
        dec = decode_run(context, rounds, variants, fractions)
    ingest = common.read_json("ingest") or common.read_json("ingest_quick")
    captions = {"rows": [], "command": []}
    for stem in ("captions_variants", "captions_variants_quick", "captions", "captions_quick"):
        data = common.read_json(stem)
        if data:
            captions["rows"] += data["rows"]
            captions["command"].append(data["command"])
    captions["command"] = "; ".join(captions["command"]) or None
    rows = []
    for frac in fractions:
        for v in variants:
            d = dec[f"{v['label']}@{frac:.0%}"]
            c = lookup_captions(captions, v, frac)
            rows.append({"variant": v["label"], **{k: v[k] for k in ("policy", "merge", "obs_select", "layer_budget")},
                         "budget_fraction": frac, "kv_share": d["kv_share"], "kv_bytes": d["kv_bytes"],
                         "decode_speedup": d["speedup"], "decode_compress_share": d["compress_share_decode"],
                         "ingest_compress_share": lookup_ingest(ingest, v["label"], v["policy"]),
                         "caption_accuracy": c and c["accuracy"], "caption_p_correct": c and c.get("p_correct_mean"),
                         "caption_kl": c and c["kl_first_token_mean"]})
    cols = [("kv_share", min), ("decode_speedup", max), ("decode_compress_share", min),
            ("ingest_compress_share", min), ("caption_accuracy", max), ("caption_p_correct", max), ("caption_kl", min)]
    md = markdown(rows, cols, context)
    common.write_json("table" + suffix, {
        "settings": {"decode_context": context, "rounds": rounds, "fractions": fractions,
                     "sources": {"ingest": ingest and ingest["command"], "captions": captions and captions["command"]},
                     "full_decode_ms": dec["full"]["mean_ms"]},
        "rows": rows, "markdown": md, "decode": dec}, started)
    (common.RESULTS / f"table{suffix}.md").write_text(md)
    print(md)
    plot(rows, "table" + suffix, context)


def markdown(rows, cols, context) -> str:
    best = {}
    for frac in sorted({r["budget_fraction"] for r in rows}):
        sub = [r for r in rows if r["budget_fraction"] == frac]
        for col, pick in cols:
            vals = [r[col] for r in sub if r[col] is not None]
            if vals:
                best[(frac, col)] = pick(vals)

    def cell(r, col, fmt):
        v = r[col]
        if v is None:
            return "-"
        s = fmt(v)
        return f"**{s}***" if best.get((r["budget_fraction"], col)) == v else s

    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    lines = [
        f"| budget | variant | KV (of full at {context // 1024}k) | decode speed-up | compress share of decode step "
        "| compress share of ingest (budget 2048) | caption acc | p(correct) | KL first token |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append("| " + " | ".join([
            f"{r['budget_fraction']:.0%}", r["variant"], cell(r, "kv_share", pct),
            cell(r, "decode_speedup", lambda v: f"{v:.2f}x"), cell(r, "decode_compress_share", pct),
            cell(r, "ingest_compress_share", pct), cell(r, "caption_accuracy", lambda v: f"{v:.2f}"),
            cell(r, "caption_p_correct", lambda v: f"{v:.2f}"), cell(r, "caption_kl", lambda v: f"{v:.3f}"),
        ]) + " |")
    lines.append("\n`*` and bold: best in its column within the same budget. `-`: not measured for that variant.")
    return "\n".join(lines) + "\n"


def plot(rows, name, context) -> None:
    plt = common.plt()
    fig, ax = plt.subplots(figsize=(9, 5))
    labels = list(dict.fromkeys(r["variant"] for r in rows))
    fractions = sorted({r["budget_fraction"] for r in rows})
    for i, frac in enumerate(fractions):
        ys = [next(r["decode_speedup"] for r in rows if r["variant"] == v and r["budget_fraction"] == frac) for v in labels]
        ax.bar([j + (i - (len(fractions) - 1) / 2) * 0.27 for j in range(len(labels))], ys, width=0.27,
               label=f"budget {frac:.0%}")
    ax.axhline(1.0, color="k", lw=0.6)
    ax.axhline(1.5, color="red", lw=0.8, label="goal 1.5x")
    ax.set_xticks(range(len(labels)), labels, rotation=50, ha="right", fontsize=8)
    ax.set(ylabel="decode speed-up vs full cache", title=f"Decode speed-up per variant, SmolLM2-135M, {context // 1024}k context")
    ax.legend(fontsize=8)
    common.save_fig(fig, name)


if __name__ == "__main__":
    main()
