#!/usr/bin/env python
"""Benchmark: three nodes sharing one Redis and one PostgreSQL (issue #14, "Past one machine").

(a) Placement: rooms made through node A, one by one and in bursts of concurrent creates:
how many land on each node, and what a create costs when A makes the room itself against
when A sends it to another node through Redis. (b) Routing: the same operator request sent
to a room's owner directly and through another node (Redis command stream and reply list):
the latency that routing adds.

Real parts only: redis-server and PostgreSQL (the tests' harnesses, tests/redis_server.py and
tests/postgres.py) and three `improv-capture serve` processes on loopback, each with its own
data dir and port, IMPROV_NODE_CPU=process (they share one machine). Everything is stopped
at the end, pass or fail. Usage:
  .venv/bin/python scripts/bench_nodes.py [--rooms 60] [--burst 10] [--requests 300]"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import redis
from benchlib import Server  # first: it puts the repository on sys.path

from improv_capture.nodes.keys import DEFAULT_PREFIX, Keys
from tests.postgres import Postgres
from tests.redis_server import RedisServer

NAMES = ("node-a", "node-b", "node-c")


def spread(times_ms: list[float]) -> str:
    """p50 / p95 / p99 of a list of milliseconds (``-`` without samples)."""
    if not times_ms:
        return "-"
    if len(times_ms) == 1:
        return f"{times_ms[0]:.1f} ms (1)"
    q = statistics.quantiles(times_ms, n=100, method="inclusive")
    return (f"p50 {statistics.median(times_ms):.1f} / p95 {q[94]:.1f} / p99 {q[98]:.1f} ms "
            f"(n={len(times_ms)})")


class Nodes:
    """Redis, PostgreSQL and three nodes; `stop` stops whatever was started."""

    def __init__(self, root: Path, stack: contextlib.ExitStack) -> None:
        self.redis = RedisServer(root / "redis").start()
        stack.callback(self.redis.stop)
        postgres = Postgres()
        stack.callback(postgres.remove)
        postgres.start()
        database = postgres.new_database()
        self.owners_key = Keys(DEFAULT_PREFIX).owners
        self.kv = redis.Redis.from_url(self.redis.url, decode_responses=True)
        stack.callback(self.kv.close)
        token, key = secrets.token_hex(24), secrets.token_hex(24)
        self.nodes: dict[str, Server] = {}
        for name in NAMES:
            data = root / name
            data.mkdir()
            (data / "operator_token").write_text(token)  # what Server's client sends
            server = Server(data, IMPROV_REDIS_URL=self.redis.url, IMPROV_DATABASE_URL=database,
                            IMPROV_NODE_ID=name, IMPROV_OPERATOR_TOKEN=token,
                            IMPROV_SECRET_KEY=key, IMPROV_NODE_CPU="process",
                            # one room takes every invite the routing runs make (default 100)
                            IMPROV_MAX_INVITES_PER_ROOM="10000")
            stack.callback(server.stop)
            self.nodes[name] = server

    def live(self) -> list[dict[str, object]]:
        answer = self.nodes[NAMES[0]].api.get("/api/v1/nodes")
        return list(answer.json()["items"]) if answer.status_code == 200 else []

    def wait_idle(self, timeout_s: float = 60) -> None:
        """Three nodes registered, done starting (a busy node has less headroom), and their
        heartbeats counting the rooms Redis does (so an old beat skews no placement)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            live = self.live()
            owned = Counter(self.kv.hvals(self.owners_key))
            if len(live) == 3 and all(float(str(n["cpu_load"])) < 0.1
                                      and n["rooms"] == owned[str(n["node_id"])] for n in live):
                return
            time.sleep(0.25)
        raise TimeoutError(f"three idle nodes not registered: {self.live()}")

    def owner(self, room_id: str) -> str:
        return str(self.kv.hget(self.owners_key, room_id))


def create(node: Server, name: str) -> tuple[str, float]:
    """POST /api/v1/rooms: the room's id and the milliseconds it took."""
    began = time.perf_counter()
    answer = node.api.post("/api/v1/rooms", json={"name": name})
    elapsed = (time.perf_counter() - began) * 1000
    answer.raise_for_status()
    return str(answer.json()["room_id"]), elapsed


def placement(cluster: Nodes, label: str, rooms: int, burst: int) -> None:
    """Make ``rooms`` rooms through node A (``burst`` at once), report, delete them."""
    a = cluster.nodes[NAMES[0]]
    made: list[tuple[str, float]] = []
    began = time.perf_counter()
    with ThreadPoolExecutor(burst) as pool:
        for start in range(0, rooms, burst):
            count = min(burst, rooms - start)
            made += pool.map(lambda n: create(a, f"{label} {n}"), range(start, start + count))
    wall = time.perf_counter() - began
    owners = {room_id: cluster.owner(room_id) for room_id, _ in made}
    per_node = Counter(owners.values())
    local = [ms for room_id, ms in made if owners[room_id] == NAMES[0]]
    remote = [ms for room_id, ms in made if owners[room_id] != NAMES[0]]
    print(f"{label}: {rooms} rooms through {NAMES[0]} in {wall:.2f} s; per node "
          + ", ".join(f"{n} {per_node[n]}" for n in NAMES))
    print(f"  create placed on {NAMES[0]} itself: {spread(local)}")
    print(f"  create placed on another node:  {spread(remote)}")
    print("  order of placement: " + " ".join(owners[r][-1] for r, _ in made))
    slowest = sorted(range(len(made)), key=lambda n: made[n][1])[-3:]
    print("  slowest: " + ", ".join(f"#{n + 1} on {owners[made[n][0]]} {made[n][1]:.1f} ms"
                                    for n in reversed(slowest)))
    for room_id, _ in made:
        a.api.delete(f"/api/v1/rooms/{room_id}").raise_for_status()


def routing(cluster: Nodes, requests: int) -> None:
    """The same requests to a room's owner and through another node, interleaved."""
    a = cluster.nodes[NAMES[0]]
    room_id, _ = create(a, "routed")  # placed by headroom: its owner is asked of Redis
    owner_name = cluster.owner(room_id)
    other_name = NAMES[0] if owner_name != NAMES[0] else NAMES[1]
    owner, other = cluster.nodes[owner_name], cluster.nodes[other_name]
    owner.api.post(f"/api/v1/rooms/{room_id}/recording").raise_for_status()
    calls: dict[str, Callable[[Server, int], httpx.Response]] = {
        "GET /rooms/{id}": lambda node, n: node.api.get(f"/api/v1/rooms/{room_id}"),
        "POST /rooms/{id}/markers": lambda node, n: node.api.post(
            f"/api/v1/rooms/{room_id}/markers", json={"kind": "note", "label": f"m{n}"}),
        "POST /rooms/{id}/invites": lambda node, n: node.api.post(
            f"/api/v1/rooms/{room_id}/invites", json={"display_name": f"p{n}"}),
    }
    print(f"routing: a recording room on {owner_name}, asked directly and through {other_name}")
    for label, call in calls.items():
        times: dict[str, list[float]] = {"direct": [], "routed": []}
        for node in (owner, other):  # warm both paths (connections, first-call costs)
            for n in range(10):
                call(node, n).raise_for_status()
        for n in range(requests):
            order = (("direct", owner), ("routed", other)) if n % 2 else (
                ("routed", other), ("direct", owner))
            for how, node in order:
                began = time.perf_counter()
                call(node, n).raise_for_status()
                times[how].append((time.perf_counter() - began) * 1000)
        added = statistics.median(times["routed"]) - statistics.median(times["direct"])
        print(f"  {label}: direct {spread(times['direct'])}")
        print(f"  {' ' * len(label)}  routed {spread(times['routed'])}  (+{added:.1f} ms at p50)")
    # performers' signaling is not routed: an invite made through another node is the owner's
    url = other.api.post(f"/api/v1/rooms/{room_id}/invites", json={"display_name": "x"}).json()["url"]
    print(f"  an invite made through {other_name} points at {owner_name}: "
          f"{url.startswith(owner.url + '/')}")
    listed = []
    for _ in range(requests):
        began = time.perf_counter()
        answer = a.api.get("/api/v1/rooms")
        answer.raise_for_status()
        listed.append((time.perf_counter() - began) * 1000)
    rooms = len(answer.json()["items"])
    print(f"  GET /rooms through {NAMES[0]} (every node's, {rooms} rooms): {spread(listed)}")
    owner.api.delete(f"/api/v1/rooms/{room_id}/recording").raise_for_status()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rooms", type=int, default=60, help="rooms made in all (half one by "
                        "one, half in bursts)")
    parser.add_argument("--burst", type=int, default=10, help="concurrent creates per burst")
    parser.add_argument("--requests", type=int, default=300, help="requests per kind and path")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, root, True)
        began = time.perf_counter()
        cluster = Nodes(root, stack)
        cluster.wait_idle()
        print(f"redis, postgresql and three nodes up in {time.perf_counter() - began:.1f} s")
        placement(cluster, "one by one", args.rooms // 2, 1)
        cluster.wait_idle()
        placement(cluster, f"bursts of {args.burst}", args.rooms - args.rooms // 2, args.burst)
        cluster.wait_idle()
        routing(cluster, args.requests)
    return 0


if __name__ == "__main__":
    sys.exit(main())
