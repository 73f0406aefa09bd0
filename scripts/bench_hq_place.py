#!/usr/bin/env python
"""Benchmark: placing a studio performer's high-quality copy of a long take on the session
timeline (targets: a 10-minute 1280x720 take in under 10 s; its error at the end within one
frame of its error at the start). A synthetic scene (recorder/synthetic.py: a different
picture every frame, a flash and a chirp every second) is filmed by the live copy at 640x360
and by the copy at 1280x720, whose sound sits 40 ms late against its pictures (as a browser's
recorder writes it) and whose page clock is 120 ms off; the placement must find both.

Usage: .venv/bin/python scripts/bench_hq_place.py [--seconds 600] [--runs 3]
(generating the media takes a few minutes the first time; it is kept under --workdir)."""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from improv_capture.recorder.hq.place import place_hq
from improv_capture.recorder.hq.uploads import UploadLimits, UploadStore
from improv_capture.recorder.synthetic import SCENE_FPS, Scene, write_hq_part, write_studio_session

STARTED = 1_700_000_000.0
SYNC_OFFSET_S = 0.8  # the page's clock to the server's (the live copy's sender reports)
PAGE_CLOCK_ERROR_S = 0.12
FIRST_FRAME = 66  # the page's recorder starts 2.2 s into the take
CHUNK = 1 << 20


def generate(workdir: Path, seconds: float) -> dict[str, float]:
    truth_file = workdir / "truth.json"
    if truth_file.exists():
        return dict(json.loads(truth_file.read_text()))
    workdir.mkdir(parents=True, exist_ok=True)
    scene = Scene()
    write_studio_session(workdir / "template" / "ses_bench", scene, STARTED, seconds + 6,
                         sync_offset_s=SYNC_OFFSET_S, live_size=(640, 360))
    truth = write_hq_part(workdir / "hq.webm", scene, first_frame=FIRST_FRAME,
                          frames=int(seconds * SCENE_FPS), size=(1280, 720),
                          video_bitrate=4_000_000)
    truth_file.write_text(json.dumps(truth))
    return truth


def upload(store: UploadStore, hq: Path, started_at_ms: float) -> None:
    """The copy as a page sends it: its part, then 1 MiB chunks, then the end."""
    data = hq.read_bytes()
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
    store.declare_part("ses_bench", "p_studio0", 0, {
        "mime_type": "video/webm;codecs=vp8,opus", "started_at_ms": started_at_ms,
        "reason": "start", "video": {"width": 1280, "height": 720, "frame_rate": 30},
        "audio": {"sample_rate": 48000, "channel_count": 1}})
    limits = UploadLimits(max_chunk_bytes=CHUNK, max_total_bytes=len(data) + CHUNK)
    for index, chunk in enumerate(chunks):
        store.put_chunk("ses_bench", "p_studio0", 0, index, chunk,
                        hashlib.sha256(chunk).hexdigest(), len(chunks), limits)
    store.end_part("ses_bench", "p_studio0", 0, len(chunks))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/improv-bench-hq-place"))
    args = parser.parse_args()
    workdir = args.workdir / f"{int(args.seconds)}s"
    began = time.perf_counter()
    truth = generate(workdir, args.seconds)
    print(f"media ready in {time.perf_counter() - began:.0f} s "
          f"({(workdir / 'hq.webm').stat().st_size / 1e6:.0f} MB copy)", flush=True)
    page_start_ms = (STARTED + truth["video_offset_s"] - SYNC_OFFSET_S + PAGE_CLOCK_ERROR_S) * 1000
    walls = []
    for run in range(args.runs):
        data = workdir / "data"
        shutil.rmtree(data, ignore_errors=True)
        shutil.copytree(workdir / "template", data / "sessions")
        store = UploadStore(data / "uploads")
        upload(store, workdir / "hq.webm", page_start_ms)
        wall, cpu = time.perf_counter(), time.process_time()
        hq = place_hq(data / "sessions" / "ses_bench", "p_studio0",
                      store.performer_dir("ses_bench", "p_studio0"), final=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        walls.append(wall)
        assert hq is not None and hq["state"] == "complete", hq
        part = hq["alignment"]["parts"][0]
        errors = {k: round((part[k]["offset_s"] - truth[f"{k}_offset_s"]) * 1000, 3)
                  for k in ("audio", "video")}
        drift = {k: part[k]["drift_ms"] for k in ("audio", "video")}
        print(f"run {run + 1}: placed {args.seconds:.0f} s in {wall:.2f} s wall, {cpu:.2f} s CPU; "
              f"error against the truth (ms) {errors}; drift end-start (ms) {drift}", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"median {sorted(walls)[len(walls) // 2]:.2f} s; peak memory {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
