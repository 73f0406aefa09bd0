"""A performer who changes camera in the middle of a studio take: the page's copy starts a new
part (never a silent hole), both parts arrive, and the copy is complete with two coverage
ranges. Chromium's default fake devices, two cameras (`device-count=2`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import (
    ServerProcess,
    manifest,
    start_recording,
    stop_recording,
    verify,
    wait_for,
)
from tests.static.pages import (
    CHROMIUM_ARGS,
    accept_and_join,
    chromium,
    leave,
    open_invite,
    upload_state,
)

pytestmark = pytest.mark.browser


@pytest.fixture
def two_cameras(browser_required: bool) -> Iterator[Any]:
    args = [a for a in CHROMIUM_ARGS if a != "--use-fake-device-for-media-stream"]
    with chromium([*args, "--use-fake-device-for-media-stream=device-count=2"],
                  browser_required) as instance:
        yield instance


def test_a_camera_changed_mid_take_starts_a_new_part_and_loses_nothing(
    server: ServerProcess, two_cameras: Any
) -> None:
    room = server.create_room("switch", profile="studio")
    invite = server.invite(room, "Dana")
    page = accept_and_join(open_invite(two_cameras, invite["url"]))
    page.wait_for_function("document.body.dataset.state === 'joined'", timeout=20000)
    cameras = page.evaluate("() => [...document.querySelectorAll('#camera-select option')].map(o => o.value)")
    assert len(cameras) == 2, cameras
    current = page.evaluate("() => document.querySelector('#camera-select').value")

    session = start_recording(server, room)["session_id"]
    wait_for(lambda: upload_state(page)["recorded"] >= 2, 15, "the first part recording")
    page.select_option("#camera-select", next(c for c in cameras if c != current))
    wait_for(lambda: len(upload_state(page)["parts"]) == 2 and upload_state(page)["parts"][1]["recorded"] >= 2,
             15, "a second part after the camera changed")
    time.sleep(1)
    stop_recording(server, room)
    done = wait_for(lambda: (lambda u: u if u["state"] == "complete" else None)(upload_state(page)), 60,
                    "every chunk acknowledged")
    assert [p["reason"] for p in done["parts"]] == ["start", "device_change"], done
    leave(page)

    session_dir = server.session_dir(session)
    hq = wait_for(lambda: (lambda h: h if h.get("state") not in (None, "uploading") else None)(
        manifest(session_dir)["performers"][0].get("hq") or {}), 60, "the copy placed", every=0.25)
    assert hq["state"] == "complete", hq
    assert hq["upload"]["parts"] == 2 and hq["upload"]["chunks"] == done["recorded"], (hq, done)
    assert len(hq["coverage"]) == 2, hq["coverage"]
    gap = hq["coverage"][1]["start_s"] - hq["coverage"][0]["end_s"]
    # the switch, not a silent hole (the parts may touch: the new recorder starts as the old
    # one hands over its last frames, which placement keeps once)
    assert -0.1 <= gap < 1.5, hq["coverage"]
    status, report = verify(session_dir)
    assert status == 0, report["defects"]
