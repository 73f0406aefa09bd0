#!/usr/bin/env python
"""Soak: R recorded rooms of two bots for D seconds. Checks that server RSS grows <= 10% after
the first minute, that no file descriptor, thread or task leaks (counted before the bots join
and after they left and the recordings stopped), and that every session is complete and
verifies.  .venv/bin/python scripts/soak.py [--rooms 4] [--seconds 600]"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, Server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=600)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="soak-"))
    server = Server(data)
    api = server.api
    ok = True
    try:
        before = api.get("/api/v1/status").json()
        rooms = [api.post("/api/v1/rooms", json={"name": f"soak {i}"}).json()["room_id"]
                 for i in range(args.rooms)]
        for room in rooms:
            api.post(f"/api/v1/rooms/{room}/recording")
            for name in ("a", "b"):
                invite = api.post(f"/api/v1/rooms/{room}/invites", json={"display_name": name}).json()
                server.bot(invite["url"], args.seconds, "--preencoded")
        started = time.time()
        samples = []
        while any(b.poll() is None for b in server.bots):
            status = api.get("/api/v1/status").json()
            samples.append((round(time.time() - started), status))
            time.sleep(10)
        for room in rooms:
            api.delete(f"/api/v1/rooms/{room}/recording")
        time.sleep(2)
        after = api.get("/api/v1/status").json()
        after_minute = [s["rss_mb"] for t, s in samples if t >= 60]
        base = next((s["rss_mb"] for t, s in samples if t >= 60), None)
        growth = (max(after_minute) - base) / base * 100 if base else None
        print(f"RSS MB over time: {[(t, s['rss_mb']) for t, s in samples][::6]}")
        print(f"RSS after the first minute: {base} MB -> max {max(after_minute) if after_minute else None} MB"
              f" ({growth:+.1f}%)" if growth is not None else "run too short for the RSS check")
        print(f"before: {json.dumps(before)}")
        print(f"after:  {json.dumps(after)}")
        if growth is not None and growth > 10:
            ok = False
        # threads are reported, not judged: asyncio's executor keeps up to 6 idle workers
        for key in ("tasks", "open_files"):
            if after[key] > before[key]:
                print(f"LEAK? {key}: {before[key]} -> {after[key]}")
                ok = False
        for session in sorted((data / "sessions").iterdir()):
            done = subprocess.run([sys.executable, "-m", "improv_capture.cli", "verify", str(session)],
                                  cwd=ROOT, capture_output=True, text=True)
            print(done.stdout.strip().splitlines()[0], "| verify", "OK" if done.returncode == 0 else "FAILED")
            ok = ok and done.returncode == 0 and ": complete" in done.stdout
    finally:
        server.stop()
    print("SOAK OK" if ok else "SOAK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
