"""A studio performer at home on a bad link: behind NAT, 30 % of the packets towards the server
lost and the upload capped at 3 Mbit/s, and for 1 s everything (a test host in a network
namespace, tests/netns.py),
in real Chromium. The live copy loses what the network lost (`partial`, its gaps marked); the
high-quality copy, recorded in the browser and uploaded over TCP, arrives whole and is placed
on the session timeline."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import manifest, start_recording, stop_recording, verify, wait_for
from tests.netns import Network
from tests.static.clip import HD, Clip, write_clip
from tests.static.pages import (
    accept_and_join,
    fake_capture_args,
    open_invite,
    upload_state,
)

pytestmark = pytest.mark.network

LOSS_UP = 0.3
RATE_UP = 3_000_000
RECORD_S = 10.0
#: a burst of total loss in the middle of the take (shorter than the 2 s after which a
#: connection counts as dark: its frames are lost upstream, not a reconnection)
BURST_S = 1.0


@contextmanager
def chromium_in(executables: list[Path], clip: Clip, origin: str) -> Iterator[list[Any]]:
    """One Chromium per ``executables`` (hosts' wrappers); ``origin`` counts as secure, as the
    HTTPS origin of a real deployment would (the page needs a secure context for the camera)."""
    from playwright.sync_api import sync_playwright

    args = fake_capture_args(clip) + [f"--unsafely-treat-insecure-origin-as-secure={origin}"]
    with sync_playwright() as playwright:
        browsers: list[Any] = []
        try:
            for executable in executables:
                browsers.append(playwright.chromium.launch(executable_path=str(executable), args=args))
            yield browsers
        finally:
            for browser in browsers:
                browser.close()


def test_a_lossy_capped_home_link_loses_live_packets_but_not_the_studio_copy(
    hosts: Network, tmp_path: Path
) -> None:
    home = hosts.add(nat=True, loss_up=LOSS_UP, rate_up=RATE_UP)
    office = hosts.add()
    server = hosts.server()
    created = server.api("POST", "/api/v1/rooms", json={"name": "home", "profile": "studio"})
    assert created.status_code == 201, created.text
    room = created.json()["room_id"]
    clip = write_clip(tmp_path / "clip", size=HD)
    lossy, steady = server.invite(room, "At home"), server.invite(room, "In the office")

    wrappers = [home.chromium_wrapper(tmp_path), office.chromium_wrapper(tmp_path)]
    with chromium_in(wrappers, clip, server.url) as (home_browser, office_browser):
        pages = {lossy["performer_id"]: accept_and_join(open_invite(home_browser, lossy["url"])),
                 steady["performer_id"]: accept_and_join(open_invite(office_browser, steady["url"]))}
        for page in pages.values():
            page.wait_for_function("document.body.dataset.state === 'joined'", timeout=30000)
        session = start_recording(server, room)["session_id"]
        time.sleep(RECORD_S / 2)
        # and a moment in which the link loses everything: 30 % alone was sometimes repaired
        # in full (NACK and retransmission), and then the live copy lost nothing
        home.link_down()
        time.sleep(BURST_S)
        home.link_up()
        time.sleep(RECORD_S / 2 - BURST_S)
        stop_recording(server, room)
        done = {pid: wait_for(lambda p=page: (lambda u: u if u["state"] == "complete" else None)(
                    upload_state(p)), 90, f"{pid}'s copy uploaded", every=0.5)
                for pid, page in pages.items()}
    assert home.dropped()["up"] > 0

    session_dir = server.session_dir(session)

    def settled() -> dict[str, Any] | None:
        data = manifest(session_dir)
        return data if all((p.get("hq") or {}).get("state") not in (None, "uploading")
                           for p in data["performers"]) else None

    archive = wait_for(settled, 120, "both copies placed", every=0.5)
    performers = {p["performer_id"]: p for p in archive["performers"]}
    # the live copy lost what the network lost, and says where
    assert archive["state"] == "partial", archive["reason"]
    live_gaps = [g for t in performers[lossy["performer_id"]]["tracks"] for g in t["gaps"]]
    assert any(g["reason"] == "lost upstream" for g in live_gaps), live_gaps
    assert lossy["performer_id"] in archive["reason"]
    # the browser's own copy is whole, every chunk the page recorded, and placed
    for pid, performer in performers.items():
        hq = performer["hq"]
        assert hq["state"] == "complete", (pid, hq)
        assert hq["upload"]["chunks"] == done[pid]["recorded"], (hq["upload"], done[pid])
        assert (hq["width"], hq["height"]) == HD, hq
        assert hq["coverage"] and hq["coverage"][0]["end_s"] - hq["coverage"][0]["start_s"] > RECORD_S - 4
        for part in hq["alignment"]["parts"]:
            assert part["audio"] and part["video"], part  # both streams placed by their content
    status, report = verify(session_dir)  # decodes both copies, re-measures the alignment
    assert status == 0, report["defects"]
