"""The pages in a real browser under the server's Content-Security-Policy (api/http_guard.py):
each works from this origin alone, and the policy refuses nothing a page needs.

No wait_for_function here: Playwright evaluates its predicate with eval(), which the policy
refuses (the other browser tests bypass the policy for that reason)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.helpers import ServerProcess

pytestmark = pytest.mark.browser


@dataclass
class Watched:
    """A page with the policy enforced, and what it requested and logged."""

    page: Any
    requests: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def assert_policy_kept(self, server: ServerProcess) -> None:
        assert [u for u in self.requests if not u.startswith((server.url + "/", "data:"))] == []
        assert [m for m in self.messages if "Content Security Policy" in m] == []


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    context = browser.new_context()
    watched = Watched(context.new_page())
    watched.page.on("request", lambda r: watched.requests.append(r.url))
    watched.page.on("console", lambda m: watched.messages.append(f"{m.type}: {m.text}"))
    try:
        yield watched
    finally:
        context.close()


def test_the_api_docs_render_from_this_origin(watched: Watched, server: ServerProcess) -> None:
    page = watched.page
    page.goto(f"{server.url}/docs")
    page.locator(".opblock").first.wait_for(timeout=10000)
    assert page.locator(".opblock").count() > 10
    assert page.locator(".opblock-summary-path", has_text="/api/v1/rooms").count() > 0
    watched.assert_policy_kept(server)


def test_the_console_signs_in_and_goes_live(watched: Watched, server: ServerProcess) -> None:
    page = watched.page
    server.create_room("under policy")
    page.goto(f"{server.url}/console")
    page.get_by_test_id("signin-token").fill(server.token)
    page.get_by_test_id("signin-submit").click()
    page.locator("body[data-console=ready]").wait_for(timeout=10000)
    expect(page.get_by_test_id("room-list")).to_contain_text("under policy")
    watched.assert_policy_kept(server)


def test_a_performer_joins_and_sends_media(watched: Watched, server: ServerProcess) -> None:
    page = watched.page
    room = server.create_room()
    page.goto(server.invite(room, "Ann")["url"])
    page.get_by_test_id("consent-accept").click()
    expect(page.get_by_test_id("join")).to_be_enabled(timeout=15000)
    page.get_by_test_id("join").click()
    deadline_s = 20
    for _ in range(deadline_s * 5):
        performers = server.api("GET", f"/api/v1/rooms/{room}").json()["performers"]
        if performers and len(performers[0]["publishing"]) == 2:
            break
        page.wait_for_timeout(200)
    else:
        raise AssertionError(f"the page did not publish: {performers}")
    watched.assert_policy_kept(server)
