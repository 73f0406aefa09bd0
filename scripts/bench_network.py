#!/usr/bin/env python
"""Real-network benchmark: a recorded take of two bots, one of them behind a lossy,
rate-capped home link (a test host in network namespaces: tests/netns.py, root only), for
each loss rate and rate cap. Reports per condition: the session's state, the impaired
performer's frames kept (archive over what its bot sent), its gaps by reason, its A/V offset
(verify's flash/beep pairs), and the glass-to-glass flash latency each way (what each bot
received of the other: bot report, p50/p95; a flash is white at every whole second of the
sender's clock, the latency is its arrival past that second, so it reads modulo 1 s).

  sudo .venv/bin/python scripts/bench_network.py                      # the table of docs/benchmarks.md
  sudo .venv/bin/python scripts/bench_network.py --loss 0,3 --caps 1,4 --seconds 10

Loss is per direction (each way); the cap is the link's rate both ways (tbf, 50 ms of queue).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchlib import ROOT  # noqa: F401 - puts the repository on sys.path

from tests.helpers import manifest, start_recording, stop_recording, verify
from tests.netns import Network


def run(loss: float, cap_mbit: float, seconds: float, workdir: Path) -> dict[str, Any]:
    rate = int(cap_mbit * 1_000_000) if cap_mbit else None
    with Network(workdir) as network:
        impaired = network.add(loss=loss, rate_up=rate, rate_down=rate)
        plain = network.add()
        server = network.server()
        room = server.create_room("bench")
        session = start_recording(server, room)["session_id"]
        invites = [server.invite(room, name) for name in ("impaired", "plain")]
        bots = [impaired.bot(invites[0]["url"], seconds), plain.bot(invites[1]["url"], seconds)]
        results = [bot.wait() for bot in bots]
        stopped = stop_recording(server, room)
        session_dir = server.session_dir(session)
        status, checked = verify(session_dir)
        archive = manifest(session_dir)
        dropped = impaired.dropped()
    (_, _, impaired_report), (_, _, plain_report) = results
    pid, plain_id = invites[0]["performer_id"], invites[1]["performer_id"]
    entry = next(p for p in archive["performers"] if p["performer_id"] == pid)
    tracks = {t["kind"]: t for t in entry["tracks"]}
    sent = impaired_report.get("sent") or {}
    up = (plain_report.get("received") or {}).get(pid) or {}
    down = (impaired_report.get("received") or {}).get(plain_id) or {}
    offset = (checked["performers"].get(pid) or {}).get("av_offset_ms") or {}
    return {
        "loss": loss, "cap_mbit": cap_mbit, "state": stopped["state"],
        "kept_video": tracks["video"]["frames"] / sent["video_frames"] if sent.get("video_frames") else None,
        "kept_audio": tracks["audio"]["frames"] / sent["audio_frames"] if sent.get("audio_frames") else None,
        "gaps": dict(Counter(g["reason"] for t in tracks.values() for g in t["gaps"])),
        "lost_s": round(sum(g["end_s"] - g["start_s"] for t in tracks.values() for g in t["gaps"]
                            if g["reason"] == "lost upstream"), 2),
        "av_offset_ms": offset.get("median"), "av_pairs": offset.get("pairs"),
        "latency_up_ms": (up.get("latency_ms_p50"), up.get("latency_ms_p95")),
        "latency_down_ms": (down.get("latency_ms_p50"), down.get("latency_ms_p95")),
        "fps_up": up.get("fps"), "verify": status, "dropped": dropped,
    }


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def row(r: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return f"{100 * x:.1f} %" if x is not None else "-"

    def pair(p: tuple[Any, Any]) -> str:
        return f"{p[0]:.0f} / {p[1]:.0f}" if p[0] is not None else "-"

    gaps = ", ".join(f"{n} {reason}" for reason, n in sorted(r["gaps"].items())) or "none"
    cap = f"{r['cap_mbit']:g} Mbit/s" if r["cap_mbit"] else "none"
    offset = f"{r['av_offset_ms']:+.1f} ({r['av_pairs']})" if r["av_offset_ms"] is not None else "-"
    return (f"| {100 * r['loss']:g} % | {cap} | {r['state']} | {pct(r['kept_video'])} / "
            f"{pct(r['kept_audio'])} | {gaps} ({r['lost_s']} s lost) | {offset} | "
            f"{pair(r['latency_up_ms'])} | {pair(r['latency_down_ms'])} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loss", default="0,1,3,5,10", help="loss rates each way, in %%")
    parser.add_argument("--caps", default="0.6,1,2,4", help="rate caps in Mbit/s (0: none)")
    parser.add_argument("--seconds", type=float, default=15.0, help="each take's length")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_network: network namespaces need root", file=sys.stderr)
        return 2
    losses = [float(x) / 100 for x in args.loss.split(",")]
    caps = [float(x) for x in args.caps.split(",")]
    print(f"load average before: {load()} ({os.cpu_count()} cores)", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-network-") as tmp:
        for loss in losses:
            for cap in caps:
                began = time.monotonic()
                r = run(loss, cap, args.seconds, Path(tmp) / f"{loss}-{cap}")
                r["wall_s"] = round(time.monotonic() - began, 1)
                r["load"] = load()
                rows.append(r)
                print(json.dumps(r), flush=True)
    print(f"load average after: {load()}")
    print()
    print("| loss each way | cap both ways | session | frames kept (video / audio) | gaps | "
          "A/V offset ms (pairs) | latency up p50 / p95 ms | latency down p50 / p95 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(row(r))
    medians = [r["av_offset_ms"] for r in rows if r["av_offset_ms"] is not None]
    if medians:
        print(f"\nA/V offset, median over conditions: {statistics.median(medians):+.1f} ms")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
