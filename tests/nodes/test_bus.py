"""Operator actions reach the node that owns the room, and only it (real redis-server)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from improv_capture.nodes.bus import ROOM_ASSIGNED, Command, NoOwner
from tests.nodes.conftest import Nodes

pytestmark = pytest.mark.process

WAIT_S = 5.0


async def next_command(queue: asyncio.Queue[Command]) -> Command:
    return await asyncio.wait_for(queue.get(), WAIT_S)


async def test_a_command_reaches_the_owner_and_no_other_node(nodes: Nodes) -> None:
    owners = nodes.owners()
    assert await owners.claim_room("room-a", "node-a")
    assert await owners.claim_room("room-b", "node-b")
    bus = nodes.bus()
    to_a = await nodes.subscriber(nodes.bus(), "node-a")
    to_b = await nodes.subscriber(nodes.bus(), "node-b")
    sent = await bus.publish("room-a", {"type": "recording.start", "take": 1})
    assert sent.node_id == "node-a"
    got = await next_command(to_a)
    assert (got.room_id, got.action, got.id) == ("room-a", {"type": "recording.start",
                                                            "take": 1}, sent.id)
    # node-b's stream is in order: the first thing it gets is its own room's command, sent
    # after room-a's, so room-a's never reached it
    await bus.publish("room-b", {"type": "marker"})
    got_b = await next_command(to_b)
    assert (got_b.room_id, got_b.action) == ("room-b", {"type": "marker"})
    assert to_a.empty() and to_b.empty()


async def test_a_room_without_owner_refuses_commands(nodes: Nodes) -> None:
    with pytest.raises(NoOwner):
        await nodes.bus().publish("nobody's", {"type": "marker"})


async def test_commands_sent_while_the_subscriber_is_cut_off_arrive(nodes: Nodes) -> None:
    assert await nodes.owners().claim_room("room-a", "node-a")
    bus = nodes.bus()
    to_a = await nodes.subscriber(nodes.bus(), "node-a")
    await bus.publish("room-a", {"n": 0})
    assert (await next_command(to_a)).action == {"n": 0}
    admin = Redis.from_url(nodes.url, decode_responses=True)
    try:
        # cut every other client's connection (the subscriber's blocked XREAD among them),
        # then publish while it reconnects
        assert await admin.client_kill_filter(_type="normal", skipme=True)
        for n in range(1, 4):
            await admin.xadd("improv:commands:node-a",
                             {"room": "room-a", "action": f'{{"n": {n}}}'})
    finally:
        await admin.aclose()
    assert [(await next_command(to_a)).action for _ in range(3)] == [{"n": 1}, {"n": 2},
                                                                     {"n": 3}]


async def test_a_subscriber_resumes_after_the_last_command_it_saw(nodes: Nodes) -> None:
    assert await nodes.owners().claim_room("room-a", "node-a")
    bus = nodes.bus()
    first = await bus.publish("room-a", {"n": 1})
    await bus.publish("room-a", {"n": 2})
    resumed = bus.subscribe("node-a", after=first.id)
    try:
        command = await asyncio.wait_for(anext(resumed), WAIT_S)
    finally:
        await resumed.aclose()
    assert command.action == {"n": 2}


async def test_the_stream_is_bounded(nodes: Nodes) -> None:
    assert await nodes.owners().claim_room("room-a", "node-a")
    bus = nodes.bus(stream_maxlen=10)
    for n in range(300):
        await bus.publish("room-a", {"n": n})
    admin = Redis.from_url(nodes.url, decode_responses=True)
    try:
        length = await admin.xlen("improv:commands:node-a")
        ttl_ms = await admin.pttl("improv:commands:node-a")
    finally:
        await admin.aclose()
    # MAXLEN ~ trims whole internal nodes (stream-node-max-entries, 100 by default)
    assert 10 <= length <= 10 + 100
    assert 0 < ttl_ms <= bus.stream_ttl_s * 1000


async def test_the_new_owner_of_a_moved_room_is_told(nodes: Nodes) -> None:
    a = await nodes.registry("node-a")
    owners = nodes.owners()
    assert await owners.claim_room("room-x", "dead")
    to_a = await nodes.subscriber(nodes.bus(), "node-a")
    assert [m.to_node for m in await owners.reassign_orphans(await a.live_nodes())] == [
        "node-a"]
    notice = await next_command(to_a)
    assert (notice.room_id, notice.action) == ("room-x", {"type": ROOM_ASSIGNED,
                                                          "previous_owner": "dead"})
    # and commands for the room go to its new owner from now on
    await nodes.bus().publish("room-x", {"type": "marker"})
    assert (await next_command(to_a)).action == {"type": "marker"}
