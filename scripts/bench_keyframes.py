#!/usr/bin/env python
"""Benchmark: how soon after a take marker the archive has a keyframe of every performer
(issue #13: an export cuts a take's video by stream copy from that keyframe).

A room records while the operator sets --marks take markers, 0.8-1.4 s apart (seeded, so
that they fall anywhere in a frame interval); each marker asks every publisher for a
keyframe (rooms/recording.py). The delay of a marker, per performer, is the session time of
the first keyframe placed at or after the marker (less KEYFRAME_EARLY_S: a frame captured
before the request arrived may carry it) minus the marker's time. Run with two bots, then
with --chromium headless Chromium performers (fake camera and microphone).

Prints a Markdown table (docs/benchmarks.md).

Usage: .venv/bin/python scripts/bench_keyframes.py [--marks 20] [--chromium 2] [--no-bots]"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import (  # noqa: E402
    BotProcess,
    ServerProcess,
    manifest,
    publishing,
    start_recording,
    stop_recording,
    wait_for,
)
from tests.server.test_take_keyframes import KEYFRAME_EARLY_S, keyframe_times  # noqa: E402
from tests.static.pages import CHROMIUM, CHROMIUM_ARGS, join  # noqa: E402

SPACING_S = (0.8, 1.4)
SEED = 13


@contextmanager
def bot_performers(server: ServerProcess, room: str, count: int, work: Path) -> Iterator[None]:
    bots = [BotProcess(server.invite(room, f"Bot{n}")["url"], 3600, work / f"bot{n}.json").start()
            for n in range(count)]
    try:
        yield
    finally:
        for bot in bots:
            bot.finish()


@contextmanager
def chromium_performers(server: ServerProcess, room: str, count: int, work: Path) -> Iterator[None]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pages = [join(browser, server.invite(room, f"Page{n}")["url"]) for n in range(count)]
            for page in pages:
                page.wait_for_function("document.body.dataset.state === 'joined'", timeout=30000)
            yield
        finally:
            browser.close()


def measure(work: Path, performers: Callable[..., object], count: int, marks: int) -> list[float]:
    """Keyframe delays (s), one per marker per performer."""
    server = ServerProcess(work / "data").start()
    rng = random.Random(SEED)
    try:
        room = server.create_room("keyframes")
        with performers(server, room, count, work):  # type: ignore[operator]
            wait_for(lambda: publishing(server, room, count), 60, f"{count} publishers")
            session = start_recording(server, room)
            time.sleep(1.0)
            for n in range(marks):
                response = server.api("POST", f"/api/v1/rooms/{room}/markers",
                                      json={"kind": "take", "label": str(n + 1)})
                assert response.status_code == 201, response.text
                time.sleep(rng.uniform(*SPACING_S))
            stop_recording(server, room)
        session_dir = server.session_dir(session["session_id"])
        archive = manifest(session_dir)
        times = [m["t_s"] for m in archive["markers"]]
        delays = []
        for performer in archive["performers"]:
            keyframes = keyframe_times(session_dir / performer["file"]["path"])
            for mark in times:
                after = [k for k in keyframes if k >= mark - KEYFRAME_EARLY_S]
                delays.append(after[0] - mark if after else float("inf"))
        return delays
    finally:
        server.stop()


def row(setup: str, marks: int, delays: list[float]) -> str:
    ms = [d * 1000 for d in delays]
    return (f"| {setup} | {marks} | {len(ms)} | {statistics.median(ms):.0f} | {min(ms):.0f} | "
            f"{max(ms):.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--marks", type=int, default=20)
    parser.add_argument("--bots", type=int, default=2, help="bot performers (0: none)")
    parser.add_argument("--chromium", type=int, default=2, help="Chromium performers (0: none)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-keyframes-") as tmp:
        work = Path(tmp)
        if args.bots:
            delays = measure(work / "bots", bot_performers, args.bots, args.marks)
            rows.append(row(f"{args.bots} bots (aiortc VP8)", args.marks, delays))
        if args.chromium:
            delays = measure(work / "chromium", chromium_performers, args.chromium, args.marks)
            rows.append(row(f"{args.chromium} Chromium (fake camera, VP8)", args.marks, delays))
    print("| performers | marks | delays (marks x performers) | median (ms) | min (ms) | max (ms) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\n(negative: the keyframe is placed before the marker; load average at the end "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
