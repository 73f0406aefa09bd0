"""Two headless Chromium performers join from invite links and see and hear each other."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.helpers import (
    ServerProcess,
    manifest,
    start_recording,
    stop_recording,
    verify,
)
from tests.static.pages import join, max_level, wait_playing

pytestmark = pytest.mark.browser

SCREENSHOTS = "test-artifacts"



def test_two_browsers_see_and_hear_each_other(server: ServerProcess, browser: Any) -> None:
    room = server.create_room("browser room")
    alice, bob = server.invite(room, "Alice"), server.invite(room, "Bob")
    pages = {alice["performer_id"]: join(browser, alice["url"]),
             bob["performer_id"]: join(browser, bob["url"])}
    for page in pages.values():
        page.wait_for_function("document.body.dataset.state === 'joined'", timeout=20000)
    for me, page in pages.items():
        (other,) = [pid for pid in pages if pid != me]
        video = wait_playing(page, other)
        assert (video["width"], video["height"]) == (640, 480)
        assert max_level(page, other, above=0.01) > 0.01, "remote audio is silent"
        label = page.locator(f'[data-performer-id="{other}"]').first
        assert label.count() == 1
    page_text = pages[alice["performer_id"]].locator("#remote-grid").inner_text()
    assert "Bob" in page_text

    # what the page told the server about its capture, for the recorder
    state = server.api("GET", f"/api/v1/rooms/{room}").json()
    for performer in state["performers"]:
        assert performer["consent"]["version"] == "1"
        capture = performer["capture"]
        assert capture["video_settings"]["width"] == 640
        assert capture["video_settings"]["height"] == 480
        assert "echoCancellation" in capture["audio_processing"]
        assert "Chrome" in capture["user_agent"]
        assert performer["publishing"] == ["audio", "video"]

    # the REC indicator shows within 1 s of the start on every page, and hides at the stop
    session = start_recording(server, room)
    started = time.time()
    for page in pages.values():
        page.get_by_test_id("rec-indicator").wait_for(state="visible", timeout=1000)
    assert time.time() - started < 1.0
    prompt = {"text": "You just won the lottery", "target_emotion": "joy", "intensity": 0.8}
    assert server.api("POST", f"/api/v1/rooms/{room}/prompt", json=prompt).status_code == 201
    for page in pages.values():
        page.wait_for_function(
            "document.querySelector('[data-testid=prompt]').textContent.includes('lottery')",
            timeout=2000,
        )
    pages[alice["performer_id"]].screenshot(path=f"{SCREENSHOTS}/performer-joined.png")
    time.sleep(3)
    assert stop_recording(server, room)["state"] == "complete"
    for page in pages.values():
        page.get_by_test_id("rec-indicator").wait_for(state="hidden", timeout=2000)
    session_dir = server.session_dir(session["session_id"])
    status, report = verify(session_dir)
    assert status == 0, report["defects"]
    archive = manifest(session_dir)
    assert archive["prompts"][0]["text"] == prompt["text"]
    for performer in archive["performers"]:
        assert "Chrome" in performer["capture"]["user_agent"]
        decoded = report["performers"][performer["performer_id"]]
        assert decoded["video_frames"] >= 40 and decoded["audio_frames"] >= 100, decoded

    # leave and rejoin with the same invite
    bob_page = pages[bob["performer_id"]]
    bob_page.get_by_test_id("leave").click()
    bob_page.wait_for_function("document.body.dataset.state === 'left'", timeout=10000)
    alice_page = pages[alice["performer_id"]]
    alice_page.wait_for_function(
        "() => !document.querySelector('video[data-testid=remote-video]')", timeout=10000
    )
    bob_page.get_by_test_id("join").click()
    bob_page.wait_for_function("document.body.dataset.state === 'joined'", timeout=20000)
    wait_playing(alice_page, bob["performer_id"])
    wait_playing(bob_page, alice["performer_id"])
