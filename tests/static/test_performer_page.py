"""Two headless Chromium performers join from invite links and see and hear each other."""

from __future__ import annotations

import time
from typing import Any

from tests.helpers import (
    ServerProcess,
    manifest,
    start_recording,
    stop_recording,
    verify,
)

SCREENSHOTS = "test-artifacts"


def join(browser: Any, invite_url: str) -> Any:
    # wait_for_function evaluates with eval(), which the pages' CSP refuses; the pages under
    # the enforced policy: tests/static/test_content_security_policy.py
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    page = context.new_page()
    page.goto(invite_url)
    page.get_by_test_id("consent-accept").click()
    join_button = page.get_by_test_id("join")
    page.wait_for_function("!document.querySelector('[data-testid=join]').disabled", timeout=15000)
    join_button.click()
    return page


def remote_video(page: Any, performer_id: str) -> dict[str, Any]:
    return dict(
        page.evaluate(
            """(pid) => {
                const v = document.querySelector(
                    `video[data-testid=remote-video][data-performer-id="${pid}"]`);
                return v ? {width: v.videoWidth, height: v.videoHeight, time: v.currentTime,
                            paused: v.paused} : null;
            }""",
            performer_id,
        )
        or {}
    )


def wait_playing(page: Any, performer_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.time() + timeout
    first: dict[str, Any] = {}
    while time.time() < deadline:
        video = remote_video(page, performer_id)
        if video.get("width") == 640 and video["time"] > 0:
            if not first:
                first = video
            elif video["time"] >= first["time"] + 1.0:
                return video
        time.sleep(0.2)
    raise AssertionError(f"remote video of {performer_id} did not play: {remote_video(page, performer_id)}")


def max_level(page: Any, performer_id: str, seconds: float = 4) -> float:
    """Chromium's fake microphone beeps about once a second: watch for a few seconds."""
    best = 0.0
    deadline = time.time() + seconds
    while time.time() < deadline:
        best = max(best, float(page.evaluate("(p) => window.improv.analyserLevel(p)", performer_id)))
        time.sleep(0.05)
    return best


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
        assert max_level(page, other) > 0.01, "remote audio is silent"
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
