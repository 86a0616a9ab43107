"""Quality suite: exact-answer accuracy of a model on held-out synthetic videos, with 95% Wilson intervals.

    .venv/bin/python bench/quality.py --quick                       # every task, small, < 5 min on 2 cores
    .venv/bin/python bench/quality.py --tasks needle --videos 40     # one needle in 5 minutes, full cache
    .venv/bin/python bench/quality.py --tasks objects --policies full,combined --budgets 0.1,0.02
    .venv/bin/python bench/quality.py --tasks objects --seconds 3600 --policies combined --budgets 750
    .venv/bin/python bench/quality.py --tasks needle --videos 28 --first 12 --out b.json  # 28 more videos, then
    .venv/bin/python bench/quality.py --merge a.json b.json --out all.json            # pool them with the first 12

Every answer goes through the product's own path: `load_model(...)` -> `StreamSession` (1 fps, chunks of
4 frames) -> greedy answer, exact match after lower-casing. The videos come from `streamer.world.scene`
with seeds from `train.data.HELD_OUT_SEED` on (never trained on); each task has its own seed range.

Tasks (a task x video length x policy x budget is one configuration; `--tasks` picks any of them):
- `frame`: one still frame; colour, shape and digit questions.
- `needle`: one object on screen 2-4 s somewhere in the video; "What digit was on the <colour> <shape>?".
- `objects`: five objects (distinct colours and digits); the digit of each, each question on its own.
- `moving`: the control for the redundancy signal: five objects as in `objects`, but each on screen for
  13-17% of the video and always drifting (at least `MIN_DRIFT` of the frame per second), so something
  moves on screen about 80% of the time; the digit of each.
- `video`: five objects; every question `video_questions` makes (needle digit, colour of a digit,
  before, after, count, when, now), each on its own, reported by kind.
- `sample`: the demo's sample video (`streamer.world.sample_video`) for held-out seeds; the questions it
  prints, each on its own, reported by kind.
- `presence`: a clip of 4-12 s (0-2 objects of 1-5 s, from anywhere in a 5-minute video) and three presence
  questions about its last 4 s ("Is there a red circle on screen?", "Is the digit 7 on screen?" -> yes / no,
  `world.presence`), asked as standing questions (`watch`): the answer is the check after the last chunk
  (yes when its confidence reaches `streamer.watch.THRESHOLD`).
- `chat`: a sample video, then five of its questions in ONE conversation (each sees the earlier
  answers); also counts answers that repeat the first answer where the truth differs.

Questions asked "on their own" are asked from a copy of the cache and chat taken after the stream, so
they never see each other. Needle-like answers (`needle`, `objects`, `needle_digit` of `video`) also
record `kept`: the fraction of the object's image tokens (over layers and heads) still in the cache when
the question was asked, so a miss can be blamed on the policy (kept 0) or on the model (kept 1).

A budget is a fraction of the full cache's tokens for that video length (0.1 = 10%) or, above 1, a token
count. The full cache stops with a BudgetError past the model's positions (recorded, no answers).
Output: a table on stdout and bench/results/quality[_quick].json (or --out) with every answer.
Deliberately not here: training (train/), plots of needle depth (bench_needle.py reads this module).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import common
from common import wilson
from streamer.options import redundancy_arg
from tqdm import tqdm

HELD_OUT = 10_000_000  # train.data.HELD_OUT_SEED: training draws world seeds below it
SEEDS = {  # first world seed of each task (needle and objects: the seeds the earlier scripts used)
    "frame": HELD_OUT, "needle": HELD_OUT + 500_000, "video": HELD_OUT + 600_000, "sample": HELD_OUT + 700_000,
    "chat": HELD_OUT + 800_000, "objects": HELD_OUT + 900_000, "moving": HELD_OUT + 1_000_000,
    "presence": HELD_OUT + 1_200_000,
}  # fmt: skip
TASKS = tuple(SEEDS)
FIXED_LENGTH = ("frame", "sample", "chat", "presence")  # tasks whose videos have their own length (a still frame, 60 s)
NEEDLE_KINDS = ("needle_digit",)
MIN_DRIFT = 0.04  # `moving`: slowest drift of an object, in frame widths per second (a width in 25 s)
FRAME_KINDS = ("colour", "shape", "digit")


def normalise(text: str) -> str:
    return " ".join(text.strip().lower().rstrip(".").split())


@dataclass(frozen=True)
class Video:
    """One held-out video of a task and the questions asked about it."""

    seed: int
    script: object  # streamer.world.scene.SceneScript
    qas: list  # [QA], in the order they are asked
    chat: bool = False  # True: asked one after the other in one conversation
    still: object = None  # the `frame` task's one Frame: only it is fed, not the script's timeline up to it
    standing: bool = False  # True: the questions are standing questions, answered by the check after the last chunk

    def frames(self) -> list:
        """What the session is fed: the one still frame, or the video at 1 fps."""
        return [self.still] if self.still is not None else list(self.script.frames(1.0))


def make_video(task: str, index: int, seconds: float, world: str = "clean") -> Video:
    """The `index`-th held-out video of `task` (`seconds` long; `frame` and `sample` ignore it); `world`
    "noisy" films it with `Realism.noisy()` (sensor noise, flicker, a panning texture, distractors)."""
    from streamer.world.sample_video import sample_script
    from streamer.world.scene import Realism, frame_questions, random_script, single_frame, video_questions

    seed = SEEDS[task] + index
    realism = Realism.noisy() if world == "noisy" else None
    if task == "frame":
        frame, script = single_frame(seed, realism=realism)
        return Video(seed, script, [q for q in frame_questions(script, frame.time_s) if q.kind in FRAME_KINDS], still=frame)
    if task in ("sample", "chat"):
        script = sample_script(60.0, seed, realism=realism)
        first = {qa.kind: qa for qa in reversed(video_questions(script))}  # what sample_video prints
        qas = list(first.values())
        return Video(seed, script, qas[:5] if task == "chat" else qas, chat=task == "chat")
    if task == "presence":
        import random

        from streamer.world.presence import presence_qa

        rng = random.Random(seed)
        n = rng.randint(4, 12)
        start, n_events = rng.randint(0, 300 - n), rng.randint(0, min(2, n // 2))
        script = random_script(seed, duration_s=start + n, n_events=n_events, event_s=(1, 5) if n >= 6 * n_events else (1, 1),
                               start_s=start, realism=realism)  # fmt: skip
        qas = {}
        for _ in range(12):
            qa = presence_qa(rng, script, script.times(1.0)[-1])
            qas.setdefault(qa.question, qa)
        return Video(seed, script, list(qas.values())[:3], standing=True)
    if task == "moving":
        script = random_script(seed, duration_s=seconds, n_events=5, event_s=(round(0.13 * seconds), round(0.17 * seconds)),
                               realism=realism)  # fmt: skip
        script = dataclasses.replace(script, events=[drifting(e, MIN_DRIFT * script.frame_size) for e in script.events])
    else:
        script = random_script(seed, duration_s=seconds, n_events=1 if task == "needle" else 5, event_s=(2, 4),
                               realism=realism)  # fmt: skip
    qas = video_questions(script)
    return Video(seed, script, qas if task == "video" else [q for q in qas if q.kind in NEEDLE_KINDS])


def drifting(event, min_speed: float):
    """`event` (a streamer.world.scene.Event) moving at least `min_speed` px/s, in its own direction."""
    speed = (event.vx**2 + event.vy**2) ** 0.5
    if speed >= min_speed:
        return event
    if speed == 0:
        return dataclasses.replace(event, vx=min_speed)
    return dataclasses.replace(event, vx=event.vx * min_speed / speed, vy=event.vy * min_speed / speed)


def stream(session, frames) -> float | None:
    """Ingest `frames` (1 fps) in chunks of 4. Returns the video time where a BudgetError (full cache past
    the model's positions) stopped it, or None."""
    from streamer.errors import BudgetError
    from streamer.frames import SamplerConfig, chunk_frames

    for chunk in chunk_frames(frames, SamplerConfig(fps=1.0, chunk_frames=4)):
        try:
            session.ingest(chunk)
        except BudgetError:
            return chunk.frames[0].time_s
    return None


def kept_fraction(session, script, qa) -> float | None:
    """Fraction of the asked object's image tokens (all layers and heads) the cache still holds; None when
    the question names no single object."""
    from streamer.shared_types import Modality

    event = next((e for e in script.seen_events() if e.obj.name in qa.question), None)
    if event is None:
        return None
    times = [t for t in script.times(1.0) if event.start_s <= t < event.end_s]
    per_frame = session.adapter.tokens_per_frame
    held = total = 0
    for layer in session.cache.layers:
        image = layer.modality == Modality.IMAGE  # (B, H, T)
        inside = image & (layer.times.unsqueeze(-1) == layer.times.new_tensor(times)).any(-1)
        held += int(inside.sum())
        total += layer.modality.shape[0] * layer.modality.shape[1] * per_frame * len(times)
    return held / total if total else None


def watch_and_ask(session, video: Video) -> tuple[list[dict], float | None]:
    """Reset `session`, stream `video` into it and ask its questions. Returns (rows, the video time where
    the positions ran out, or None); no rows when they ran out."""
    session.reset()
    if not video.standing:
        at = stream(session, video.frames())
        return ([] if at is not None else ask_all(session, video)), at
    for qa in video.qas:
        session.watch(qa.question)
    at = stream(session, video.frames())
    got = {q: "yes" if positive else "no" for q, positive in session.watcher.on.items()}
    rows = [{"seed": video.seed, "kind": qa.kind, "question": qa.question, "want": qa.answer, "got": got[qa.question],
             "correct": got[qa.question] == qa.answer, "confidence": session.watcher.last[qa.question]} for qa in video.qas]
    for qa in video.qas:
        session.unwatch(qa.question)
    return rows, at


def ask_all(session, video: Video, max_new_tokens: int = 16) -> list[dict]:
    """Ask the video's questions (from a copy of the cache each, or as one chat); one row per answer. An answer
    may take `max_new_tokens` (a time "00:00:41" is 8 tokens after a space: SmolLM2 splits digits)."""
    snapshot = copy.deepcopy(session.cache), session.conv, list(session.history)
    rows = []
    for qa in video.qas:
        if not video.chat:
            session.cache, session.conv, session.history = copy.deepcopy(snapshot[0]), snapshot[1], list(snapshot[2])
        got = normalise(session.answer(qa.question, max_new_tokens=max_new_tokens))
        row = {"seed": video.seed, "kind": qa.kind, "question": qa.question, "want": qa.answer, "got": got,
               "correct": got == qa.answer}  # fmt: skip
        if qa.kind in NEEDLE_KINDS:
            row["kept"] = kept_fraction(session, video.script, qa)
            event = next(e for e in video.script.seen_events() if e.obj.name in qa.question)
            row["depth"] = video.script.first_seen(event) / max(1.0, video.script.duration_s)
        rows.append(row)
    if video.chat and rows:
        first = rows[0]["got"]
        for r in rows[1:]:
            r["repeats_first"] = r["got"] == first and r["want"] != first
    return rows


def full_tokens(adapter, task: str, seconds: float) -> int:
    """Tokens the first video of `task` takes in the full cache (frames only): what fraction budgets scale."""
    from streamer.frames import SamplerConfig, chunk_frames
    from streamer.shared_types import Conversation

    conv, total = Conversation(), 0
    for chunk in chunk_frames(make_video(task, 0, seconds).script.frames(1.0), SamplerConfig(fps=1.0, chunk_frames=4)):
        p = adapter.chunk_prompt(chunk, conv)
        conv, total = p.after, total + p.n_tokens
    return total


def run_config(adapter, task: str, seconds: float, policy: str, budget: float | None, videos: int,
               world: str = "clean", redundancy: float | str | None = "policy", skip: bool = False, first: int = 0,
               max_gap: int | None = 0) -> dict:
    """One configuration: held-out videos `first` .. `first + videos - 1` of `task`, each streamed into a
    fresh session; `redundancy`: WindowConfig.redundancy of the bounded policies (None: off, "policy": the
    policy's default); `skip`: skip unchanged frames; `max_gap`: WindowConfig.max_gap of the bounded policies."""
    from streamer.video.skip import SkipConfig
    from streamer.session import StreamSession

    tokens = None if budget is None else int(budget) if budget > 1 else max(64, int(full_tokens(adapter, task, seconds) * budget))
    window = common.window(policy, tokens)
    if policy != "full":
        window = dataclasses.replace(window, redundancy=redundancy, max_gap=max_gap)
    session = StreamSession(adapter, window, skip=SkipConfig() if skip else None)
    rows, stopped, start, fed = [], [], time.perf_counter(), 0
    length = "" if task in FIXED_LENGTH else f" {seconds:g}s"
    label = f"{task}{length} {policy}" + ("" if tokens is None else f"@{tokens}")
    for i in tqdm(range(first, first + videos), desc=label, unit="video", leave=False):
        video = make_video(task, i, seconds, world)
        answers, at = watch_and_ask(session, video)
        fed += session.frames_ingested
        rows += answers
        if at is not None:
            stopped.append({"seed": video.seed, "stopped_at_s": at})
    return {"task": task, "seconds": None if task in FIXED_LENGTH else seconds, "policy": policy,
            "budget_tokens": tokens, "budget": budget, "videos": videos, "first": first, "stopped": stopped, "world": world,
            "redundancy": window.resolved.redundancy, "skip": skip, "frames_fed": fed,
            **({"max_gap": window.resolved.max_gap} if window.resolved.max_gap else {}),
            "wall_s": round(time.perf_counter() - start, 1), "kv_bytes_at_end": session.cache.kv_bytes(),
            "summary": summarise(rows), "answers": rows}  # fmt: skip


CONFIG_KEYS = ("task", "seconds", "policy", "budget_tokens", "world", "redundancy", "skip", "max_gap")


def merge(parts: list[dict]) -> dict:
    """One result file from several runs of the same model on different videos (`--first`): results of the
    same configuration are pooled (answers, stops, frames, wall seconds) and summarised again. Raises
    ValueError when the parts come from different models or weights, or share a video."""
    if len({(p["model"], p.get("weights"), p["dtype"]) for p in parts}) != 1:
        raise ValueError("the parts come from different models, weights or dtypes")
    pooled: dict[tuple, dict] = {}
    for part in parts:
        for r in part["results"]:
            key = tuple(r.get(k) for k in CONFIG_KEYS)
            if key not in pooled:
                pooled[key] = {**r, "answers": list(r["answers"]), "stopped": list(r["stopped"])}
                continue
            into = pooled[key]
            if _seeds(r) & _seeds(into):
                raise ValueError(f"configuration {key} has the same video in two parts")
            into["answers"] += r["answers"]
            into["stopped"] += r["stopped"]
            into["videos"] += r["videos"]
            into["first"] = min(into.get("first", 0), r.get("first", 0))
            into["frames_fed"] += r["frames_fed"]
            into["wall_s"] = round(into["wall_s"] + r["wall_s"], 1)
    results = [{**r, "summary": summarise(r["answers"])} for r in pooled.values()]
    return {**{k: v for k, v in parts[0].items() if k not in ("results", "machine", "command", "benchmark")},
            "merged_from": [p["command"] for p in parts], "results": results}


def paired(reference: dict, result: dict) -> dict | None:
    """The questions both results answered (same video, same question): right in both, only in the
    reference, only in `result`, and the exact McNemar p-value of the difference; None if they share none."""
    ref = {(a["seed"], a["question"]): a["correct"] for a in reference["answers"]}
    pairs = [(ref[k], a["correct"]) for a in result["answers"] if (k := (a["seed"], a["question"])) in ref]
    if not pairs:
        return None
    only_ref, only_this = sum(r and not t for r, t in pairs), sum(t and not r for r, t in pairs)
    return {"n": len(pairs), "both": sum(r and t for r, t in pairs), "only_reference": only_ref, "only_this": only_this,
            "p_value": round(common.mcnemar_p(only_ref, only_this), 4)}


def _seeds(result: dict) -> set[int]:
    """The videos a result covers: those answered and those the model's positions stopped."""
    return {a["seed"] for a in result["answers"]} | {s["seed"] for s in result["stopped"]}


def summarise(rows: list[dict]) -> dict:
    """Accuracy with its Wilson interval, overall and per question kind; needle rows split by `kept`."""

    def mean_kept(rs: list[dict]) -> float | None:
        return round(sum(r["kept"] for r in rs) / len(rs), 4) if rs else None

    def acc(rs: list[dict]) -> dict:
        right = sum(r["correct"] for r in rs)
        low, high = wilson(right, len(rs))
        return {"right": right, "n": len(rs), "videos": len({r["seed"] for r in rs}),
                "accuracy": round(right / len(rs), 4) if rs else None, "ci95": [round(low, 4), round(high, 4)]}  # fmt: skip

    out = {"all": acc(rows), "by_kind": {k: acc([r for r in rows if r["kind"] == k]) for k in sorted({r["kind"] for r in rows})}}
    kept = [r for r in rows if r.get("kept") is not None]
    if kept:
        out["needle_in_cache"] = acc([r for r in kept if r["kept"] > 0])
        out["needle_evicted"] = acc([r for r in kept if r["kept"] == 0])
        out["mean_kept"] = mean_kept(kept)
    deep = [r for r in kept if r.get("depth") is not None]
    if deep:  # where in the video the needle was: first, middle, last third
        thirds = [[r for r in deep if min(int(r["depth"] * 3), 2) == i] for i in range(3)]
        out["by_depth"] = [{**acc(t), "mean_kept": mean_kept(t)} for t in thirds]
    repeats = [r for r in rows if "repeats_first" in r]
    if repeats:
        out["repeats_first_answer"] = {"n": len(repeats), "count": sum(r["repeats_first"] for r in repeats)}
    return out


def line(result: dict) -> str:
    s = result["summary"]["all"]
    budget = "full" if result["budget_tokens"] is None else f"{result['budget_tokens']} tok"
    extras = {result["world"]: result["world"] != "clean", f"redundancy {result['redundancy']}": result["redundancy"] is not None,
              "skip": result["skip"], f"max_gap {result.get('max_gap')}": bool(result.get("max_gap"))}  # fmt: skip
    budget += "".join(f" {x}" for x, on in extras.items() if on)
    secs = "" if result["seconds"] is None else f"{result['seconds']:g}s"
    text = (f"{result['task']:8s} {secs:>6s} {result['policy']:12s} {budget:>9s}  "
            f"{s['right']:4d}/{s['n']:<4d} = {s['accuracy'] if s['n'] else float('nan'):.3f} "
            f"[{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]  {s['videos']} videos")  # fmt: skip
    if result["stopped"]:
        text += f"  ({len(result['stopped'])} stopped by the model's positions)"
    kinds = result["summary"]["by_kind"]
    if len(kinds) > 1:
        text += "\n" + "\n".join(f"{'':30s}{k:16s} {v['right']:3d}/{v['n']:<3d} = {v['accuracy']:.3f} "
                                 f"[{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]" for k, v in kinds.items())  # fmt: skip
    if "needle_in_cache" in result["summary"]:
        a, b = result["summary"]["needle_in_cache"], result["summary"]["needle_evicted"]
        text += f"\n{'':30s}needle kept {a['right']}/{a['n']}, needle evicted {b['right']}/{b['n']}"
    if "by_depth" in result["summary"]:
        text += f"\n{'':30s}needle in the first / middle / last third: " + " | ".join(
            f"{d['right']}/{d['n']} right, {d['mean_kept'] if d['n'] else 0:.2f} of it kept"
            for d in result["summary"]["by_depth"])
    if "repeats_first_answer" in result["summary"]:
        r = result["summary"]["repeats_first_answer"]
        text += f"\n{'':30s}later answers repeating a wrong first answer: {r['count']}/{r['n']}"
    return text


QUICK = {"frame": 20, "needle": 3, "objects": 2, "moving": 2, "video": 2, "sample": 2, "chat": 2, "presence": 10}  # videos per task in --quick
FULL = {"frame": 100, "needle": 40, "objects": 10, "moving": 10, "video": 10, "sample": 10, "chat": 10, "presence": 100}


def parse_budgets(text: str) -> list[float | None]:
    out = []
    for x in (t.strip() for t in text.split(",") if t.strip()):
        value = float(x)
        if not (0 < value <= 1 or (value > 1 and value == int(value))):
            raise argparse.ArgumentTypeError(f"a budget is a fraction in (0, 1] or a whole token count, got {x}")
        out.append(value)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    ap.add_argument("--seconds", type=float, default=None, help="video length of needle/objects/moving/video (default 300, quick 60)")
    ap.add_argument("--videos", type=int, default=None, help="videos per configuration (default per task: "
                    + ", ".join(f"{k} {v}" for k, v in FULL.items()) + ")")  # fmt: skip
    ap.add_argument("--policies", default="full", help="comma-separated policies (full, sink-recent, saddle, text-prior, combined)")
    ap.add_argument("--budgets", type=parse_budgets, default=[0.1], help="for bounded policies: fractions or token counts")
    ap.add_argument("--world", default="clean", choices=["clean", "noisy"], help="noisy: Realism.noisy() camera")
    ap.add_argument("--redundancy", type=redundancy_arg, nargs="*", default=["policy"], help="run each bounded policy with each of "
                    "these WindowConfig.redundancy settings: a threshold, off, or policy (its default; combined: 0.9) "
                    "(e.g. --redundancy off 0.9)")  # fmt: skip
    ap.add_argument("--max-gap", type=lambda t: None if t == "budget" else int(t), default=0,
                    help="WindowConfig.max_gap of the bounded policies: positions, or 'budget'")
    ap.add_argument("--skip", choices=["off", "on", "both"], default="off",
                    help="skip unchanged frames before the model (off here: the cache alone; the CLI and UI default to on)")
    ap.add_argument("--dtype", default=None, help="model dtype (default: the adapter's, float32 on CPU)")
    ap.add_argument("--speed", default="exact", choices=["exact", "int8"], help="--speed of the CLI (int8 vision tower)")
    ap.add_argument("--quick", action="store_true", help=f"videos per task {QUICK}, 60-second videos")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--first", type=int, default=0, help="first held-out video (run more videos later, then --merge)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/quality[_quick].json)")
    ap.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                    help="pool these result files (same model, different --first) into --out, run nothing")
    ap.add_argument("--show", type=Path, nargs="+", default=None, metavar="JSON",
                    help="print the summary of these result files (accuracy, needle by depth), run nothing")
    args = ap.parse_args(argv)
    if args.show:
        for path in args.show:
            print(path)
            for r in json.loads(path.read_text())["results"]:
                print(line({**r, "summary": summarise(r["answers"])}))
        return
    if args.merge:
        if args.out is None:
            ap.error("--merge needs --out")
        parts = [json.loads(p.read_text()) for p in args.merge]
        try:
            merged = merge(parts)
        except ValueError as err:
            ap.error(str(err))
        common.write_json("quality", merged, parts[0]["machine"], args.out)
        for r in merged["results"]:
            print(line(r))
        return
    tasks = [t for t in args.tasks.split(",") if t]
    if unknown := set(tasks) - set(TASKS):
        ap.error(f"unknown task(s) {sorted(unknown)}; choose from {', '.join(TASKS)}")
    if args.videos is not None and args.videos < 1:
        ap.error("--videos must be at least 1")
    if args.first < 0:
        ap.error("--first must be 0 or more")
    common.setup(args.threads)
    started = common.machine()
    from streamer.models.registry import load_model

    adapter = load_model(args.model, dtype=args.dtype, speed=args.speed)
    seconds = args.seconds or (60.0 if args.quick else 300.0)
    skips = {"off": [False], "on": [True], "both": [False, True]}[args.skip]
    configs = [(p, b, r, k) for p in args.policies.split(",") if p for b in ([None] if p == "full" else args.budgets)
               for r in ([None] if p == "full" else args.redundancy) for k in skips]  # fmt: skip
    results = []
    data = {"model": args.model, "world": args.world, "dtype": str(adapter.dtype).removeprefix("torch."), "fps": 1.0,
            "speed": args.speed,
            "chunk_frames": 4, "tokens_per_frame": adapter.tokens_per_frame, "weights": weights_id(args.model),
            "results": results}  # fmt: skip
    for task in tasks:
        n = args.videos or (QUICK if args.quick else FULL)[task]
        for policy, budget, redundancy, skip in configs:
            results.append(run_config(adapter, task, seconds, policy, budget, n, args.world, redundancy, skip, args.first,
                                      args.max_gap))
            print(line(results[-1]), flush=True)
            common.write_json("quality_quick" if args.quick else "quality", data, started, args.out)  # so far


def weights_id(model: str) -> str | None:
    """First 16 hex digits of the committed tiny weights' sha256 (which model the numbers are for)."""
    import hashlib

    weights = common.ROOT / "models" / "weights" / "tiny.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if model == "tiny" and weights.is_file() else None


if __name__ == "__main__":
    main()
