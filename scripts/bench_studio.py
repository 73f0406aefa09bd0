#!/usr/bin/env python
"""Benchmark: does the studio upload starve the live call? Four studio performers (bots), each
on its own host in a network namespace with a 6 Mbit/s cap each way (tests/netns.py; run as
root), record a take three times: the live call only (`bot --no-hq`); every bot recording its
own copy but holding its upload until the stop (`--studio-pace-kbps 1`); every bot recording
and uploading during the take (at --pace-kbps, or unpaced). For each run: the live call's
delivered frame rate and flash-to-screen latency (the bots' reports), the server's CPU and
memory, the bytes uploaded, and the time from the stop until every copy is in the session.

The upload's cost is the third run against the second: both record a copy at the same cost
(the bots' own encoding of it shares their CPU, two cores for four bots and the server, with
the live call they measure), only the upload differs. The first run says what the recording
itself costs the bots.

Targets (issue #11): fps with the upload >= 95 % of without; p95 latency within +50 ms.

Usage: sudo .venv/bin/python scripts/bench_studio.py [--performers 4] [--seconds 30]
       [--cap-mbit 6] [--hq-size 640x360] [--pace-kbps N]"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import manifest, publishing, wait_for  # noqa: E402
from tests.netns import Network  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(network: Network, hosts: list[Any], args: argparse.Namespace, mode: list[str]) -> dict[str, Any]:
    server = network.server()
    assert server.proc is not None
    created = server.api("POST", "/api/v1/rooms", json={"name": "bench", "profile": "studio"})
    room = created.json()["room_id"]
    extra = ["--preencoded", "--hq-size", args.hq_size, "--hq-grain", str(args.grain), *mode]
    upload = "--no-hq" not in mode
    bots = [host.bot(server.invite(room, f"p{i}")["url"], args.seconds + 120, *extra)
            for i, host in enumerate(hosts)]
    wait_for(lambda: publishing(server, room, len(bots)), 60, "every bot publishing")
    time.sleep(2)
    cpu, rss = cpu_seconds(server.proc.pid), rss_mb(server.proc.pid)
    began = time.monotonic()
    session = server.api("POST", f"/api/v1/rooms/{room}/recording").json()["session_id"]
    rss_peak = rss
    while time.monotonic() - began < args.seconds:
        time.sleep(1)
        rss_peak = max(rss_peak, rss_mb(server.proc.pid))
    take_cpu = cpu_seconds(server.proc.pid) - cpu
    server.api("DELETE", f"/api/v1/rooms/{room}/recording", timeout=120)
    stopped = time.monotonic()
    reports = [bot.finish(timeout=300)[2] for bot in bots]
    placed_s = None
    if upload:
        session_dir = server.session_dir(session)
        wait_for(lambda: all((p.get("hq") or {}).get("state") == "complete"
                             for p in manifest(session_dir)["performers"]), 300,
                 "every copy placed", every=0.5)
        placed_s = time.monotonic() - stopped
    received = [r for report in reports for r in report.get("received", {}).values()]
    server.stop()
    return {
        "fps": statistics.median(r["fps"] for r in received),
        "latency_p50_ms": statistics.median(r["latency_ms_p50"] for r in received if r["latency_ms_p50"]),
        "latency_p95_ms": max(r["latency_ms_p95"] for r in received if r["latency_ms_p95"]),
        "server_cpu_pct": round(100 * take_cpu / args.seconds, 1),
        "server_rss_mb": round(rss_peak, 1),
        "uploaded_mb": round(sum((r.get("hq") or {}).get("bytes", 0) for r in reports) / 1e6, 1),
        "upload_kbps": [(r.get("hq") or {}).get("upload_kbps") for r in reports] if upload else None,
        "stop_to_all_placed_s": round(placed_s, 1) if placed_s is not None else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--performers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--cap-mbit", type=float, default=6)
    parser.add_argument("--hq-size", default="640x360")
    parser.add_argument("--grain", type=int, default=12,
                        help="noise on the bots' recorded frames, so the copy weighs what a camera's does")
    parser.add_argument("--pace-kbps", default=None,
                        help="the bots' upload pace during the take: N kbit/s, or auto (the page's rule); default: unpaced, the worst case")
    args = parser.parse_args()
    cap = int(args.cap_mbit * 1e6)
    during = ["--studio-pace-kbps", str(args.pace_kbps)] if args.pace_kbps else []
    with Network(Path(tempfile.mkdtemp(prefix="bench-studio-"))) as network:
        hosts = [network.add(nat=True, rate_up=cap, rate_down=cap) for _ in range(args.performers)]
        live = run(network, hosts, args, ["--no-hq"])
        print("live call only:", json.dumps(live), flush=True)
        without = run(network, hosts, args, ["--studio-pace-kbps", "1"])
        print("copies recorded, upload held to the stop:", json.dumps(without), flush=True)
        with_upload = run(network, hosts, args, during)
        print(f"copies uploaded during the take ({args.pace_kbps or 'unpaced'} kbit/s):",
              json.dumps(with_upload), flush=True)
    print(f"fps ratio {with_upload['fps'] / without['fps']:.3f} (target >= 0.95); p95 latency "
          f"{with_upload['latency_p95_ms'] - without['latency_p95_ms']:+.0f} ms (target <= +50); "
          f"server CPU per uploading performer "
          f"{(with_upload['server_cpu_pct'] - without['server_cpu_pct']) / args.performers:+.1f} % "
          f"of a core, memory {(with_upload['server_rss_mb'] - without['server_rss_mb']) / args.performers:+.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
