#!/usr/bin/env python
"""Benchmark: listing 10,000 sessions page by page through GET /api/v1/sessions.

Writes N manifest-only sessions into a fresh data dir, starts the server on loopback (which
indexes them), then pages through the catalog. Usage:
  .venv/bin/python scripts/bench_catalog.py [--sessions 10000] [--limit 100]"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from benchlib import Server  # first: it puts the repository on sys.path

from improv_capture.clock import utc_iso
from improv_capture.recorder.files import write_json_atomic


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--limit", type=int, default=100)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    server = None
    try:
        began = time.perf_counter()
        for n in range(args.sessions):
            started = 1_700_000_000 + n * 60
            write_json_atomic(data / "sessions" / f"ses_{n:06d}" / "manifest.json", {
                "schema_version": 1, "session_id": f"ses_{n:06d}", "room_id": f"room_{n % 50}",
                "state": "complete", "started_at": utc_iso(started),
                "ended_at": utc_iso(started + 55), "duration_s": 55.0,
                "performers": [{"performer_id": f"p_{n % 200}", "display_name": "x"}],
                "markers": [], "prompts": [], "files": [],
            })
        print(f"wrote {args.sessions} sessions in {time.perf_counter() - began:.1f} s")
        began = time.perf_counter()
        server = Server(data)
        print(f"server up with the catalog indexed in {time.perf_counter() - began:.2f} s")
        url = server.url
        token = (data / "operator_token").read_text().strip()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
            for run in ("first", "second"):
                times, count, after = [], 0, None
                began = time.perf_counter()
                while True:
                    params = {"limit": args.limit, **({"after": after} if after else {})}
                    t0 = time.perf_counter()
                    page = client.get("/api/v1/sessions", params=params).json()
                    times.append((time.perf_counter() - t0) * 1000)
                    count += len(page["items"])
                    after = page["next"]
                    if after is None:
                        break
                total = time.perf_counter() - began
                times.sort()
                print(f"{run} pass: {count} sessions in {len(times)} pages of {args.limit}: "
                      f"{total:.2f} s, page p50 {statistics.median(times):.1f} ms, "
                      f"p95 {times[int(len(times) * 0.95)]:.1f} ms, max {times[-1]:.1f} ms")
    finally:
        if server is not None:
            server.stop()  # removes the data dir too
        else:
            shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
