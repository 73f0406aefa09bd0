#!/usr/bin/env python
"""Benchmark: listing the session catalog page by page through GET /api/v1/sessions.

Writes N manifest-only sessions into a fresh data dir, starts the server on loopback (which
indexes them: SQLite in the data dir, or with --postgres a PostgreSQL of the tests' harness,
tests/postgres.py, as IMPROV_DATABASE_URL), then pages through the catalog; with --filters
also by state, by room (a common one and a rare one) and by a time window. Usage:
  .venv/bin/python scripts/bench_catalog.py [--sessions 10000] [--limit 100] [--postgres]
      [--filters]"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from benchlib import Server  # first: it puts the repository on sys.path

from improv_capture.clock import utc_iso

#: the first session's start; one session a minute after it
EPOCH = 1_700_000_000
#: every RARE-th session is in a room of its own (a room that held few sessions)
RARE = 1000


def write_sessions(data: Path, count: int) -> None:
    """``count`` finalised sessions' manifests: 50 rooms, 1 in RARE in room_rare, 1 in 20
    partial. Plain writes: the benchmark's own files need no fsync."""
    for n in range(count):
        started = EPOCH + n * 60
        session = data / "sessions" / f"ses_{n:06d}"
        session.mkdir(parents=True)
        (session / "manifest.json").write_text(json.dumps({
            "schema_version": 1, "session_id": f"ses_{n:06d}",
            "room_id": "room_rare" if n % RARE == RARE - 1 else f"room_{n % 50}",
            "state": "partial" if n % 20 == 7 else "complete", "started_at": utc_iso(started),
            "ended_at": utc_iso(started + 55), "duration_s": 55.0,
            "performers": [{"performer_id": f"p_{n % 200}", "display_name": "x"}],
            "markers": [], "prompts": [], "files": [],
        }, indent=2))


def listing(client: httpx.Client, limit: int, min_pages: int = 1,
            **filters: str) -> tuple[int, int, float, list[float]]:
    """Pages through the listing with the ``next`` cursor, again from the start until at
    least ``min_pages`` pages were timed: (sessions listed, passes, seconds, page ms)."""
    times: list[float] = []
    count, passes, began = 0, 0, time.perf_counter()
    while True:
        passes += 1
        count, after = 0, None
        while True:
            params: dict[str, Any] = {"limit": limit, **filters, **({"after": after} if after else {})}
            t0 = time.perf_counter()
            answer = client.get("/api/v1/sessions", params=params)
            times.append((time.perf_counter() - t0) * 1000)
            answer.raise_for_status()
            page = answer.json()
            count += len(page["items"])
            after = page["next"]
            if after is None:
                break
        if len(times) >= min_pages:
            return count, passes, time.perf_counter() - began, sorted(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--postgres", action="store_true",
                        help="the index in PostgreSQL (IMPROV_DATABASE_URL), not SQLite")
    parser.add_argument("--filters", action="store_true",
                        help="also list by state, room and time window")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, data, True)
        env = {}
        if args.postgres:
            from tests.postgres import Postgres

            postgres = Postgres()
            stack.callback(postgres.remove)
            env["IMPROV_DATABASE_URL"] = postgres.start().new_database()
        began = time.perf_counter()
        write_sessions(data, args.sessions)
        print(f"wrote {args.sessions} sessions in {time.perf_counter() - began:.1f} s")
        began = time.perf_counter()
        server = Server(data, **env)
        stack.callback(server.stop)
        print(f"server up with the catalog indexed in {time.perf_counter() - began:.2f} s "
              f"({'PostgreSQL' if args.postgres else 'SQLite'})")
        day = EPOCH + (args.sessions // 2) * 60  # a day in the middle: 1440 sessions
        runs: list[tuple[str, dict[str, str]]] = [("first", {}), ("second", {})]
        if args.filters:
            runs += [("state=complete", {"state": "complete"}),
                     ("state=partial", {"state": "partial"}),
                     ("room_id=room_7", {"room_id": "room_7"}),
                     ("room_id=room_rare", {"room_id": "room_rare"}),
                     ("one day (since, until)", {"since": utc_iso(day), "until": utc_iso(day + 86400)})]
        for run, filters in runs:
            count, passes, total, times = listing(server.api, args.limit, 50 if filters else 1,
                                                  **filters)
            print(f"{run} pass: {count} sessions in {len(times) // passes} pages of {args.limit}"
                  + (f" (x {passes} passes)" if passes > 1 else "") + f": {total:.2f} s, "
                  f"page p50 {statistics.median(times):.1f} ms, "
                  f"p95 {times[int(len(times) * 0.95)]:.1f} ms, max {times[-1]:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
