"""streamer-serve: the app on Ray Serve, N replicas of the model, each holding its own sessions and caches.

    streamer-serve --replicas 2                  # a local Ray; http://127.0.0.1:8000
    streamer-serve --address auto --replicas 8 --host 0.0.0.0   # on a running Ray cluster (docs/serving.md)
    serve run streamer.app.serve:build_app replicas=2           # the same app through Ray's own CLI or config

Two deployments: `gateway` (the HTTP API and its page, no model) and `streamer` (the replicas, each a
`SessionHost`, app/hosting.py). A session's token names the replica that made it, and `SessionRouter`, Ray
Serve's request router for the `streamer` deployment, sends every request of a token to that replica (Ray
Serve's own routing, keyed on the session: the token travels as the request's multiplexed model id). When that
replica is gone the request goes to any other, which answers `LOST`; a request in flight on a replica that dies
gets the same message from the gateway. Never an answer from another replica's empty cache.

The HTTP API and the page: app/serve_api.py.
"""

import argparse
import asyncio
import functools
import logging
import os
import random
import re
import sys
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from a local Ray

from ray import serve  # noqa: E402
from ray.exceptions import ActorUnavailableError, RayActorError  # noqa: E402
from ray.serve.config import RequestRouterConfig  # noqa: E402
from ray.serve.request_router import FIFOMixin, RequestRouter  # noqa: E402

from streamer.app.hosting import replica_of  # noqa: E402
from streamer.app.serve_api import Unreachable, in_thread, make_api  # noqa: E402
from streamer.entry import run_main  # noqa: E402
from streamer.errors import StreamerError  # noqa: E402
from streamer.options import (  # noqa: E402
    FPS, MAX_NEW_TOKENS, OneLineParser, add_cache_options, add_model_options, float_in, int_in, skip_config,
    window_config,
)

log = logging.getLogger(__name__)

SERVE_BUDGET = 512  # tokens per layer, as the web UI starts with
DEFAULT_PORT = 8000


class SessionRouter(FIFOMixin, RequestRouter):
    """Ray Serve's request router for the replicas, keyed on the session: a request carrying a session token (as
    its multiplexed model id) goes to the replica named in the token, and waits for it when it is busy. A new
    session (or a token whose replica is gone, which any replica answers with LOST) goes to the replica holding
    the fewest sessions: the count it last reported (every second) plus the new sessions sent to it since."""

    def initialize_state(self, **kwargs) -> None:  # Ray Serve calls it once the router is made
        self._opened: dict[str, list] = {}  # replica id -> [its last report, new sessions sent to it since]

    async def choose_replicas(self, candidate_replicas, pending_request=None):
        home = ""
        if pending_request is not None:
            pending_request.routing_context.should_backoff = True  # a busy home replica is waited for, not spun on
            home = replica_of(pending_request.metadata.multiplexed_model_id or "")
            held = [r for r in candidate_replicas if home and r.replica_id.unique_id == home]
            if held:
                return [held]
        ranked = sorted(candidate_replicas, key=lambda r: (self._sessions(r), random.random()))
        if ranked and not home:  # a new session will be there
            self._opened[ranked[0].replica_id.unique_id][1] += 1
        return [[replica] for replica in ranked]

    def _sessions(self, replica) -> int:
        """The sessions `replica` holds, as far as this router knows."""
        stats = replica.routing_stats or {}
        seen = self._opened.setdefault(replica.replica_id.unique_id, [None, 0])
        if seen[0] != stats.get("report"):
            seen[:] = [stats.get("report"), 0]  # a new report counts the sessions sent before it
        return stats.get("sessions", 0) + seen[1]


async def _forward(replicas, method: str, token, *args) -> dict:
    """Run a SessionHost method on the replica of `token` (a new session: the least loaded replica)."""
    handle = replicas.options(multiplexed_model_id=token) if token else replicas
    try:
        return await handle.call.remote(method, token, *args)
    except (RayActorError, ActorUnavailableError) as err:  # the replica died under the request
        log.warning("the replica of %s failed: %s", (token or "a new session")[:20], type(err).__name__)
        raise Unreachable from None


async def _forward_stream(replicas, token: str, question: str):
    """The answer's items from the replica of `token`, as it writes them."""
    try:
        async for item in replicas.options(multiplexed_model_id=token, stream=True).stream.remote(token, question):
            yield item
    except (RayActorError, ActorUnavailableError) as err:
        log.warning("the replica of %s failed mid-answer: %s", token[:20], type(err).__name__)
        raise Unreachable from None


@serve.deployment(name="gateway", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress()
class Gateway:
    """The HTTP API and the page (app/serve_api.py): no model, no sessions; each call goes to its replica."""

    def __init__(self, replicas, max_upload_mb: int):
        self.replicas, self.max_upload_mb = replicas, max_upload_mb

    def __serve_build_asgi_app__(self):  # Ray Serve builds the app in the replica, after __init__
        return make_api(functools.partial(_forward, self.replicas), functools.partial(_forward_stream, self.replicas),
                        self.max_upload_mb)


@serve.deployment(name="streamer", max_ongoing_requests=64,
                  request_router_config=RequestRouterConfig(request_router_class="streamer.app.serve:SessionRouter",
                                                            request_routing_stats_period_s=1))
class Replica:
    """One replica: the model, loaded once, and a SessionHost with the sessions this replica made."""

    def __init__(self, options: dict):
        replica = serve.get_replica_context().replica_id.unique_id
        self.host = host_from_args(argparse.Namespace(**options), replica)
        self.reports = 0  # routing stats sent
        log.info("replica %s ready with %s", replica, self.host.model)

    def record_routing_stats(self) -> dict:  # Ray Serve asks every second; SessionRouter reads it
        self.reports += 1
        return {"sessions": len(self.host.registry), "report": self.reports}

    async def call(self, method: str, token, *args) -> dict:
        """`SessionHost.dispatch` in a thread (answers take seconds): errors come back as data."""
        return await asyncio.to_thread(self.host.dispatch, method, token, *args)

    async def stream(self, token: str, question: str):
        """`SessionHost.dispatch_stream`, each item as the model writes it (the model works in a thread)."""
        async for item in in_thread(self.host.dispatch_stream(token, question)):
            yield item

    def __del__(self):
        host = getattr(self, "host", None)
        if host is not None:
            host.shutdown()


def host_from_args(args: argparse.Namespace, replica: str):
    """The SessionHost of one replica (or of a single process, `replica` "local") under streamer-serve's options."""
    from streamer.app.hosting import SessionHost
    from streamer.app.state import UiSettings
    from streamer.models.registry import load_model

    adapter = load_model(args.model, device=args.device, dtype=args.dtype, speed=args.speed)
    window = window_config(args, adapter.describe()["max_position_embeddings"])
    settings = UiSettings(fps=args.fps, max_new_tokens=args.max_new_tokens, max_sessions=args.max_sessions,
                          max_sessions_per_client=args.max_sessions_per_client, skip=skip_config(args),
                          reconnect_grace_s=0.0)
    return SessionHost(adapter, window, settings, replica=replica, max_upload_bytes=args.max_upload_mb * 2**20)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="streamer-serve", description=__doc__.split("\n\n")[0])
    add_model_options(p)
    add_cache_options(p)
    p.set_defaults(budget=SERVE_BUDGET)
    p.add_argument("--replicas", type=int_in(1, 1024), default=2, help="model replicas (each holds its sessions)")
    p.add_argument("--replica-cpus", type=float_in(0, 1024, low_open=True), default=1.0,
                   help="CPUs Ray reserves for each replica (torch uses as many threads)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join ('auto': the one `ray start` runs here; default: start a local one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int_in(1, 65535), default=DEFAULT_PORT, help="port to listen on")
    p.add_argument("--fps", type=FPS, default=1.0, help="frames per second of video to keep")
    p.add_argument("--max-new-tokens", type=MAX_NEW_TOKENS, default=64, help="longest answer in tokens")
    p.add_argument("--max-sessions", type=int_in(1, 1024), default=16, help="sessions each replica holds at once")
    p.add_argument("--max-sessions-per-client", type=int_in(1, 1024), default=None,
                   help="sessions one client address may hold on each replica (default: a quarter of --max-sessions)")
    p.add_argument("--max-upload-mb", type=int_in(1, 10**6), default=200, help="largest upload accepted")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens (Ray's logs too)")
    return p


def app_from_args(args: argparse.Namespace):
    """The Serve application: `args.replicas` replicas with these options, behind the gateway."""
    window_config(args)  # bad cache options fail here, not in every replica
    replicas = Replica.options(num_replicas=args.replicas, ray_actor_options={"num_cpus": args.replica_cpus})
    return Gateway.bind(replicas.bind(vars(args)), args.max_upload_mb)


def build_app(options: dict):
    """For `serve run streamer.app.serve:build_app replicas=2 model=tiny` and Serve config files: the options
    are streamer-serve's, without the dashes."""
    argv = [f"--{str(k).replace('_', '-')}" if v is True else f"--{str(k).replace('_', '-')}={v}"
            for k, v in options.items() if v is not False]
    return app_from_args(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    from streamer.app.ui import check_address

    app = app_from_args(args)
    if args.address in (None, "auto", "local"):  # Serve's HTTP proxy listens here: can it?
        check_address(args.host, args.port)
    import ray

    ray.init(address=args.address, include_dashboard=False, log_to_driver=args.verbose,
             logging_level=logging.INFO if args.verbose else logging.WARNING)
    if not args.verbose:
        logging.getLogger("ray.serve").setLevel(logging.WARNING)  # Serve's progress lines: with -v
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        try:
            serve.run(app, name="streamer", route_prefix="/")
        except RuntimeError:  # a replica's constructor failed (Serve tried a few times): say why in one line
            raise StreamerError(f"the replicas could not start: {replica_failure()}") from None
        print(f"serving {args.replicas} replica(s) on http://{args.host}:{args.port} (Ctrl-C stops)", file=sys.stderr)
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()
        ray.shutdown()


def replica_failure() -> str:
    """The error that stopped the replicas from starting, from Serve's status (the last line of its traceback)."""
    app = serve.status().applications.get("streamer")
    message = app.deployments["streamer"].message if app and "streamer" in app.deployments else ""
    found = re.findall(r"streamer\.errors\.\w+: (.+)", message)
    lines = [line for line in message.splitlines() if line.strip()]
    return found[-1] if found else lines[-1].strip() if lines else "see Ray's logs (-v)"


def main(argv: list[str] | None = None) -> int:
    return run_main("streamer.app.serve", argv)


if __name__ == "__main__":
    sys.exit(main())
