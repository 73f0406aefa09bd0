"""The operator console, end to end: a headless Chromium console and two headless Chromium
performers; everything the operator does is checked in the archive it produces."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from improv_capture.clock import parse_utc
from tests.helpers import ServerProcess, manifest, verify
from tests.static.pages import console_page, join, leave, tile_ready, wait_playing

pytestmark = pytest.mark.browser

SCREENSHOTS = "test-artifacts"


def test_console_runs_a_session(server: ServerProcess, browser: Any) -> None:
    console = console_page(browser, server)

    console.get_by_test_id("room-create-name").fill("Scene study")
    console.get_by_test_id("room-create").click()
    room_item = console.get_by_test_id("room-item").filter(has_text="Scene study")
    room_item.wait_for(timeout=5000)
    room_item.click()
    room_id = room_item.get_attribute("data-room-id")
    invites = {}
    for name in ("Alice", "Bob"):
        console.get_by_test_id("invite-name").fill(name)
        console.get_by_test_id("invite-create").click()
        # the item starts with the name (an invite URL's token may hold it anywhere)
        item = console.get_by_test_id("invite-item").filter(has_text=re.compile(f"^{name}"))
        item.wait_for(timeout=5000)
        invites[name] = {
            "performer_id": item.get_attribute("data-performer-id"),
            "url": next(i["url"] for i in server.api("GET", f"/api/v1/rooms/{room_id}/invites")
                        .json()["items"] if i["display_name"] == name),
        }
        assert invites[name]["url"] in item.inner_text()

    performers = {name: join(browser, inv["url"]) for name, inv in invites.items()}
    for page in performers.values():
        page.wait_for_function("document.body.dataset.state === 'joined'", timeout=20000)
    wait_playing(performers["Alice"], invites["Bob"]["performer_id"])

    # two live tiles with stats
    deadline = time.time() + 20
    while not all(tile_ready(console, inv["performer_id"]) for inv in invites.values()):
        assert time.time() < deadline, "monitor tiles did not play"
        time.sleep(0.25)
    for inv in invites.values():
        tile = console.locator(f'[data-testid=monitor-tile][data-performer-id="{inv["performer_id"]}"]')
        console.wait_for_function(
            "(el) => /fps/i.test(el.textContent) && /kbps|kbit|Mbps/i.test(el.textContent)",
            arg=tile.element_handle(), timeout=5000,
        )

    # record: the performers see REC
    console.get_by_test_id("record-toggle").click()
    for page in performers.values():
        page.get_by_test_id("rec-indicator").wait_for(state="visible", timeout=3000)
    session_id = server.api("GET", f"/api/v1/rooms/{room_id}").json()["recording"]["session_id"]
    # the recording state and its timer survive a console reload
    console.reload()
    console.wait_for_function("document.body.dataset.console === 'ready'", timeout=10000)
    if not console.get_by_test_id("record-toggle").is_visible():
        console.get_by_test_id("room-item").filter(has_text="Scene study").click()
    console.wait_for_function(
        "document.querySelector('[data-testid=record-state]').dataset.state === 'recording'",
        timeout=10000,
    )
    console.wait_for_function(
        "parseFloat(document.querySelector('[data-testid=record-elapsed]').dataset.elapsedS) > 0",
        timeout=5000,
    )
    started = parse_utc(server.api("GET", f"/api/v1/rooms/{room_id}").json()["recording"]["started_at"])

    # each action's marker is stamped when the server hears of it: after the test began the
    # action, and soon after the browser carried it out (a busy machine's click takes a while:
    # a marker 0.72 s after the click returned in a full run)
    actions: list[tuple[str, str, float, float]] = []

    def act(kind: str, label: str, action: Any) -> None:
        began = time.time()
        action()
        actions.append((kind, label, began, time.time()))

    time.sleep(0.5)
    act("scene", "", console.get_by_test_id("marker-scene").click)
    time.sleep(0.5)
    console.locator("body").click(position={"x": 640, "y": 790})
    act("take", "", lambda: console.keyboard.press("t"))
    time.sleep(0.5)
    console.get_by_test_id("marker-note").click()
    console.get_by_test_id("note-text").fill("great energy")
    act("note", "great energy", lambda: console.get_by_test_id("note-text").press("Enter"))
    time.sleep(0.5)
    console.locator("body").click(position={"x": 640, "y": 790})
    act("cut", "", lambda: console.keyboard.press("c"))
    console.get_by_test_id("prompt-text").fill("You just found out you are twins")
    console.get_by_test_id("prompt-emotion").fill("surprise") if console.get_by_test_id(
        "prompt-emotion").evaluate("el => el.tagName") == "INPUT" else console.get_by_test_id(
        "prompt-emotion").select_option("surprise")
    act("prompt", "", console.get_by_test_id("prompt-send").click)
    for page in performers.values():
        page.wait_for_function(
            "document.querySelector('[data-testid=prompt]').textContent.includes('twins')",
            timeout=3000,
        )
    console.wait_for_function(
        "document.querySelectorAll('[data-testid=take-list] li').length >= 5", timeout=5000
    )
    console.screenshot(path=f"{SCREENSHOTS}/console.png")
    performers["Bob"].screenshot(path=f"{SCREENSHOTS}/performer-prompt.png")

    console.get_by_test_id("record-toggle").click()
    for page in performers.values():
        page.get_by_test_id("rec-indicator").wait_for(state="hidden", timeout=10000)
    leave(*performers.values())
    deadline = time.time() + 30
    while manifest(server.session_dir(session_id))["state"] == "recording":
        assert time.time() < deadline
        time.sleep(0.2)

    # the session appears as complete, with the markers and the prompt at the right times
    console.get_by_test_id("tab-sessions").click()
    row = console.get_by_test_id("session-row").filter(has_text="complete").first
    row.wait_for(timeout=10000)
    row.click()
    console.wait_for_function(
        "document.querySelectorAll('[data-testid=session-video]').length === 2", timeout=15000
    )
    console.get_by_test_id("session-play").click()
    console.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid=session-video]')]
            .every((v) => v.currentTime > 1 && !v.paused)""",
        timeout=15000,
    )
    console.screenshot(path=f"{SCREENSHOTS}/console-session.png")
    session_dir = server.session_dir(session_id)
    status, report = verify(session_dir)
    assert status == 0, report["defects"]
    archive = manifest(session_dir)
    assert archive["state"] == "complete"
    (prompt,) = archive["prompts"]
    markers = archive["markers"]
    assert [m["kind"] for m in markers] + ["prompt"] == [a[0] for a in actions]
    for marker, (kind, label, began, done) in zip([*markers, prompt], actions):
        assert began - started - 0.1 <= marker["t_s"] <= done - started + 1.0, (
            marker, began - started, done - started)
        if label:
            assert marker["label"] == label
    assert prompt["text"] == "You just found out you are twins"
    assert prompt["target_emotion"] == "surprise"
    events = [json.loads(x) for x in (session_dir / "events.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events if e["type"] == "marker"] == [a[0] for a in actions[:-1]]
    assert [e["text"] for e in events if e["type"] == "prompt"] == [prompt["text"]]
