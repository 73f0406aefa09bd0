"""A performer page follows its room when the room's node dies (several nodes sharing Redis):
its socket tries its own node, then the nodes its welcome named, is told where the room is
(`moved`, 4308, or "try later" until a live node holds it), and joins there by itself: its
consent is sent again and its media goes to the room's new node (docs/signaling.md).

A console signed in on the other node meanwhile lists the room as its node changes it (the
performer joining, pushed), watches it through the node that holds it, and goes on watching it
on its new node."""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ServerProcess, publishing, wait_for
from tests.redis_server import RedisServer
from tests.static.pages import console_page, join, leave, tile_ready

pytestmark = pytest.mark.browser

TOKEN = secrets.token_hex(24)


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    redis = RedisServer(tmp_path / "redis").start()
    nodes: list[ServerProcess] = []
    try:
        for name in ("node-a", "node-b"):
            data = tmp_path / name / "data"
            data.mkdir(parents=True)
            (data / "operator_token").write_text(TOKEN)
            nodes.append(ServerProcess(data, env={
                "IMPROV_REDIS_URL": redis.url, "IMPROV_NODE_ID": name,
                "IMPROV_OPERATOR_TOKEN": TOKEN, "IMPROV_SECRET_KEY": "s" * 48,
                "IMPROV_NODE_HEARTBEAT_S": "0.5", "IMPROV_NODE_TTL_S": "3",
                "IMPROV_NODE_CPU": "process"}).start(timeout=40))
        wait_for(lambda: len(nodes[0].api("GET", "/api/v1/nodes").json()["items"]) == 2, 10,
                 "both nodes registered")
        yield nodes
    finally:
        for node in nodes:
            node.stop()
        redis.stop()


def test_a_page_follows_its_room_to_a_live_node(two_nodes: list[ServerProcess], browser: Any) -> None:
    a, b = two_nodes
    room = a.create_room("a page that follows")
    invite = a.invite(room, "Ann")
    holder = a if invite["url"].startswith(a.url + "/") else b
    other = b if holder is a else a
    console = console_page(browser, other)
    # the page under its Content-Security-Policy: its sockets may go to the other live nodes
    policy = httpx.get(invite["url"].split("#")[0]).headers["content-security-policy"]
    connect = next(d for d in policy.split("; ") if d.startswith("connect-src "))
    assert connect == f"connect-src 'self' {other.url.replace('http://', 'ws://')}", policy
    page = join(browser, invite["url"], enforce_csp=True)
    try:
        page.wait_for_selector("body[data-state=joined]", timeout=20000)
        wait_for(lambda: publishing(holder, room, 1), 20, "the page publishing")
        # the console on the other node: the join pushed to it, and the room watched there
        console.wait_for_function(
            "(id) => window.console_.rooms.some((r) => r.room_id === id && r.performers.length === 1"
            " && r.performers[0].state === 'joined')", arg=room, timeout=10000)
        console.get_by_test_id("room-item").and_(console.locator(f'[data-room-id="{room}"]')).click()
        wait_for(lambda: tile_ready(console, invite["performer_id"]), 20, "the watched tile playing")
        holder.stop(signal.SIGKILL)
        killed = time.monotonic()
        # no click: the page finds the room on the live node and publishes there
        def on_other() -> bool:
            # until the dead node's heartbeat expires a request for its room waits for it (504)
            answer = other.api("GET", f"/api/v1/rooms/{room}", timeout=30)
            return (answer.status_code == 200 and answer.json()["node_id"] == other.env["IMPROV_NODE_ID"]
                    and publishing(other, room, 1))

        wait_for(on_other, 30, "the page publishing on the room's new node")
        assert time.monotonic() - killed <= 30
        page.wait_for_selector("body[data-state=joined]", timeout=10000)
        (member,) = other.api("GET", f"/api/v1/rooms/{room}").json()["performers"]
        assert member["performer_id"] == invite["performer_id"] and member["consent"], member
        # the console's monitor failed with the dead node, asked again, and plays it here
        wait_for(lambda: playing_on(console, invite["performer_id"]), 30,
                 "the watched tile playing again from the room's new node")
    finally:
        leave(page)
        console.context.close()


def playing_on(console: Any, performer_id: str) -> bool:
    """The monitor is connected and the performer's picture moves (over half a second)."""
    before = console.evaluate(
        "(pid) => document.querySelector(`[data-testid=monitor-video][data-performer-id=\"${pid}\"]`)"
        "?.currentTime ?? -1", performer_id)
    time.sleep(0.5)
    return bool(console.evaluate(
        """([pid, before]) => {
            const v = document.querySelector(`[data-testid=monitor-video][data-performer-id="${pid}"]`);
            return window.console_.monitor.connectionState === 'connected' && !!v
                && v.videoWidth > 0 && v.currentTime > before + 0.2;
        }""", [performer_id, before]))
