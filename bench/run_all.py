"""Run every benchmark, then write BENCHMARKS.md from the JSON and PNG files they produced.

Each benchmark runs in its own process (bench_memory, bench_decode, bench_ingest, bench_captions,
bench_needle, then bench_table, which reads the others' JSON). `--quick` passes --quick to each;
`--report` only rewrites BENCHMARKS.md from bench/results/ (for each section the full run's JSON when
there is one, else the quick one). Every section of BENCHMARKS.md shows the command, the machine (CPU
count, torch threads, load average at start and end) and the date stored in that JSON.

    .venv/bin/python bench/run_all.py --quick
    .venv/bin/python bench/run_all.py --only decode captions
    .venv/bin/python bench/run_all.py --report
"""

import argparse
import subprocess
import sys
import time

import common
from quality import paired

ORDER = ["memory", "decode", "ingest", "captions", "needle", "table"]


def run(names: list[str], quick: bool) -> dict:
    took = {}
    for name in names:
        cmd = [sys.executable, str(common.ROOT / "bench" / f"bench_{name}.py")] + (["--quick"] if quick else [])
        print(f"== {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        rc = subprocess.call(cmd, cwd=common.ROOT)
        took[name] = (time.perf_counter() - start, rc)
        print(f"== {name}: {took[name][0]:.0f} s, exit {rc}", flush=True)
    return took


def pick(name: str) -> tuple[dict | None, str]:
    for suffix in ("", "_quick"):
        data = common.read_json(name + suffix)
        if data:
            return data, name + suffix
    return None, name


def header(data: dict) -> str:
    m = data["machine"]
    return (f"Command: `{data['command']}`  \n"
            f"Machine: {m['cpu_count']} CPU cores ({m['processor']}, {m['platform']}), torch {m['torch']} with "
            f"{m['torch_threads']} thread(s), no GPU; load average {m['load_average']} at start, "
            f"{m.get('load_average_at_end')} at end"
            + (" (the machine was shared with other jobs).  \n" if m["load_average"][0] > 2 else " (quiet).  \n")
            + f"Date: {m['date']}\n")


def img(stem: str) -> str:
    return f"![{stem}](bench/results/{stem}.png)\n" if (common.RESULTS / f"{stem}.png").is_file() else ""


def section_memory() -> str:
    data, stem = pick("memory")
    if not data:
        return "## 1. Memory over an hour\n\nNot run yet.\n"
    s = data["settings"]
    lines = [f"## 1. Memory over {s['video_seconds'] // 60} minutes of video (`bench_memory.py`)\n", header(data),
             f"`tiny-random` (random SmolVLM, {s['tokens_per_frame']} image tokens per frame, "
             f"{s['max_positions']} positions), {s['frame_size']} px frames at {s['fps']} fps, chunks of "
             f"{s['chunk_frames']} frames, budget {s['budget']} tokens per layer; one subprocess per policy.\n",
             "| policy | video covered | KV bytes max | RSS at 10% of video | RSS at end | RSS growth after 10% | wall |",
             "|---|---|---|---|---|---|---|"]
    for p, r in data["summary"].items():
        stop = f" (stopped: BudgetError at {r['stopped']['video_time_s']:.0f} s)" if r["stopped"] else ""
        lines.append(f"| {p} | {r['video_s_covered']:.0f} s{stop} | {r['kv_bytes_max'] / 1024:.0f} KiB | "
                     f"{r['rss_mb_at_10pct']:.0f} MiB | {r['rss_mb_end']:.0f} MiB | "
                     f"{r['rss_growth_mb_after_10pct']:+.1f} MiB | {r['wall_s']:.0f} s |")
    return "\n".join(lines) + "\n\n" + img(stem)


def section_decode(only: str | None = None) -> str:
    data, stem = (common.read_json(only), only) if only else pick("decode")
    if not data:
        return "" if only else "## 2. Decode speed\n\nNot run yet.\n"
    pts = data["points"]
    lengths = data["settings"]["lengths"]
    labels = list(dict.fromkeys(p["label"] for p in pts))
    title = "### Quick rerun (`--quick`)" if only else "## 2. Decode speed against context length (`bench_decode.py`)"
    lines = [f"{title}\n", header(data),
             f"SmolLM2-135M-Instruct, float32. Fill: {data['settings']['fill']}. Timing: "
             f"{data['settings']['timing']}; {data['settings']['rounds']} rounds. Cells: mean ms per token "
             "(speed-up vs the full cache in the same rounds; compression ms per step).\n",
             "| config | " + " | ".join(f"{L // 1024}k" for L in lengths) + " |",
             "|---|" + "---|" * len(lengths)]
    for lab in labels:
        cells = []
        for L in lengths:
            p = next((q for q in pts if q["label"] == lab and q["context"] == L), None)
            cells.append("-" if not p else f"{p['mean_ms']:.0f} ms (x{p['speedup_vs_full']:.2f}; {p['compress_ms_per_step']:.0f})")
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    if any(lab.startswith("dynamic@") for lab in labels):
        lines.append("\n`dynamic@N%`: transformers' own `DynamicCache` holding the budget's tokens, no policy: the "
                     "fastest any cache of that size decodes on this machine, so the ceiling of every speed-up beside it.")
    goal = data["goal"]["at_8k_10pct"]
    lines.append("\nGoal: >= 1.5x at 8k context and 10% budget. Measured: "
                 + ", ".join(f"{k} x{v}" for k, v in goal.items()) + ".\n")
    return "\n".join(lines) + "\n" + img(stem)


def section_ingest(only: str | None = None) -> str:
    data, stem = (common.read_json(only), only) if only else pick("ingest")
    if not data:
        return "" if only else "## 3. Ingest throughput\n\nNot run yet.\n"
    title = "### Quick rerun (`--quick`)" if only else "## 3. Ingest throughput and compression share (`bench_ingest.py`)"
    lines = [f"{title}\n", header(data),
             "Frames per second = 4 / mean chunk time; real-time factor at 1 fps = mean chunk time / 4 s "
             "(below 1 keeps up with a live 1 fps stream); compression share = time inside `observe` (scoring + "
             "compression) and other `compress` calls / chunk time. All configurations of a model ingest the "
             "same chunks round-robin.\n"]
    for key in ("tiny_random", "tiny", "lm_135m"):
        run = data.get(key)
        if not run:
            continue
        if "results" not in run:
            lines.append(f"**{key}**: not available ({run.get('reason')}).\n")
            continue
        lines.append(f"**{run['model']}**, budget {run['budget']}, {run['tokens_per_frame']} tokens per frame"
                     + (f"; {run['prefill']}" if "prefill" in run else "") + "\n")
        lines += ["| config | frames/s | real-time factor | compression share | vs full | note |", "|---|---|---|---|---|---|"]
        for lab, r in run["results"].items():
            if "fps" not in r:
                lines.append(f"| {lab} | - | - | - | - | stopped at {r.get('stopped_at_s')} s |")
                continue
            note = f"stopped at {r['stopped_at_s']:.0f} s (BudgetError)" if r.get("stopped_at_s") is not None else ""
            vs = f"x{r['speed_vs_full']:.2f}" if "speed_vs_full" in r else "-"
            lines.append(f"| {lab} | {r['fps']:.2f} | {r['realtime_factor_1fps']:.3f} | "
                         f"{100 * r['compress_share']:.1f}% | {vs} | {note} |")
        lines.append("")
    return "\n".join(lines) + "\n" + img(stem)


def section_captions() -> str:
    data, stem = pick("captions")
    if not data:
        return "## 5. Caption needles\n\nNot run yet.\n"
    s = data["settings"]
    lines = ["## 5. Quality with a real LM: caption needles (`bench_captions.py`)\n", header(data),
             f"{s['model']}; stream of {s['captions']} captions = {s['stream_tokens']} tokens, "
             f"{len(s['needles'])} needles at depths "
             + ", ".join(f"{n['depth']:.2f}" for n in s["needles"])
             + f". Example question: \"{s['questions'][0]}\". Accuracy: {s['accuracy']}. KL: {s['kl']}.\n",
             "| config | budget tokens | accuracy | p(correct) | greedy text right | agrees with full | KL first token |",
             "|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['label']} | {r['budget'] or r['kv_tokens']} | {r['accuracy']:.2f} | "
                     f"{r.get('p_correct_mean', float('nan')):.2f} | {r.get('accuracy_greedy_text', float('nan')):.2f} | "
                     f"{r['agree_with_full']:.2f} | {r['kl_first_token_mean']:.3f} |")
    return "\n".join(lines) + "\n\n" + img(stem)


def section_needle() -> str:
    data, stem = pick("needle")
    if not data:
        return "## 4. Needle in a video haystack\n\nNot run yet.\n"
    head = f"## 4. Needle in a video haystack, trained `tiny` (`bench_needle.py`)\n\n{header(data)}\n"
    if not data.get("available"):
        return head + f"**Not available**: `load_model(\"tiny\")` failed: {data['reason']}. The script is ready " \
                      "and runs as soon as the trained weights are committed.\n"
    st, edges = data["settings"], data["settings"]["depth_bins"]
    bins = [f"{edges[i]:.2f}-{edges[i + 1]:.2f}" for i in range(len(edges) - 1)]
    lines = [head, f"Reference videos: {st['video_seconds']} s, seeds {st['seeds']}, five needles each. Accuracy by "
             "needle depth (share of the video before the needle first shows):\n",
             "| policy | budget | " + " | ".join(bins) + " | all |", "|---|---|" + "---|" * (len(bins) + 1)]

    def overall(policy, frac, video):
        rows = [r["correct"] for r in data["results"] if r["policy"] == policy and r["fraction"] == frac
                and r.get("video", "reference") == video]
        return f"{sum(rows)}/{len(rows)}" if rows else "-"

    for policy, grid in data["accuracy_grid"].items():
        fracs = [None] if policy == "full" else st["fractions"]
        for j, frac in enumerate(fracs):
            cells = ["-" if row[j] is None else f"{row[j]:.2f}" for row in grid]
            lines.append(f"| {policy} | {'full' if frac is None else f'{frac:.0%}'} | " + " | ".join(cells)
                         + f" | {overall(policy, frac, 'reference')} |")
    if st.get("long_seconds"):
        lines += ["", f"One {st['long_seconds'] // 60}-minute video, each bounded policy at {st['long_budget']} tokens "
                  "per layer (10% of the reference stream):\n",
                  "| policy | stopped | " + " | ".join(bins) + " | all |", "|---|---|" + "---|" * (len(bins) + 1)]
        for policy, info in data["long"].items():
            grid = data["long_accuracy_grid"].get(policy)
            stop = "-" if info["stopped_at_s"] is None else f"BudgetError at {info['stopped_at_s']:.0f} s"
            cells = ["-" if not grid or row[0] is None else f"{row[0]:.2f}" for row in (grid or [[None]] * len(bins))]
            lines.append(f"| {policy} | {stop} | " + " | ".join(cells) + f" | {overall(policy, None, 'long')} |")
    return "\n".join(lines) + "\n\n" + img(stem)


def section_table() -> str:
    data, stem = pick("table")
    if not data:
        return "## 6. Policy table\n\nNot run yet.\n"
    s = data["settings"]
    return (f"## 6. Policy table (`bench_table.py`)\n\n{header(data)}\nDecode speed-up at {s['decode_context']} tokens "
            f"(full cache {s['full_decode_ms']:.0f} ms/token), {s['rounds']} round-robin rounds; ingest share from "
            f"`{s['sources']['ingest']}`; caption scores from `{s['sources']['captions']}`.\n\n"
            + data["markdown"] + "\n" + img(stem))


def section_profile() -> str:
    """Issue 18, goal 1: compression share per phase, before and after, and end to end against a free cut."""
    data = common.read_json("kv_profile")
    if not data:
        return "## 8. Compression cost by phase\n\nNot run yet.\n"
    phases = ["scoring", "priority", "select+gather+bookkeeping", "merge", "rotate", "compiled k/v cut"]

    def table(d: dict, end_to_end: bool) -> str:
        head = "| budget | config | chunk ms | compression share | " + " | ".join(phases)
        head += (" | attention (not compression) | chunk time vs no-cut |" if end_to_end else " |")
        lines = [head, "|" + "---|" * (head.count("|") - 1)]
        for budget, rows in d["results"].items():
            for label, r in rows.items():
                if label == "no-cut":
                    continue
                cells = [budget, label, f"{r['chunk_ms']:.0f}", f"**{100 * r['observe+compress_share']:.1f}%**"]
                cells += [f"{100 * r.get(p + '_share', 0):.1f}%" for p in phases]
                if end_to_end:
                    cells += [f"{100 * r.get('attention_share', 0):.1f}%", f"{100 * r['overhead_vs_no_cut']:+.1f}%"]
                lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    out = (f"## 8. Compression cost by phase (`kv_profile.py`)\n\n{header(data)}\n"
           "SmolLM2-135M-Instruct with synthetic image embeddings (as in section 3), chunks of 256 tokens, every "
           "cache pre-filled to its budget; configurations round-robin, means over the timed chunks. Compression "
           "share = time inside `observe` + `compress` / chunk time; the phases are timers around the functions "
           "`kv_layer` calls. `compiled k/v cut`: the one compiled loop (`kv_kernels.cut_kv`, numba) that gathers the "
           "kept keys and values, merges the evicted ones and re-rotates the keys on the CPU, where `merge` and "
           "`rotate` were separate tensor functions before; labels `+tensorops` run those instead (`compiled=False`) "
           "in the same run. `attention`: the whole attention call of the scored layers, which now computes "
           "the observation window's rows itself (their softmax is their output and the scores; SDPA does the "
           "other rows): attention work, not compression, and no longer a separate scoring pass. `no-cut`: a plain DynamicCache of the same length cropped "
           "back after every chunk (a cut that costs nothing); `chunk time vs no-cut` is the whole overhead "
           "end to end, noisy on a shared machine.\n\n" + table(data, True))
    subsections = (  # (results stem, title, what differs, with the end-to-end columns)
        ("kv_profile_gap", "Position gaps left open (`max_gap`, labels `+gap`: up to the budget)",
         "Each configuration with the default (`max_gap` 0: every cut re-rotates the kept keys to 0..K-1) and "
         "with `+gap` (kept keys keep their positions until the empty positions exceed the budget; new keys and "
         "queries move by the layer's shift), round-robin in one run.\n\n", True),
        ("kv_profile_gap_slack", "Gaps left open and a cut every other chunk (labels `+gap+slack256`)",
         "`chunk_slack` 256: a cut goes 256 tokens below the budget, so the next 256-token chunk appends without "
         "one (a layer holds budget - 256 to budget tokens); with `max_gap` up to the budget. `combined/pivot` "
         "at the defaults runs beside them for reference.\n\n", True),
        ("kv_profile_compiled", "The compiled cut beside position gaps left open (labels `+gap`; an earlier run the same morning)",
         "With the compiled loop the turn rides on the copy, so leaving gaps open saves little.\n\n", True),
        ("kv_profile_round2", "Round 2 of issue 18 (tensor operations only; 2026-11-29, on a slower machine)", "", True),
        ("kv_profile_round1", "Round 1 of issue 18 (the implementation of `1891958`: fused scoring, top-E selection, "
         "merge window 512 in blocks)", "", True),
        ("kv_profile_before", "Before (the implementation of `d3cb9f2`)", "", False),
    )
    for stem, title, text, end_to_end in subsections:
        sub = common.read_json(stem)
        if sub:
            out += f"\n### {title}\n\n{header(sub)}\n{text}" + table(sub, end_to_end)
    return out


def section_equivalence() -> str:
    out = "## 9. Answers before and after (`kv_equivalence.py`)\n"
    for name in ("kv_equivalence_compiled", "kv_equivalence_cut", "kv_equivalence_window", "kv_equivalence", "kv_equivalence_gap",
                 "kv_equivalence_gap_slack"):
        data = common.read_json(name)
        if not data:
            continue
        s = data["settings"]
        lines = ["| config@budget | KL(base ‖ new) | KL(full ‖ base) | KL(full ‖ new) | same first token |",
                 "|---|---|---|---|---|"]
        for label, r in data["results"].items():
            lines.append(f"| {label} | **{r['kl_base_new']:.4f}** | {r['kl_full_base']:.4f} | {r['kl_full_new']:.4f} | "
                         f"{r['same_top1']:.2f} |")
        new = f"; new side: {', '.join(s['new_options'])}" if s.get("new_options") else ""
        out += (f"\n### Base: {s['base']}{new}\n\n{header(data)}\n"
                f"Base and this tree stream the same {s['prompts']} retrieval prompts ({s['lines']}-line logs, chunks of "
                f"{s['chunk']} tokens) through SmolLM2-135M; first-answer-token KL in nats, mean over prompts. "
                "KL(full ‖ base) is how far the bounded cache already was from the full cache: the scale for "
                "\"within noise\".\n\n" + "\n".join(lines) + "\n")
    return out


TASK_WORDS = {
    "needle": "one 4-digit code in a timestamped system log",
    "multikey": "the asked code among four codes of the same form in a timestamped system log",
    "captions": "a plate number in one caption of a timestamped caption stream (the text of a live video), asked later",
}


def section_retrieval() -> str:
    """Section 10 from `bench_retrieval.py --report` files (retrieval_<task>.json), one table per task."""
    out = ("## 10. Keeping what a later question needs: text retrieval beside kvpress (`bench_retrieval.py`)\n\n"
           "SmolLM2-135M-Instruct, the question after the context (never inside it), right = the greedy answer starts "
           "with the code; the same prompts, token ids and weights on both sides. Ours `/stream`: the context arrives "
           "in chunks of 256 tokens and the cache stays within budget all along (what the product does); `/prefill`: "
           "one pass, then the cut (what kvpress does; a composition that scores without attention is cut from the "
           "full cache's keys and values, which `bench_retrieval.py` checks equals a forward pass on the first prompt). "
           "kvpress: each press during the context prefill (its scorer presses applied to one captured prefill per "
           "prompt, checked to give the same tokens and KL as a prefill per press). Budgets are shares of each "
           "prompt's context tokens. Intervals: 95% Wilson; p: exact McNemar on the paired prompts, our best against "
           "kvpress's best of the same budget. `prefill s` of a cut from a shared prefill is the cut alone.\n")
    for task, words in TASK_WORDS.items():
        data = common.read_json(f"retrieval_{task}")
        if not data:
            continue
        out += f"\n### {task}: {words}\n\n"
        out += (f"Commands: `bench_retrieval.py --side ours --task {task} --prompts 50 ...`, `--side kvpress`, then "
                f"`--report --task {task}`; {data['prompts']} prompts, "
                f"{data['settings'].get('context_tokens_mean', 0):.0f} context tokens on average. "
                f"kvpress {(data.get('kvpress_versions') or {}).get('kvpress', '?')}.\n\n")
        out += "| budget / mode | our best | kvpress's best | points | only ours / only kvpress | p |\n|---|---|---|---|---|---|\n"
        for cell, c in data["cells"].items():
            if "best_kvpress" in c:
                out += (f"| {cell} | {c['best_ours']} {c['best_ours_accuracy']:.2f} | {c['best_kvpress']} "
                        f"{c['best_kvpress_accuracy']:.2f} | {c['points']:+.1f} | {c['only_ours']} / {c['only_kvpress']} | "
                        f"{c['p_value']} |\n")
        out += "\n| side | config | right | accuracy [95% Wilson] | KL first token | KV tokens |\n|---|---|---|---|---|---|\n"
        for side in ("ours", "kvpress"):
            for name, r in data[side].items():
                out += (f"| {side} | {name} | {r['right']}/{r['n']} | {r['accuracy']:.2f} [{r['wilson95'][0]:.2f}, "
                        f"{r['wilson95'][1]:.2f}] | {r['kl_first']:.3f} | {r['kv_tokens']:.0f} |\n")
        out += "\n" + img(f"retrieval_{task}")
    return out


def section_quality() -> str:
    """Every quality-suite run (bench/results/quality*.json): one row per configuration, with kinds."""
    files = sorted(common.RESULTS.glob("quality*.json"))
    if not files:
        return ""
    out = ("## 11. Quality suite (`quality.py`)\n\nExact answers on held-out synthetic videos through `StreamSession`, "
           "95% Wilson intervals; `kept`: answers whose object still had image tokens in the cache at the question.\n")
    for path in files:
        data = common.read_json(path.stem)
        out += f"\n### {path.stem} (model `{data['model']}`, weights {data.get('weights')}, {data['dtype']})\n\n{header(data)}\n"
        out += "| task | video | policy | budget | options | right / n | accuracy [95% CI] | videos | object in cache: right / n (mean fraction kept) |\n"
        out += "|---|---|---|---|---|---|---|---|---|\n"
        full = [x for x in data["results"] if x["policy"] == "full" and not x.get("skip")]
        for r in data["results"]:
            a = r["summary"]["all"]
            opts = ", ".join(x for x in (r.get("world") if r.get("world") != "clean" else "",
                                         f"redundancy {r['redundancy']}" if r.get("redundancy") is not None else "",
                                         "skip" if r.get("skip") else "") if x) or "-"  # fmt: skip
            kept = r["summary"].get("needle_in_cache")
            video = "-" if r["seconds"] is None else f"{r['seconds']:g} s"
            kept_text = f"{kept['right']} / {kept['n']} (mean {r['summary']['mean_kept']:.2f})" if kept else "-"
            accuracy = a["accuracy"] if a["n"] else float("nan")
            out += (f"| {r['task']} | {video} | {r['policy']} | {r['budget_tokens'] or 'full'} | {opts} | "
                    f"{a['right']} / {a['n']} | {accuracy:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}] | "
                    f"{a['videos']} | {kept_text} |\n")
            kinds = r["summary"]["by_kind"]
            if len(kinds) > 1:
                out += "".join(f"| | | | | {k} | {v['right']} / {v['n']} | {v['accuracy']:.3f} [{v['ci95'][0]:.3f}, "
                               f"{v['ci95'][1]:.3f}] | | |\n" for k, v in kinds.items())  # fmt: skip
            ref = next((f for f in full if f is not r and all(f.get(k) == r.get(k) for k in ("task", "seconds", "world"))),
                       None)
            pair = paired(ref, r) if ref else None
            if pair:
                out += (f"| | | | | paired with the full cache (same {pair['n']} questions) | both right {pair['both']}, "
                        f"only full {pair['only_reference']}, only this {pair['only_this']} | McNemar p = "
                        f"{pair['p_value']:.2f} | | |\n")
            if "repeats_first_answer" in r["summary"]:
                rep = r["summary"]["repeats_first_answer"]
                out += f"| | | | | later answers repeating a wrong first answer | {rep['count']} / {rep['n']} | | | |\n"
    return out


def section_real_models() -> str:
    """Real-size speed (bench_real_models.py): one row per run, each with its own date and load, then the
    hand-written notes of bench/results/real_models.md."""
    data = common.read_json("real_models")
    if not data:
        return read_text("real_models.md")
    out = ("## 7. Real-size models, random weights (`bench_real_models.py`)\n\n"
           f"Frames {data['frame_hw'][1]}x{data['frame_hw'][0]} at 1 fps in chunks of 2, policy combined, budget "
           f"10% of a {data['stream_s_for_budget'] // 60}-minute stream's tokens. Runs accumulate across commands; the "
           f"last command was `{data['command']}`.\n\n"
           "| stands for | dtype | threads | cache at budget first | s/frame | vision s/frame | LM + cache s/frame | "
           "real-time factor at 1 fps | question prefill s | decode ms/token | KV at question | RSS / peak GiB | "
           "date, load average |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    for r in data["runs"]:
        if "skipped" in r:
            out += f"| {r['family']} | {r['dtype']} | | | skipped: {r['skipped']} | | | | | | | | |\n"
            continue
        out += (f"| {r['stands_for']} ({r['params_m']:.0f} M) | {r['dtype']} | {r.get('threads', 2)} | "
                f"{'yes' if r.get('cache_filled_first', True) else 'no (empty cache)'} | {r['s_per_frame']} | "
                f"{r['vision_s_per_frame']} | {r['lm_s_per_frame']} | {r['real_time_factor_1fps']} | "
                f"{r['question_prefill_s']} | {r['decode_ms_per_token']} | {r['kv_tokens']} tokens, {r['kv_mb']} MB | "
                f"{r['rss_gb']} / {r['peak_rss_gb_process']} | {r.get('date', data['machine']['date'])}, "
                f"{r.get('load_average_start', data['machine']['load_average'])[0]} |\n")
    return out + "\n" + read_text("real_models.md")


def section_skip() -> str:
    data, stem = pick("skip")
    if not data:
        return ""
    out = f"## 12. Skipping unchanged frames (`bench_skip.py`)\n\n{header(data)}\n"
    out += (f"{data['seconds']} s of {data['camera']} camera footage, {data['events']} objects, tiny, combined at "
            f"{data['budget']} tokens. Speed-up with the skip: **{data['speedup']:.2f}x**.\n\n"
            "| skip | frames fed / sampled | wall s (median) | frames/s | real-time factor | KV bytes at end |\n|---|---|---|---|---|---|\n")
    for name in ("off", "on"):
        r = data[name]
        out += (f"| {name} | {r['frames_fed']} / {r['frames_sampled']} | {r['median_wall_s']} | {r['frames_per_s']} | "
                f"{r['real_time_factor']} | {r['kv_bytes_at_end']} |\n")
    return out


# Stage-W2 one-needle runs under the current redundancy rule (a frame's text takes the lower quartile of its
# image tokens' similarities): file -> the policies taken from it (None: every row). Earlier files of the same
# model whose bounded rows ran under the rule before (the least similarity) give only their full-cache rows.
MATRIX_SOURCES = {
    "quality_stage_w2_needle": {"full"}, "quality_stage_w2_needle_noisy": {"full"},
    "quality_stage_w2_needle_quartile": None, "quality_stage_w2_needle_textprior_quartile": None,
    "quality_stage_w2_needle_noisy_quartile": None, "quality_stage_w2_needle_noisy_10pct_quartile": None,
    "quality_stage_w2_needle_noisy_5pct": None, "quality_stage_w2_needle_hour": None,
    "quality_stage_w2_needle_noisy_hour": None,
}


def section_redundancy_matrix() -> str:
    """One table of the stage-W2 one-needle runs: world x policy x signal against the budget (issue 16)."""
    stems = list(MATRIX_SOURCES) + sorted(p.stem for p in common.RESULTS.glob("quality_stage_w2_matrix_*.json"))
    cells, dates, used = {}, [], []
    for stem in stems:
        data = common.read_json(stem)
        if not data:
            continue
        used.append(stem)
        dates.append(data["machine"]["date"][:16])
        for r in data["results"]:
            if MATRIX_SOURCES.get(stem) and r["policy"] not in MATRIX_SOURCES[stem]:
                continue
            if r["policy"] == "full":
                row, col = ("full cache + skip" if r.get("skip") else "full cache"), "full"
            else:
                row = f"{r['policy']}, signal {'on' if r.get('redundancy') is not None else 'off'}"
                col = ("1 h" if r.get("skip") else "1 h, no skip") if r["seconds"] >= 3600 else f"{r['budget']:.0%}"
            a = r["summary"]["all"]
            cells[(r.get("world", "clean"), row, col)] = f"{a['right']}/{a['n']} [{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}]"
    if not cells:
        return ""
    cols = ["full", "10%", "5%", "2%", "1 h", "1 h, no skip"]
    out = ("## 13. Redundancy matrix: one needle, stage-W2 `tiny`, 40 held-out videos per cell (`quality.py`)\n\n"
           "Right answers / questions [95% Wilson] on the same 40 held-out one-needle videos of 5 minutes (1 h: the "
           "same videos stretched to 60 minutes, 750 tokens, frame skip on, or off in the last column, where fewer "
           "videos ran); budgets are fractions of the full "
           "cache's 7,503 tokens; signal on = redundancy threshold 0.9 with the lower-quartile rule for a frame's "
           f"text tokens. Runs {min(dates)} .. {max(dates)} UTC; files: {', '.join(f'`{s}`' for s in used)}; "
           "the per-file sections above give each command, machine and the paired tests. Empty cell: not run.\n\n"
           "| world | configuration | " + " | ".join(cols) + " |\n|---|---|" + "---|" * len(cols) + "\n")
    for world in ("clean", "noisy"):
        rows = list(dict.fromkeys(r for (w, r, _) in cells if w == world))
        rows.sort(key=lambda r: (not r.startswith("full"), r))
        for row in rows:
            out += f"| {world} | {row} | " + " | ".join(cells.get((world, row, c), "") for c in cols) + " |\n"
    return out


def read_text(name: str) -> str:
    """A hand-written section kept in bench/results/ (its numbers come from a JSON there too)."""
    path = common.RESULTS / name
    return path.read_text() if path.is_file() else ""


def report() -> None:
    parts = ["# Benchmarks\n",
             "Produced by the scripts in `bench/` (each section: command, machine, date). Regenerate this file "
             "with `.venv/bin/python bench/run_all.py --report`; rerun everything with "
             "`.venv/bin/python bench/run_all.py [--quick]`. Each section's header says whether the machine was "
             "quiet or shared with other jobs (then absolute times are slow and noisy); every speed comparison is a ratio within one run "
             "(configurations interleaved round-robin; decode steps as means over whole compression periods, ingest chunks as means).\n",
             section_memory(), section_decode(), section_decode("decode_quick") if common.read_json("decode") else "",
             section_ingest(), section_ingest("ingest_quick") if common.read_json("ingest") else "",
             section_needle(), section_captions(), section_table(), section_real_models(), section_profile(),
             section_equivalence(),
             section_retrieval(), section_quality(), section_skip(), section_redundancy_matrix()]
    findings = common.RESULTS / "findings.md"
    if findings.is_file():
        parts.insert(2, findings.read_text())
    (common.ROOT / "BENCHMARKS.md").write_text("\n".join(parts))
    print("wrote BENCHMARKS.md")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="*", choices=ORDER, help="run these benchmarks only")
    ap.add_argument("--report", action="store_true", help="only rewrite BENCHMARKS.md from bench/results/")
    args = ap.parse_args()
    if not args.report:
        start = time.perf_counter()
        took = run(args.only or ORDER, args.quick)
        print(f"total {time.perf_counter() - start:.0f} s: " + ", ".join(f"{k} {v[0]:.0f} s" for k, v in took.items()))
    report()


if __name__ == "__main__":
    main()
