"""Soak of the web UI server: does its memory level off over many connect-upload-ask-close cycles?

Starts `python -m streamer.app.ui` in a subprocess (the random-weight `tiny-random` model unless
`--model` says otherwise, `-v` so the server logs each session it opens and closes), then runs N cycles
of what one visitor does: a new `gradio_client.Client` (a new session), upload a short generated video
(`streamer.world.sample_video.write_sample`), wait until it is watched, ask one question, close the
client. Closing ends the client's heartbeat stream, so the server gets Gradio's `unload` and drops the
session, as when a browser tab closes; the script waits for the server's "session ... closed (0 open)"
line before it measures. After every cycle it records the server's RSS, threads and open files
(psutil on the server's pid) and the cycle's time.

"Levels off" is judged on the last third of the cycles: the least-squares slope of RSS in MB per 100
cycles, next to the same slope over the first third. Writes bench/results/soak_ui.json and .png.

    .venv/bin/python bench/soak_ui.py                    # 300 cycles
    .venv/bin/python bench/soak_ui.py --cycles 20        # a quick look (also: how long a cycle takes)

A benchmark, not a test: pytest never runs it.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common

import numpy as np  # noqa: E402  (after common: it puts the repository on sys.path)
import psutil  # noqa: E402

MB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The UI server in a subprocess; its log lines are read by a thread (so its pipe never fills)."""

    def __init__(self, args):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        cmd = [sys.executable, "-m", "streamer.app.ui", "--model", args.model, "--port", str(self.port),
               "--max-new-tokens", str(args.max_new_tokens), "--fps", "2", "-v",
               "--reconnect-grace", "0"]  # a closed client's session goes at once: each cycle waits for that
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "TQDM_DISABLE": "1",
               "GRADIO_HEARTBEAT_INTERVAL": "1",  # a closed client is noticed within 1 s (default 15)
               **dict(item.split("=", 1) for item in args.server_env)}
        self.proc = subprocess.Popen(cmd, cwd=common.ROOT, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.closed: list[str] = []  # "session KEY closed (N open)" lines, in order
        self.tail: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            with self._changed:
                self.tail = (self.tail + [line.rstrip()])[-20:]
                if re.search(r"session \S+ closed \(", line):
                    self.closed.append(line.strip())
                self._changed.notify_all()

    def wait_ready(self, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("the server exited:\n" + "\n".join(self.tail))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.5)
        raise SystemExit(f"the server did not start in {timeout:.0f} s")

    def wait_closed(self, key: str, timeout: float = 60.0) -> str:
        """The server's log line that says session `key` was dropped."""
        with self._changed:
            found = self._changed.wait_for(lambda: next((c for c in self.closed if key[:8] in c), None), timeout)
        if not found:
            raise SystemExit(f"session {key[:8]} was not closed within {timeout:.0f} s:\n" + "\n".join(self.tail))
        return found

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def cycle(server: Server, video: Path) -> tuple[str, float]:
    """One visitor: connect, upload, wait for the video to be watched, ask, close. Returns (log line, s)."""
    from gradio_client import Client, handle_file

    start = time.perf_counter()
    client = Client(server.url, verbose=False)
    client.predict(handle_file(video), api_name="/load_video")
    deadline = time.monotonic() + 120
    while "Watched all" not in client.predict(api_name="/refresh")[0]:
        if time.monotonic() > deadline:
            raise SystemExit("the video was not watched within 120 s")
        time.sleep(0.2)
    chat, _ = client.predict("What colour is the shape?", api_name="/ask")
    if len(chat) != 2:
        raise SystemExit(f"unexpected chat: {chat}")
    key = client.session_hash
    client.close()  # ends the heartbeat: the server runs `unload` for this session
    del client
    line = server.wait_closed(key)
    return line, time.perf_counter() - start


def slope_mb_per_100(cycles: np.ndarray, rss_mb: np.ndarray) -> float:
    """Least-squares slope of RSS (MB) per 100 cycles."""
    return float(np.polyfit(cycles, rss_mb, 1)[0] * 100) if len(cycles) >= 2 else float("nan")


def summarize(rows: list[dict]) -> dict:
    n = np.array([r["cycle"] for r in rows], float)
    rss = np.array([r["rss_mb"] for r in rows])
    third = max(2, len(rows) // 3)
    return {
        "cycles": len(rows),
        "rss_first_mb": rss[0], "rss_last_mb": rss[-1], "rss_max_mb": float(rss.max()),
        "rss_at_one_third_mb": float(rss[third - 1]),
        "slope_first_third_mb_per_100": slope_mb_per_100(n[:third], rss[:third]),
        "slope_last_third_mb_per_100": slope_mb_per_100(n[-third:], rss[-third:]),
        "threads_first_last": [rows[0]["threads"], rows[-1]["threads"]],
        "fds_first_last": [rows[0]["fds"], rows[-1]["fds"]],
        "median_cycle_s": float(np.median([r["seconds"] for r in rows])),
    }  # fmt: skip


def plot(rows: list[dict], summary: dict, name: str) -> None:
    plt = common.plt()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot([r["cycle"] for r in rows], [r["rss_mb"] for r in rows], color="tab:orange", label="server RSS")
    ax.set_xlabel("cycles (connect, upload, ask, close)")
    ax.set_ylabel("RSS (MB)")
    ax.set_title(f"UI server RSS over {len(rows)} sessions; last third: "
                 f"{summary['slope_last_third_mb_per_100']:+.1f} MB / 100 cycles", fontsize=10)
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot([r["cycle"] for r in rows], [r["threads"] for r in rows], color="tab:grey", linewidth=0.8,
             label="server threads")
    ax2.set_ylabel("threads")
    ax2.set_ylim(0, max(r["threads"] for r in rows) * 1.3)
    fig.legend(loc="lower right", fontsize=8)
    common.save_fig(fig, name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=300, help="visitor cycles")
    p.add_argument("--model", default="tiny-random", help="model of the server (tiny-random, tiny, ...)")
    p.add_argument("--video-seconds", type=float, default=3.0, help="length of the uploaded video")
    p.add_argument("--max-new-tokens", type=int, default=16, help="longest answer")
    p.add_argument("--name", default="soak_ui", help="results file name (bench/results/NAME.json, .png)")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                   help="an environment variable for the server (repeatable), e.g. MALLOC_ARENA_MAX=2")
    p.add_argument("--note", default="", help="what this run is for (kept in the JSON)")
    args = p.parse_args()
    common.setup(1)
    from streamer.world.sample_video import write_sample

    started = common.machine()
    tmp = Path(tempfile.mkdtemp(prefix="soak_ui_"))
    video = write_sample(tmp / "soak.mp4", seconds=args.video_seconds, fps=5, frame_size=128)
    server = Server(args)
    rows: list[dict] = []
    try:
        server.wait_ready()
        proc = psutil.Process(server.proc.pid)
        print(f"server pid {server.proc.pid} at {server.url}, RSS {proc.memory_info().rss / MB:.0f} MB", flush=True)
        begin = time.perf_counter()
        for i in range(1, args.cycles + 1):
            line, seconds = cycle(server, video)
            row = {"cycle": i, "rss_mb": proc.memory_info().rss / MB, "threads": proc.num_threads(),
                   "fds": proc.num_fds(), "seconds": round(seconds, 3),
                   "open_sessions_after": int(re.search(r"\((\d+) open\)", line).group(1))}
            rows.append(row)
            if i == 1 or i % 10 == 0 or i == args.cycles:
                print(f"cycle {i}: RSS {row['rss_mb']:.1f} MB, {row['threads']} threads, {row['fds']} fds, "
                      f"{seconds:.2f} s ({time.perf_counter() - begin:.0f} s in all)", flush=True)
    finally:
        server.stop()
    if not rows:
        return
    summary = summarize(rows)
    levels = abs(summary["slope_last_third_mb_per_100"]) < 2.0
    summary["levels_off"] = levels
    common.write_json(args.name, {"model": args.model, "video_seconds": args.video_seconds,
                                  "server_env": args.server_env, "note": args.note,
                                  "max_new_tokens": args.max_new_tokens, "summary": summary, "rows": rows},
                      started)
    plot(rows, summary, args.name)
    print(f"RSS {summary['rss_first_mb']:.1f} -> {summary['rss_at_one_third_mb']:.1f} (cycle {len(rows) // 3}) -> "
          f"{summary['rss_last_mb']:.1f} MB over {len(rows)} cycles; slope first third "
          f"{summary['slope_first_third_mb_per_100']:+.2f}, last third {summary['slope_last_third_mb_per_100']:+.2f} "
          f"MB / 100 cycles: {'levels off' if levels else 'still rising'} (criterion: |slope| < 2 MB / 100 cycles)")


if __name__ == "__main__":
    main()
