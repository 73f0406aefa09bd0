#!/usr/bin/env python
"""The operator guide's picture of a studio room while its copies upload
(docs/img/console-studio.png): a server, two performers in headless Chromium (fake camera and
microphone) in a studio room, and the console eight seconds into a take, each performer's copy
uploading as it records.

Usage: .venv/bin/python scripts/screenshot_studio.py [--out docs/img/console-studio.png]"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
                 "--disable-features=WebRtcHideLocalIpsWithMdns", "--disable-gpu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "console-studio.png")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    data, port = Path(tempfile.mkdtemp(prefix="shot-studio-")), free_port()
    env = {**os.environ, "IMPROV_ICE_ALLOWED_NETWORKS": '["127.0.0.0/8"]'}
    server = subprocess.Popen([sys.executable, "-m", "improv_capture.cli", "serve", "--port", str(port),
                               "--data-dir", str(data)], cwd=REPO, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        token = (data / "operator_token").read_text().strip()
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
        room = api.post("/api/v1/rooms", json={"name": "Scene 4: the reunion",
                                               "profile": "studio"}).json()["room_id"]
        invites = [api.post(f"/api/v1/rooms/{room}/invites", json={"display_name": n}).json()
                   for n in ("Maya", "Jonas")]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            for invite in invites:
                page = browser.new_context().new_page()
                page.goto(invite["url"])
                page.get_by_test_id("consent-accept").click()
                page.wait_for_selector("[data-testid=join]:not([disabled])", timeout=20000)
                page.get_by_test_id("join").click()
                page.wait_for_selector("body[data-state=joined]", timeout=30000)
            console = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
            console.goto(f"{base}/console#token={token}")
            console.get_by_test_id("room-item").first.click()
            api.post(f"/api/v1/rooms/{room}/recording")
            console.wait_for_selector("[data-testid=room-upload][data-state=uploading]", timeout=20000)
            time.sleep(8)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            console.screenshot(path=str(args.out))
            api.delete(f"/api/v1/rooms/{room}/recording", timeout=60)
            browser.close()
        print(f"wrote {args.out}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
