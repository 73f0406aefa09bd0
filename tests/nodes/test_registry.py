"""Nodes register with a heartbeat and a TTL, and drop out when they stop (real redis-server)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from improv_capture.nodes.connection import RedisUnavailable
from improv_capture.nodes.registry import NodeRegistry
from tests.nodes.conftest import HEARTBEAT_S, TTL_S, Nodes
from tests.nodes.waiting import wait_until
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.process


async def live_ids(registry: NodeRegistry) -> list[str]:
    return [n.node_id for n in await registry.live_nodes()]


async def test_three_registries_register_and_are_listed(nodes: Nodes) -> None:
    a = await nodes.registry("node-a", rooms={"r1", "r2"}, max_rooms=4, cpu=0.1)
    b = await nodes.registry("node-b")
    c = await nodes.registry("node-c")
    for registry in (a, b, c):
        assert await live_ids(registry) == ["node-a", "node-b", "node-c"]
    listed = {n.node_id: n for n in await b.live_nodes()}
    assert listed["node-a"].public_url == "https://node-a.example"
    assert (listed["node-a"].rooms, listed["node-a"].max_rooms) == (2, 4)
    assert listed["node-a"].score == 0.5 and listed["node-a"].cpu_load == 0.1
    assert listed["node-a"].version == "test"


async def test_the_heartbeat_reports_the_rooms_as_they_change(nodes: Nodes) -> None:
    rooms: set[str] = set()
    a = await nodes.registry("node-a", rooms=rooms, max_rooms=4)
    rooms.update({"r1", "r2", "r3"})

    async def three_rooms() -> bool:
        return [n.rooms for n in await a.live_nodes()] == [3]

    await wait_until(three_rooms, "the next beats report 3 rooms", timeout_s=10 * HEARTBEAT_S)


async def test_a_stopped_node_disappears_after_its_ttl(nodes: Nodes) -> None:
    a = await nodes.registry("node-a")
    b = await nodes.registry("node-b")
    await b.stop(deregister=False)  # as if it crashed: its key is left to expire
    assert await live_ids(a) == ["node-a", "node-b"]  # still there: its last beat's TTL runs

    async def b_gone() -> bool:  # and node-a stays listed all along: its beats renew its key
        return await live_ids(a) == ["node-a"]

    await wait_until(b_gone, "node-b drops out", timeout_s=TTL_S + 2.0)


async def test_a_node_stopped_in_order_disappears_at_once(nodes: Nodes) -> None:
    a = await nodes.registry("node-a")
    b = await nodes.registry("node-b")
    await b.stop()
    assert await live_ids(a) == ["node-a"]


async def test_a_node_registers_once_redis_comes_up(nodes: Nodes, tmp_path: Path) -> None:
    late = RedisServer(tmp_path / "late", port=free_port())
    try:
        nodes.url = late.url
        a = await nodes.registry("node-a", start=False)
        assert not await a.start()  # nothing listens yet: not registered, not crashed
        assert not a.registered
        late.start()

        async def registered() -> bool:
            return await live_ids(a) == ["node-a"]

        # backoff: 0.2, 0.4, 0.8, then at most TTL_S between tries
        await wait_until(registered, "node-a registers", timeout_s=2 * TTL_S + 1.0)
        assert a.registered
    finally:
        await nodes.close()
        late.stop()


async def test_every_redis_call_is_bounded(nodes: Nodes) -> None:
    """A Redis that accepts connections but never answers costs timeout_s, not a hang."""
    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        nodes.url = f"redis://127.0.0.1:{port}/0"
        a = await nodes.registry("node-a", start=False, timeout_s=0.3)
        started = time.monotonic()
        assert not await a.start()
        with pytest.raises(RedisUnavailable):
            await a.live_nodes()
        assert time.monotonic() - started < 2.0
    finally:
        done.set()
        await nodes.close()
        server.close()
        await server.wait_closed()


async def test_a_node_is_settled_once_the_others_had_time_to_beat(nodes: Nodes) -> None:
    a = await nodes.registry("node-a")
    assert a.registered and not a.settled  # may not reassign orphans yet

    async def settled() -> bool:
        return a.settled

    took = await wait_until(settled, "node-a settles", timeout_s=a.max_backoff_s + 3.0)
    assert took >= a.max_backoff_s + a.timeout_s - 0.5  # (registered a moment before `took`)
