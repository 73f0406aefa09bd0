#!/usr/bin/env python
"""Benchmark: how well a real browser's high-quality copy lines up with its live copy over a
long take (targets, issue #11: audio within 2 ms and video within 5 ms of the live copy,
flash and beep onsets compared pair by pair; the A/V offset inside the copy within 10 ms of
the live copy's; the error at the end of the take within one frame of the error at its start).

Two headless Chromium performers in a studio room, their fake camera and microphone playing
the 1280x720 flash/beep clip of the browser tests (tests/static/clip.py), record a take of
--seconds; then every performer's copy is compared with their live copy.

Usage: .venv/bin/python scripts/bench_studio_browser.py [--seconds 120]"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from improv_capture.recorder.verify import onset_errors_ms  # noqa: E402
from tests.helpers import ServerProcess, manifest, verify, wait_for  # noqa: E402
from tests.static.clip import HD, write_clip  # noqa: E402
from tests.static.pages import CHROMIUM, accept_and_join, fake_capture_args, open_invite  # noqa: E402

FRAME_MS = 1000 / 30


def summary(values: list[float]) -> str:
    return (f"median {statistics.median(values):+.2f}, max |e| {max(abs(v) for v in values):.2f} "
            f"({len(values)} pairs)") if values else "no pairs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="bench-studio-browser-"))
    clip = write_clip(work / "clip", size=HD)
    server = ServerProcess(work / "data").start()
    try:
        room = server.api("POST", "/api/v1/rooms", json={"name": "b", "profile": "studio"}).json()["room_id"]
        invites = [server.invite(room, name) for name in ("Ann", "Ben")]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=fake_capture_args(clip))
            pages = [accept_and_join(open_invite(browser, i["url"])) for i in invites]
            for page in pages:
                page.wait_for_function("document.body.dataset.state === 'joined'", timeout=30000)
            session = server.api("POST", f"/api/v1/rooms/{room}/recording").json()["session_id"]
            time.sleep(args.seconds)
            stopped = time.monotonic()
            server.api("DELETE", f"/api/v1/rooms/{room}/recording", timeout=120)
            session_dir = server.session_dir(session)
            wait_for(lambda: all((p.get("hq") or {}).get("state") not in (None, "uploading")
                                 for p in manifest(session_dir)["performers"]),
                     600, "every copy placed", every=1.0)
            print(f"every copy placed {time.monotonic() - stopped:.1f} s after the stop")
            browser.close()
        status, report = verify(session_dir)
        print("verify:", "ok" if status == 0 else report["defects"])
        for performer in manifest(session_dir)["performers"]:
            pid, hq = performer["performer_id"], performer["hq"]
            live = session_dir / "performers" / f"{pid}.webm"
            onsets = onset_errors_ms(live, session_dir / hq["file"]["path"])
            print(f"{pid}: hq {hq['state']} {hq['width']}x{hq['height']} at {hq['frame_rate']} fps, "
                  f"{hq['upload']['chunks']} chunks, {hq['upload']['bytes'] / 1e6:.1f} MB")
            for kind in ("audio", "video"):
                errors, at = onsets[kind], onsets[f"{kind}_at"]
                third = max(1, len(errors) // 3)
                drift = (statistics.median(errors[-third:]) - statistics.median(errors[:third])
                         if errors else float("nan"))
                print(f"  {kind} onset error (ms): {summary(errors)}; end - start {drift:+.2f} "
                      f"(a frame is {FRAME_MS:.1f}); over {at[-1] - at[0] if at else 0:.0f} s")
            live_av, hq_av = onsets["av_offset_ms"]
            print(f"  A/V offset (ms): live {live_av}, hq {hq_av}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
