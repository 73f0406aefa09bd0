#!/usr/bin/env python
"""Benchmark: how long finalising a long session takes (the target: a 10 minute
two-performer session in under 5 s). Usage: .venv/bin/python scripts/bench_finalise.py
[--performers 2] [--seconds 600]"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from improv_capture.recorder.finalise import finalise_session
from improv_capture.recorder.synthetic import write_session


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--performers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    times = []
    for run in range(args.runs):
        root = Path(tempfile.mkdtemp(prefix="bench-finalise-"))
        try:
            session = write_session(root / f"ses_bench{run}", args.performers, args.seconds)
            size = sum(p.stat().st_size for p in session.rglob("*") if p.is_file())
            began = time.perf_counter()
            manifest = finalise_session(session)
            times.append(time.perf_counter() - began)
            frames = sum(t["frames"] for p in manifest["performers"] for t in p["tracks"])
            print(f"run {run + 1}: {times[-1]:.2f} s to finalise {args.performers} x "
                  f"{args.seconds:.0f} s ({size / 1e6:.0f} MB capture, {frames} frames, "
                  f"state {manifest['state']})")
        finally:
            shutil.rmtree(root, ignore_errors=True)
    print(f"median {sorted(times)[len(times) // 2]:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
