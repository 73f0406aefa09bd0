"""Real browsers against `serve --workers 2`: performer pages reach a room on worker 1 through
the router, and find each other again on their own after that worker is killed and restarted."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from tests.helpers import ServerProcess
from tests.static.pages import join, wait_playing

pytestmark = pytest.mark.browser


def test_pages_meet_on_a_worker_and_find_each_other_after_it_restarts(
    cluster: ServerProcess, browser: Any
) -> None:
    cluster.create_room("on worker 0")
    room = cluster.create_room("on worker 1")
    assert cluster.api("GET", f"/api/v1/rooms/{room}").json()["worker"] == 1
    invites = [cluster.invite(room, name) for name in ("Alice", "Bob")]
    pages = {invite["performer_id"]: join(browser, invite["url"]) for invite in invites}
    for page in pages.values():
        page.wait_for_function("document.body.dataset.state === 'joined'", timeout=20000)
    for me, page in pages.items():
        (other,) = [pid for pid in pages if pid != me]
        wait_playing(page, other)

    worker = cluster.api("GET", "/api/v1/status").json()["workers"][1]["pid"]
    os.kill(worker, signal.SIGKILL)
    deadline = time.time() + 45
    while time.time() < deadline:  # the router restarts the worker; the pages reconnect to it
        status = cluster.api("GET", f"/api/v1/rooms/{room}")
        if status.status_code == 200 and sum(
            p["publishing"] == ["audio", "video"] for p in status.json()["performers"]
        ) == 2:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the pages did not come back: {status.status_code} {status.text}")
    for me, page in pages.items():
        (other,) = [pid for pid in pages if pid != me]
        assert page.evaluate("document.body.dataset.state") == "joined"
        wait_playing(page, other, timeout=30)
