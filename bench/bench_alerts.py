"""Standing questions ("tell me when ..."): how right, how soon and how costly the alerts are.

    .venv/bin/python bench/bench_alerts.py --videos 10 --threads 1                  # 5-minute videos, clean + noisy
    .venv/bin/python bench/bench_alerts.py --videos 0 --empty-seconds 3600          # an hour with no object
    .venv/bin/python bench/bench_alerts.py --videos 0 --cost                        # seconds per chunk per question
    .venv/bin/python bench/bench_alerts.py --videos 0 --cost-real smolvlm           # the same, SmolVLM2-256M-sized

Every alert goes through the product's path: `load_model` -> `StreamSession` (1 fps, chunks of 4 frames,
frame skip off) with `watch()`ed questions -> `session.alerts`. Videos are held-out synthetic worlds
(seeds from `SEED` on, never trained on): 5 minutes, five objects of 2-5 s (distinct colours and digits),
clean and with the noisy camera. Each video watches one question per object ("Is there a red circle on
screen?" or, for every other object, "Is the digit 7 on screen?") and three about objects that never
appear (two colour-and-shape, one digit), all at once.

Scoring (`world.presence` defines "on screen": a frame of the last 4 s): an alert is right when its
object was on a sampled frame in the 4 s before the alert; the first right alert of an occurrence counts,
later ones for the same occurrence and all others are false. Recall: occurrences with a right alert;
precision: right alerts over alerts; delay: alert time minus the first sampled frame that showed the
object. Intervals: 95% Wilson for proportions, exact Poisson for false alerts per hour.
Deliberately not here: training the model to answer (train/), the debounce itself (`streamer/watch.py`).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import common
from common import setup, wilson, write_json
from tqdm import tqdm

SEED = 11_100_000  # held-out world seeds of this benchmark (training draws seeds below 10,000,000)
ABSENT = 3  # questions per video about objects that never appear


def lookouts(script, rng) -> tuple[list, list]:
    """(questions about the video's objects, questions about objects it never shows)."""
    from streamer.world.presence import Lookout
    from streamer.world.scene import COLOURS, DIGITS, SHAPES

    objects = [e.obj for e in script.events]
    present = [Lookout.of(o, by_digit=i % 2 == 1) for i, o in enumerate(objects)]
    pairs = [(c, s) for c in COLOURS for s in SHAPES if all((o.colour, o.shape) != (c, s) for o in objects)]
    digits = [d for d in DIGITS if all(o.digit != d for o in objects)]
    absent = [Lookout(*pair) for pair in rng.sample(pairs, ABSENT - 1)] + [Lookout(digit=rng.choice(digits))]
    return present, absent


def run_video(adapter, script, questions: list, policy: str, budget: int | None) -> tuple[list, dict]:
    """Stream `script` at 1 fps with `questions` watched; (alerts, session stats)."""
    from streamer.frames import SamplerConfig, chunk_frames
    from streamer.kv_window import WindowConfig
    from streamer.session import StreamSession

    session = StreamSession(adapter, WindowConfig(policy=policy, budget=budget), skip=None)
    for q in questions:
        session.watch(q)
    trace = []  # (time, confidence of each question) of every check: the alerts at any threshold
    for chunk in chunk_frames(script.frames(1.0), SamplerConfig(fps=1.0, chunk_frames=4)):
        session.ingest(chunk)
        trace.append((session.video_time_s, [round(session.watcher.last[q], 4) for q in questions]))
    return session.alerts, {**session.stats(), "trace": trace}


def alerts_at(trace: list, questions: list[str], threshold: float) -> list:
    """The alerts a check trace gives at `threshold` (the debounce of `streamer.watch.Watcher`)."""
    from streamer.watch import Alert, debounce

    on, alerts = dict.fromkeys(questions, False), []
    for t, confidences in trace:
        for q, c in zip(questions, confidences):
            fires, on[q] = debounce(on[q], c, threshold)
            if fires:
                alerts.append(Alert(q, "yes", t, c))
    return alerts


def score(script, present: list, absent: list, alerts: list) -> dict:
    """Right and false alerts, occurrences found and their delays, for one video."""
    from streamer.world.presence import on_screen

    by_question = {lk.question: lk for lk in present + absent}
    occurrences = [(lk, e) for lk in present for e in script.events if lk.matches(e.obj)]
    found, delays, false = set(), [], 0
    for a in alerts:
        lk = by_question[a.question]
        hit = next((i for i, (l2, e) in enumerate(occurrences) if l2 == lk and i not in found
                    and on_screen(script, lk, a.video_time_s) and e.start_s <= a.video_time_s < e.end_s + 4), None)
        if hit is None:
            false += 1
        else:
            found.add(hit)
            delays.append(a.video_time_s - script.first_seen(occurrences[hit][1], 1.0))
    return {"alerts": len(alerts), "right": len(found), "false": false, "occurrences": len(occurrences),
            "delays": delays}


def poisson_ci(k: int, exposure: float) -> tuple[float, float]:
    """Exact 95% interval of a Poisson rate with `k` events in `exposure` (bisection on the CDF)."""
    def cdf(x: int, mu: float) -> float:
        if x < 0:
            return 0.0
        if mu <= 0:
            return 1.0
        return sum(math.exp(-mu + i * math.log(mu) - math.lgamma(i + 1)) for i in range(x + 1))  # logs: no overflow

    def solve(f, lo=0.0, hi=1000.0):
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
        return (lo + hi) / 2

    low = 0.0 if k == 0 else solve(lambda mu: 0.025 - (1 - cdf(k - 1, mu)))
    high = solve(lambda mu: cdf(k, mu) - 0.025)
    return low / exposure, high / exposure


def summarise(rows: list[dict], hours: float) -> dict:
    right = sum(r["right"] for r in rows)
    alerts = sum(r["alerts"] for r in rows)
    occ = sum(r["occurrences"] for r in rows)
    false = sum(r["false"] for r in rows)
    delays = sorted(d for r in rows for d in r["delays"])
    precision, recall = (right / alerts if alerts else 0.0), (right / occ if occ else 0.0)
    return {
        "videos": len(rows), "alerts": alerts, "right": right, "occurrences": occ, "false": false,
        "precision": precision, "precision_ci": wilson(right, alerts), "recall": recall, "recall_ci": wilson(right, occ),
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "delay_median_s": statistics.median(delays) if delays else None,
        "delay_p95_s": delays[min(len(delays) - 1, math.ceil(0.95 * len(delays)) - 1)] if delays else None,
        "false_per_hour": false / hours if hours else None, "false_per_hour_ci": poisson_ci(false, hours) if hours else None,
    }


def video(seed: int, world: str, seconds: float) -> tuple:
    """(script, questions about its objects, questions about objects it never shows) of one benchmark video."""
    import random

    from streamer.world.scene import Realism, random_script

    script = random_script(seed, duration_s=seconds, n_events=5, event_s=(2, 5),
                           realism=Realism.noisy() if world == "noisy" else None)
    return (script, *lookouts(script, random.Random(seed)))


def sweep(path: Path, thresholds=tuple(round(0.05 * k, 2) for k in range(2, 20))) -> list[dict]:
    """Precision, recall and F1 of a result file's videos at each threshold, from their check traces."""
    out = []
    for r in json.loads(path.read_text())["quality"]:
        for th in thresholds:
            rows = []
            for row in r["rows"]:
                script, present, absent = video(row["seed"], r["world"], r["seconds"])
                rows.append(score(script, present, absent, alerts_at(row["trace"], row["questions"], th)))
            summary = summarise(rows, len(rows) * r["seconds"] / 3600)
            out.append({"world": r["world"], "policy": r["policy"], "budget": r["budget"], "threshold": th, **summary})
            print(f"threshold {th:.2f} " + line(out[-1]), flush=True)
    return out


def measure_quality(adapter, args, on_row=None) -> list[dict]:
    """Every world x policy configuration; `on_row(results)` is called after each one with the results so far."""
    results = []
    configs = [(p, b) for p in args.policies.split(",") for b in ([None] if p == "full" else [args.budget])]
    for world in args.worlds.split(","):
        for policy, budget in configs:
            rows = []
            for i in tqdm(range(args.videos), desc=f"{world} {policy}", disable=None):
                seed = args.seed + i
                script, present, absent = video(seed, world, args.seconds)
                alerts, stats = run_video(adapter, script, [lk.question for lk in present + absent], policy, budget)
                row = score(script, present, absent, alerts)
                row.update(seed=seed, alert_list=[a.to_json() for a in alerts], watch_seconds=stats["watch_seconds"],
                           ingest_seconds=stats["ingest_seconds"], questions=[lk.question for lk in present + absent],
                           trace=stats["trace"])
                rows.append(row)
            results.append({"world": world, "policy": policy, "budget": budget, "seconds": args.seconds,
                            **summarise(rows, len(rows) * args.seconds / 3600), "rows": rows})
            print(line(results[-1]), flush=True)
            if on_row:
                on_row(results)
    return results


def measure_empty(adapter, args) -> dict:
    """An hour (or `--empty-seconds`) with no object: every alert is false."""
    from streamer.world.presence import Lookout
    from streamer.world.scene import Realism, random_script

    script = random_script(SEED - 1, duration_s=args.empty_seconds, n_events=0, realism=Realism.noisy())
    questions = [Lookout("red", "circle").question, Lookout("blue", "square").question,
                 Lookout(digit="7").question, Lookout(digit="3").question]
    alerts, stats = run_video(adapter, script, questions, "combined", args.budget)
    hours = args.empty_seconds / 3600
    return {"world": "noisy, no object", "policy": "combined", "budget": args.budget, "seconds": args.empty_seconds,
            "questions": questions, "false": len(alerts), "false_per_hour": len(alerts) / hours,
            "false_per_hour_ci": poisson_ci(len(alerts), hours), "alert_list": [a.to_json() for a in alerts],
            "watch_seconds": stats["watch_seconds"], "ingest_seconds": stats["ingest_seconds"],
            "kv_tokens": stats["kv_tokens"], "peak_kv_bytes": stats["peak_kv_bytes"]}


def measure_cost(adapter, label: str, counts: list[int], chunks: int, budget: int) -> dict:
    """Seconds per 4-frame chunk with N standing questions (N in `counts`, interleaved chunk by chunk, after
    the cache reached its budget), and the share of a chunk's ingest each question adds."""
    from streamer.frames import SamplerConfig, chunk_frames
    from streamer.kv_window import WindowConfig
    from streamer.session import StreamSession
    from streamer.world.presence import Lookout
    from streamer.world.scene import COLOURS, SHAPES, random_script

    fill = math.ceil(budget / (adapter.tokens_per_frame + 10))  # frames until the cache is at its budget
    script = random_script(SEED - 2, duration_s=4 * chunks + fill + 12, n_events=4, distinct=False)
    all_chunks = list(chunk_frames(script.frames(1.0), SamplerConfig(fps=1.0, chunk_frames=4)))
    questions = [Lookout(c, s).question for c in COLOURS for s in SHAPES]
    sessions = {}
    for n in counts:
        s = StreamSession(adapter, WindowConfig(policy="combined", budget=budget), skip=None)
        for q in questions[:n]:
            s.watch(q)
        sessions[n] = s
    times = {n: [] for n in counts}
    for k, chunk in enumerate(tqdm(all_chunks, desc=f"cost {label}", disable=None)):
        for n, s in sessions.items():
            start = time.perf_counter()
            s.ingest(chunk)
            if s.cache.get_seq_length() >= budget and k >= len(all_chunks) - chunks:
                times[n].append(time.perf_counter() - start)
    base = statistics.median(times[0]) if 0 in times else None
    rows = []
    for n in counts:
        med = statistics.median(times[n])
        rows.append({"watches": n, "chunk_s": med, "n_chunks": len(times[n]),
                     "per_question_share": (med - base) / base / n if base and n else None})
    # a chunk is 4 s of video at 1 fps: watches that keep up = what fits in the 4 s after the ingest itself
    slope = ((rows[-1]["chunk_s"] - base) / counts[-1]) if base and counts[-1] else None
    keep_up = math.floor((4.0 - base) / slope) if slope and base < 4.0 else 0
    return {"model": label, "budget": budget, "rows": rows, "per_question_s": slope, "ingest_s": base,
            "watches_keeping_up_at_1fps": keep_up}


def line(r: dict) -> str:
    f = lambda ci: f"[{ci[0]:.2f}, {ci[1]:.2f}]"  # noqa: E731
    return (f"{r['world']:6} {r['policy']:9} budget {r['budget']}: precision {r['precision']:.2f} {f(r['precision_ci'])} "
            f"recall {r['recall']:.2f} {f(r['recall_ci'])} F1 {r['f1']:.2f}; delay median {r['delay_median_s']} s, "
            f"p95 {r['delay_p95_s']} s; false {r['false']} ({r['false_per_hour']:.1f}/h)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--weights", type=Path, default=None, help="tiny: other trained parts (a training checkpoint)")
    ap.add_argument("--videos", type=int, default=10, help="5-minute videos per world and policy (0: none)")
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=SEED, help="world seed of the first video (calibration: another range)")
    ap.add_argument("--sweep", type=Path, default=None, help="no run: score a result file's traces at thresholds 0.1-0.9")
    ap.add_argument("--worlds", default="clean,noisy")
    ap.add_argument("--policies", default="full,combined")
    ap.add_argument("--budget", type=int, default=750, help="tokens of the bounded policy (750: 10%% of 5 minutes)")
    ap.add_argument("--empty-seconds", type=float, default=0, help="also stream this long with no object (3600)")
    ap.add_argument("--cost", action="store_true", help="seconds per chunk with 0, 1, 2, 4, 8 standing questions")
    ap.add_argument("--cost-real", default=None, help="the same for a real-size random-weight family (smolvlm)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.sweep:  # no model: the traces of an earlier run, scored again
        rows = sweep(args.sweep)
        if args.out:
            args.out.write_text(json.dumps({"sweep_of": str(args.sweep), "sweep": rows}, indent=1))
        return
    setup(args.threads)
    started = common.machine()
    from streamer.models.registry import load_model
    from streamer.models.tiny import load_tiny

    adapter = load_tiny(weights=args.weights) if args.weights else load_model(args.model)
    out = {"model": args.model, "weights": str(args.weights or "committed"), "budget": args.budget}
    save = lambda: write_json("alerts", out, started, path=args.out)  # noqa: E731  (after each part: a long run keeps what it did)
    if args.cost:
        out["cost"] = [measure_cost(adapter, args.model, [0, 1, 2, 4, 8], 12, args.budget)]
        save()
    if args.videos:
        out["quality"] = measure_quality(adapter, args, on_row=lambda rows: (out.update(quality=rows), save()))
    if args.empty_seconds:
        out["empty"] = measure_empty(adapter, args)
        print(f"empty: {out['empty']['false']} false alerts in {args.empty_seconds:.0f} s", flush=True)
        save()
    if args.cost_real:
        import tempfile

        from streamer.models.hub_layout import write_checkpoint

        with tempfile.TemporaryDirectory() as tmp:
            write_checkpoint(args.cost_real, Path(tmp))
            real = load_model(tmp)
            out.setdefault("cost", []).append(measure_cost(real, f"{args.cost_real} (hub size, random)", [0, 1, 4], 3, args.budget))
    for c in out.get("cost", []):
        print(f"cost {c['model']}: ingest {c['ingest_s']:.2f} s per chunk, {c['per_question_s']:.3f} s per question; "
              f"{c['watches_keeping_up_at_1fps']} keep up at 1 fps", flush=True)
    save()


if __name__ == "__main__":
    main()
