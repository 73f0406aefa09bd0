"""The performer page survives a network drop, and shows clear errors for bad invites."""

from __future__ import annotations

import time
from typing import Any

import pytest

from improv_capture.rooms.invites import Invite
from tests.helpers import ServerProcess
from tests.proxy import DroppingProxy
from tests.static.pages import join, wait_playing

pytestmark = pytest.mark.browser


def peer_state(page: Any, performer_id: str) -> str | None:
    return page.evaluate(  # type: ignore[no-any-return]
        """(pid) => {
            const peers = window.improv.peers || [];
            const p = (Array.isArray(peers) ? peers : Object.values(peers))
                .find((x) => x.performer_id === pid);
            return p ? p.state : null;
        }""",
        performer_id,
    )


def test_page_reconnects_after_a_network_drop(server: ServerProcess, browser: Any) -> None:
    room = server.create_room()
    alice, bob = server.invite(room, "Alice"), server.invite(room, "Bob")
    with DroppingProxy(server.port) as proxy:
        alice_url = alice["url"].replace(f":{server.port}/", f":{proxy.port}/")
        alice_page, bob_page = join(browser, alice_url), join(browser, bob["url"])
        for page in (alice_page, bob_page):
            page.wait_for_function("document.body.dataset.state === 'joined'", timeout=20000)
        wait_playing(bob_page, alice["performer_id"])

        proxy.drop(3)
        deadline = time.time() + 5
        while peer_state(bob_page, alice["performer_id"]) != "reconnecting":
            assert time.time() < deadline, "Bob never saw Alice reconnecting"
            time.sleep(0.1)
        performers = server.api("GET", f"/api/v1/rooms/{room}").json()["performers"]
        assert {p["performer_id"]: p["state"] for p in performers}[alice["performer_id"]] == (
            "reconnecting"
        )

        # the link comes back after 3 s: Alice takes her seat back without a click
        deadline = time.time() + 20
        while peer_state(bob_page, alice["performer_id"]) != "joined":
            assert time.time() < deadline, "Alice did not come back"
            time.sleep(0.2)
        alice_page.wait_for_function("document.body.dataset.state === 'joined'", timeout=20000)
        wait_playing(bob_page, alice["performer_id"])
        wait_playing(alice_page, bob["performer_id"])
        performers = server.api("GET", f"/api/v1/rooms/{room}").json()["performers"]
        assert sorted(p["performer_id"] for p in performers) == sorted(
            [alice["performer_id"], bob["performer_id"]]
        )


def test_page_explains_a_bad_invite(server: ServerProcess, browser: Any) -> None:
    room = server.create_room()
    expired = server.invite_signer().sign(Invite(room, "p-late", "Late", time.time() - 5))
    cases = {
        f"{server.url}/join#invite={expired}": "expired",
        f"{server.url}/join#invite=not-a-token": "not valid",
    }
    context = browser.new_context(bypass_csp=True)  # for wait_for_function (eval)
    for url, words in cases.items():
        page = context.new_page()
        page.goto(url)
        page.wait_for_function("document.body.dataset.state === 'error'", timeout=10000)
        assert words in page.get_by_test_id("error").inner_text()
        page.close()
