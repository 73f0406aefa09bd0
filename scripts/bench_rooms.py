#!/usr/bin/env python
"""Capacity benchmark: N recorded rooms of two bots against the passthrough server and the
decode-and-re-encode baseline, on loopback. Reports per N: server CPU (% of one core, from
/proc) and RSS, video frames delivered per subscriber, glass-to-glass flash latency, frames in
the archive, finalise time; and the latency floor of a direct bot-to-bot connection.

  .venv/bin/python scripts/bench_rooms.py --rooms 1,2,4,8 --seconds 20 --modes passthrough,transcode
  .venv/bin/python scripts/bench_rooms.py --rooms 4,8 --workers 1,2 --modes passthrough

With --workers 2 the server is a router and two worker processes (`serve --workers 2`); CPU
and RSS are summed over all three, and the busiest process is reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import Server

from improv_capture.media import aiortc_hooks
from improv_capture.tools.bot.client import TrackStats
from improv_capture.tools.bot.media import (
    PreencodedBeepAudioTrack,
    PreencodedFlashVideoTrack,
)


def run(mode: str, rooms: int, seconds: float, workers: int = 1) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="bench-rooms-"))
    server = Server(data, IMPROV_RELAY_MODE=mode, IMPROV_WORKERS=str(workers))
    # many bots starting at once share 2 cores: give each room time to join
    join_allowance = 20.0 + 4.0 * rooms
    try:
        api = server.api
        rss_idle = server.rss_mb()
        room_ids = [api.post("/api/v1/rooms", json={"name": f"r{i}"}).json()["room_id"] for i in range(rooms)]
        reports = []
        for room in room_ids:
            api.post(f"/api/v1/rooms/{room}/recording")
            for name in ("a", "b"):
                invite = api.post(f"/api/v1/rooms/{room}/invites", json={"display_name": name}).json()
                report = data / f"{room}-{name}.json"
                reports.append(report)
                server.bot(invite["url"], seconds + join_allowance,
                                       "--report", str(report), "--preencoded")
        # steady state: `seconds` once every bot publishes (bots start slowly when many
        # start at once; each stays join_allowance longer than the window needs)
        started = time.time()
        while True:
            publishing = sum(
                len(p["publishing"]) == 2
                for room in api.get("/api/v1/rooms").json()["items"] for p in room["performers"]
            )
            if publishing == 2 * rooms:
                break
            if time.time() > started + join_allowance - 5:
                raise RuntimeError(f"only {publishing} of {2 * rooms} bots joined")
            time.sleep(0.5)
        time.sleep(2)
        cpu0, wall0 = server.cpu_by_process(), time.time()
        rss = [server.rss_mb()]
        while time.time() < wall0 + seconds:
            time.sleep(1)
            rss.append(server.rss_mb())
        cpu1 = server.cpu_by_process()
        window = time.time() - wall0
        per_process = [100 * (cpu1[pid] - cpu0.get(pid, 0.0)) / window for pid in cpu1]
        cpu = sum(per_process)
        for bot in server.bots:
            bot.wait(timeout=seconds + join_allowance + 60)
        finalise = []
        for room in room_ids:
            began = time.time()
            api.delete(f"/api/v1/rooms/{room}/recording")
            finalise.append(time.time() - began)
        results = [json.loads(p.read_text()) for p in reports if p.exists()]
        sent = {r["performer_id"]: r["sent"]["video_frames"] for r in results}
        delivered, p50s, p95s = [], [], []
        for r in results:
            for pid, got in r["received"].items():
                # steady state: frames per second received over the 30 sent
                delivered.append(got["fps"] / 30)
                if got["latency_ms_p50"] is not None:
                    p50s.append(got["latency_ms_p50"])
                    p95s.append(got["latency_ms_p95"])
        archived = []
        for manifest_path in (data / "sessions").glob("*/manifest.json"):
            manifest = json.loads(manifest_path.read_text())
            for p in manifest["performers"]:
                video = next((t for t in p.get("tracks", []) if t["kind"] == "video"), None)
                if video and p["performer_id"] in sent:
                    archived.append(video["frames"] / sent[p["performer_id"]])
        return {
            "mode": mode, "workers": workers, "rooms": rooms, "bots": len(server.bots),
            "reports": len(results), "window_s": round(window, 1),
            "cpu_pct": round(cpu, 1), "busiest_process_cpu_pct": round(max(per_process), 1),
            "rooms_per_core": round(rooms / (cpu / 100), 1), "rss_mb": round(max(rss), 1) if rss else None,
            "rss_per_room_mb": round((max(rss) - rss_idle) / rooms, 1) if rss else None,
            "delivered_min": round(min(delivered), 4) if delivered else None,
            "delivered_median": round(statistics.median(delivered), 4) if delivered else None,
            "latency_p50_ms": round(statistics.median(p50s), 1) if p50s else None,
            "latency_p95_ms": round(statistics.median(p95s), 1) if p95s else None,
            "archived_min": round(min(archived), 4) if archived else None,
            "finalise_s_max": round(max(finalise), 2),
        }
    finally:
        server.stop()

async def direct_floor(seconds: float) -> dict[str, Any]:
    """Two aiortc peers connected directly: the latency with no server in between."""
    from aiortc import RTCPeerConnection

    from improv_capture.media.connections import rtc_configuration

    aiortc_hooks.restrict_ice_addresses(["127.0.0.1"])
    tx, rx = RTCPeerConnection(rtc_configuration([])), RTCPeerConnection(rtc_configuration([]))
    tx.addTrack(PreencodedFlashVideoTrack())
    tx.addTrack(PreencodedBeepAudioTrack())
    stats = TrackStats()

    async def consume(track: Any) -> None:
        while True:
            frame = await track.recv()
            stats.video_frame(frame, time.time())

    tasks = []

    @rx.on("track")
    def on_track(track: Any) -> None:
        if track.kind == "video":
            tasks.append(asyncio.ensure_future(consume(track)))

    await tx.setLocalDescription(await tx.createOffer())
    await rx.setRemoteDescription(tx.localDescription)
    await rx.setLocalDescription(await rx.createAnswer())
    await tx.setRemoteDescription(rx.localDescription)
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await tx.close()
    await rx.close()
    lat = sorted(stats.latencies)
    return {"fps": round(stats.fps, 1), "latency_p50_ms": round(statistics.median(lat), 1),
            "latency_p95_ms": round(lat[int(len(lat) * 0.95)], 1)}

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", default="1,2,4,8")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--modes", default="passthrough,transcode")
    parser.add_argument("--workers", default="1", help="server processes to try, e.g. 1,2")
    parser.add_argument("--baseline-rooms", help="rooms for the transcode mode (default: --rooms); "
                        "it runs with one process only")
    args = parser.parse_args()
    floor = asyncio.run(direct_floor(args.seconds / 2))
    print(f"direct bot-to-bot (no server): {json.dumps(floor)}", flush=True)
    rows = []
    for mode in args.modes.split(","):
        rooms = args.rooms if mode == "passthrough" else (args.baseline_rooms or args.rooms)
        workers_list = args.workers if mode == "passthrough" else "1"
        for workers, n in ((int(w), int(x)) for w in workers_list.split(",") for x in rooms.split(",")):
            row = run(mode, n, args.seconds, workers)
            row["server_added_p50_ms"] = (
                round(row["latency_p50_ms"] - floor["latency_p50_ms"], 1) if row["latency_p50_ms"] else None)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| mode | processes | rooms | server CPU % of a core (busiest process) | rooms per core "
          "| RSS MB (added per room) | delivered fps / sent fps (min / median) "
          "| latency p50 / p95 ms | server-added p50 ms | archived / sent frames (min) | finalise s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['workers']} | {r['rooms']} | {r['cpu_pct']} ({r['busiest_process_cpu_pct']}) "
              f"| {r['rooms_per_core']} | {r['rss_mb']} ({r['rss_per_room_mb']}) "
              f"| {r['delivered_min']} / {r['delivered_median']} | {r['latency_p50_ms']} / {r['latency_p95_ms']} "
              f"| {r['server_added_p50_ms']} | {r['archived_min']} | {r['finalise_s_max']} |")
    print_ratios([r for r in rows if r["workers"] == 1])
    return 0


def cpu_per_room(rows: list[dict[str, Any]]) -> float | None:
    """The slope of server CPU over rooms (least squares): what one more room costs."""
    points = [(r["rooms"], r["cpu_pct"]) for r in rows]
    if len({n for n, _ in points}) < 2:
        return None
    mean_n = statistics.mean(n for n, _ in points)
    mean_c = statistics.mean(c for _, c in points)
    return sum((n - mean_n) * (c - mean_c) for n, c in points) / sum((n - mean_n) ** 2 for n, _ in points)


def print_ratios(rows: list[dict[str, Any]]) -> None:
    """Baseline against passthrough, one process each: per room at equal N, and marginal."""
    by_mode = {m: {r["rooms"]: r for r in rows if r["mode"] == m} for m in ("passthrough", "transcode")}
    if not by_mode["passthrough"] or not by_mode["transcode"]:
        return
    print()
    for n in sorted(set(by_mode["passthrough"]) & set(by_mode["transcode"])):
        p, t = by_mode["passthrough"][n], by_mode["transcode"][n]
        print(f"{n} rooms: transcode / passthrough server CPU = {t['cpu_pct'] / p['cpu_pct']:.1f}x")
    slopes = {m: cpu_per_room(list(by_mode[m].values())) for m in by_mode}
    if slopes["passthrough"] and slopes["transcode"]:
        print(f"CPU per added room: passthrough {slopes['passthrough']:.2f} %, transcode "
              f"{slopes['transcode']:.2f} % of a core: {slopes['transcode'] / slopes['passthrough']:.1f}x")

if __name__ == "__main__":
    sys.exit(main())
