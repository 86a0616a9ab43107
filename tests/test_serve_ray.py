"""streamer-serve on a real local Ray Serve: two replicas on loopback, clients over HTTP, one replica killed
mid-run. Bounded (`timeout`), and it shuts Ray down whatever happens. The larger run (8 clients, 3 questions,
30-second videos, the trained model) is bench/bench_serve.py."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from streamer.app import serve as streamer_serve
from streamer.app.hosting import LOST
from streamer.world.sample_video import write_sample
from test_ui import free_port

QUESTIONS = ("What is on screen?", "What colour is it?", "And now?")
OPTIONS = ["--replicas", "2", "--model", "tiny-random", "--budget", "128", "--fps", "2", "--max-new-tokens", "6",
           "--skip-static", "off", "--max-sessions-per-client", "16"]


@pytest.fixture(scope="module")
def served():
    import ray
    from ray import serve

    port = free_port()
    options = streamer_serve.build_parser().parse_args(OPTIONS + ["--port", str(port)])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(streamer_serve.app_from_args(options), name="streamer", route_prefix="/")
        yield options, f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def open_session(base: str) -> tuple[str, str]:
    reply = requests.post(f"{base}/api/sessions", timeout=60).json()
    return reply["session"], reply["replica"]


def watch(base: str, token: str, clip) -> None:
    """Upload `clip` into the session and wait for its ingest."""
    with open(clip, "rb") as f:
        assert requests.post(f"{base}/api/sessions/{token}/video", files={"file": ("clip.mp4", f)},
                             timeout=60).status_code == 200
    while (status := requests.get(f"{base}/api/sessions/{token}", timeout=60).json())["state"] == "running":
        time.sleep(0.1)
    assert status["state"] == "done", status


def ask(base: str, token: str, question: str) -> tuple[int, str]:
    reply = requests.post(f"{base}/api/sessions/{token}/ask", json={"question": question}, timeout=120)
    return reply.status_code, reply.json().get("answer", reply.json().get("detail"))


@pytest.mark.timeout(300)
def test_two_replicas_answer_as_one_process_and_a_dead_one_ends_only_its_sessions(served, tmp_path):
    import ray

    options, base = served
    clips = [write_sample(tmp_path / f"clip{i}.mp4", seconds=4, fps=2, seed=4100 + i) for i in range(2)]
    host = streamer_serve.host_from_args(options, "local")  # the single-process run
    expected = []
    for clip in clips:
        token = host.open()["session"]
        host.upload(token, clip.read_bytes(), "clip.mp4")
        while host.status(token)["state"] == "running":
            time.sleep(0.1)
        expected.append([host.ask(token, q)["answer"] for q in QUESTIONS])
    host.shutdown()

    sessions = [open_session(base) for _ in range(4)]  # (token, replica): new sessions go where the load is least
    while len({replica for _, replica in sessions}) < 2 and len(sessions) < 16:
        sessions.append(open_session(base))  # (ties are drawn at random)
    assert len({replica for _, replica in sessions}) == 2, sessions
    threads = [threading.Thread(target=watch, args=(base, token, clips[i % 2]))
               for i, (token, _) in enumerate(sessions)]
    for t in threads:  # every client uploads at once
        t.start()
    for t in threads:
        t.join()
    for i, (token, _) in enumerate(sessions):  # every request of a session reaches its replica: its own answers
        assert ask(base, token, QUESTIONS[0]) == (200, expected[i % 2][0])
        reply = requests.post(f"{base}/api/sessions/{token}/ask", params={"stream": "true"},
                              json={"question": QUESTIONS[1]}, timeout=120, stream=True)  # through Ray, as written
        items = [json.loads(line) for line in reply.iter_lines() if line]
        assert "".join(i["piece"] for i in items[:-1]) == items[-1]["answer"] == expected[i % 2][1]

    victim = sessions[0][1]
    ray.kill(ray.get_actor(f"SERVE_REPLICA::streamer#streamer#{victim}", namespace="serve"), no_restart=True)
    for i, (token, replica) in enumerate(sessions):
        status, text = ask(base, token, QUESTIONS[2])
        if replica == victim:
            assert status in (410, 503) and text == LOST  # the clear message, never an empty cache's answer
        else:
            assert (status, text) == (200, expected[i % 2][2])  # the survivor's sessions go on
    token, replica = open_session(base)  # and a new session still works
    watch(base, token, clips[0])
    assert replica != victim and ask(base, token, QUESTIONS[0]) == (200, expected[0][0])
