"""Ray Serve with N replicas on this machine: clients over HTTP get the answers of a single-process run, and a
replica killed mid-run ends only its own sessions, with the clear message.

    .venv/bin/python bench/bench_serve.py --replicas 2 --clients 8

1. Reference: the same `SessionHost` in this process (no Ray), every video uploaded and each of its questions
   asked once the video is ingested.
2. `streamer-serve`'s app on a local Ray (`--replicas` replicas of `tiny`, one CPU each), then `--clients`
   threads at once over the REST API: open a session, upload one of the videos, wait for its ingest, ask
   `--questions` questions; every answer is compared with the reference's.
3. The same again, but once every client has asked its first question, the replica holding the most sessions
   is killed (`ray.kill`) while the second questions are in flight. Its clients must get the LOST message (a
   503 for a request in flight, a 410 after) and nothing else; the others must go on with matching answers.
   Then a new session must still work (Serve restarts the replica).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import common
import requests
from common import write_json

SECONDS = 30  # each client's video


def videos(n: int, folder: Path, questions: int) -> list[tuple[Path, list[str]]]:
    from streamer.world.scene import video_questions
    from streamer.world.sample_video import sample_script

    out = []
    for i in range(n):
        script = sample_script(SECONDS, seed=9100 + i)
        path = script.write_video(folder / f"clip{i}.mp4", fps=4)
        out.append((path, [qa.question for qa in video_questions(script)][:questions]))
    return out


def reference(clips, options) -> list[list[str]]:
    """Each clip's answers from a SessionHost in this process, as a single-process run gives them."""
    from streamer.app.serve import host_from_args

    host = host_from_args(options, "local")
    answers = []
    for path, questions in clips:
        token = host.open()["session"]
        host.upload(token, path.read_bytes(), path.name)
        while host.status(token)["state"] == "running":
            time.sleep(0.2)
        answers.append([host.ask(token, q)["answer"] for q in questions])
        host.close(token)
    host.shutdown()
    return answers


class Client(threading.Thread):
    """One HTTP client: open, upload, wait for the ingest, then ask its questions (after `gate`, if given)."""

    def __init__(self, base: str, clip, expected: list[str], gates: list[threading.Barrier] | None = None):
        super().__init__(daemon=True)
        self.base, (self.path, self.questions), self.expected, self.gates = base, clip, expected, gates or []
        self.results: list[dict] = []  # per question: answer or error, status, seconds
        self.replica = None
        self.error = None

    def call(self, method: str, path: str, **kw) -> requests.Response:
        return requests.request(method, self.base + path, timeout=600, **kw)

    def run(self):
        try:
            r = self.call("POST", "/api/sessions")
            r.raise_for_status()
            token = r.json()["session"]
            with self.path.open("rb") as f:
                r = self.call("POST", f"/api/sessions/{token}/video", files={"file": (self.path.name, f)})
            if not r.ok:
                raise RuntimeError(f"upload: {r.status_code} {r.json().get('detail')}")
            self.replica = r.json()["replica"]
            while (s := self.call("GET", f"/api/sessions/{token}").json())["state"] == "running":
                time.sleep(0.5)
            if s["state"] != "done":
                raise RuntimeError(f"ingest ended {s['state']}: {s['errors']}")
            for i, question in enumerate(self.questions):
                if i < len(self.gates):
                    self.gates[i].wait()
                start = time.perf_counter()
                r = self.call("POST", f"/api/sessions/{token}/ask", json={"question": question})
                row = {"status": r.status_code, "seconds": round(time.perf_counter() - start, 2)}
                row.update(answer=r.json()["answer"]) if r.ok else row.update(error=r.json().get("detail"))
                row["match"] = r.ok and row["answer"] == self.expected[i]
                self.results.append(row)
        except Exception as err:  # noqa: BLE001 (reported in the results, the run goes on)
            self.error = f"{type(err).__name__}: {err}"
            for gate in self.gates:
                gate.abort()


def run_clients(base, clips, expected, n, gates=None, between=None) -> list[Client]:
    clients = [Client(base, clips[i % len(clips)], expected[i % len(clips)], gates) for i in range(n)]
    for c in clients:
        c.start()
    if between is not None:
        between(clients)
    for c in clients:
        c.join()
    return clients


def summary(clients, killed: str | None = None) -> dict:
    from streamer.app.hosting import LOST

    mine = [c for c in clients if c.replica != killed]
    theirs = [c for c in clients if killed and c.replica == killed]
    rows = [r for c in mine for r in c.results]
    out = {"clients": len(clients), "errors": [c.error for c in clients if c.error],
           "answers": len(rows), "matching": sum(r["match"] for r in rows),
           "answer_s_median": statistics.median(r["seconds"] for r in rows) if rows else None,
           "replicas_used": len({c.replica for c in clients})}
    if killed:
        lost = [r for c in theirs for r in c.results if not r["match"]]
        out.update(killed_clients=len(theirs), killed_answers_before=sum(r["match"] for c in theirs for r in c.results),
                   killed_lost_messages=sum(r.get("error") == LOST for r in lost),
                   killed_other_outcomes=[r for r in lost if r.get("error") != LOST],
                   killed_statuses=sorted({r["status"] for r in lost}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--questions", type=int, default=3)
    ap.add_argument("--videos", type=int, default=4, help="distinct videos the clients upload")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    common.setup(1)
    started = common.machine()
    import ray
    from ray import serve

    from streamer.app import serve as streamer_serve

    options = streamer_serve.build_parser().parse_args(
        ["--replicas", str(args.replicas), "--port", str(args.port), "--max-sessions-per-client", "16"])
    folder = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    clips = videos(args.videos, folder, args.questions)
    t = time.perf_counter()
    expected = reference(clips, options)
    out = {"replicas": args.replicas, "clients": args.clients, "questions": args.questions, "video_s": SECONDS,
           "reference_s": round(time.perf_counter() - t, 1), "model": options.model, "budget": options.budget}
    print("reference", expected, flush=True)

    t = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(streamer_serve.app_from_args(options), name="streamer", route_prefix="/")
    out["startup_s"] = round(time.perf_counter() - t, 1)
    base = f"http://127.0.0.1:{args.port}"
    try:
        t = time.perf_counter()
        out["run"] = summary(run_clients(base, clips, expected, args.clients))
        out["run"]["seconds"] = round(time.perf_counter() - t, 1)
        print("run", out["run"], flush=True)

        killed = {}
        gates = [threading.Barrier(args.clients + 1) for _ in range(2)]

        def kill_mid_run(clients):
            gates[0].wait()  # every client ingested its video; first questions go
            gates[1].wait()  # every client has its first answer; second questions go
            time.sleep(0.3)  # ...and are in flight
            counts = {}
            for c in clients:
                counts[c.replica] = counts.get(c.replica, 0) + 1
            killed["replica"] = max(counts, key=counts.get)
            actor = ray.get_actor(f"SERVE_REPLICA::streamer#streamer#{killed['replica']}", namespace="serve")
            ray.kill(actor, no_restart=True)
            killed["at"] = time.perf_counter()

        t = time.perf_counter()
        clients = run_clients(base, clips, expected, args.clients, gates, kill_mid_run)
        out["kill"] = summary(clients, killed["replica"])
        out["kill"]["seconds"] = round(time.perf_counter() - t, 1)
        print("kill", out["kill"], flush=True)
        t = time.perf_counter()
        after = run_clients(base, clips, expected, 1)
        out["after_kill"] = summary(after) | {"seconds": round(time.perf_counter() - t, 1)}
        print("after kill", out["after_kill"], flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    write_json("serve", out, started, path=args.out)


if __name__ == "__main__":
    main()
