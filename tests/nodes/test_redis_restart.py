"""Redis goes away and comes back on the same port, empty (no persistence), while nodes run
(real redis-server)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from improv_capture.nodes.connection import RedisUnavailable
from improv_capture.nodes.registry import NodeRegistry
from tests.nodes.conftest import TTL_S, Nodes
from tests.nodes.waiting import wait_until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.process

NODES = ("node-a", "node-b", "node-c")


def logged(caplog: pytest.LogCaptureFixture, start: str) -> int:
    return sum(r.getMessage().startswith(start) for r in caplog.records)


async def test_nodes_register_again_and_commands_flow_after_a_restart(
        nodes: Nodes, redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="improv_capture.nodes")
    registries: list[NodeRegistry] = []
    owners = nodes.owners()
    for node_id in NODES:  # each node registers, then claims its room
        registries.append(await nodes.registry(node_id, rooms={f"room-of-{node_id}"}))
        assert await owners.claim_room(f"room-of-{node_id}", node_id)
    bus = nodes.bus()
    to_b = await nodes.subscriber(nodes.bus(), "node-b")
    await bus.publish("room-of-node-b", {"n": "before"})
    assert (await asyncio.wait_for(to_b.get(), 5)).action == {"n": "before"}

    redis_server.stop()
    with pytest.raises(RedisUnavailable):  # bounded, and says so
        await bus.publish("room-of-node-b", {"n": "lost"})

    async def all_noticed() -> bool:
        return not any(r.registered for r in registries)

    await wait_until(all_noticed, "every node noticed that Redis is gone", timeout_s=5.0)
    redis_server.start()  # same port, nothing in it

    async def all_back() -> bool:
        live = [n.node_id for n in await registries[0].live_nodes()]
        owned = [await owners.owner_of(f"room-of-{node_id}") for node_id in NODES]
        return live == list(NODES) and owned == list(NODES)

    # beats back off from HEARTBEAT_S (0.2 s) up to max_backoff_s (the TTL, 1 s), so each node
    # is back at most 1 s after Redis (2 s of slack for a loaded test machine)
    await wait_until(all_back, "the nodes registered and claimed their rooms again",
                     timeout_s=TTL_S + 2.0)
    assert all(r.registered for r in registries)
    assert all(0 <= r.registered_for_s < TTL_S + 2.0 for r in registries)

    sent = await bus.publish("room-of-node-b", {"n": "after"})
    assert sent.node_id == "node-b"
    assert (await asyncio.wait_for(to_b.get(), 5)).action == {"n": "after"}

    for node_id in NODES:  # said once that Redis was lost, and once that it is back
        assert logged(caplog, f"node {node_id}: redis lost") == 1
        assert logged(caplog, f"node {node_id}: redis is back") == 1
    assert logged(caplog, "command stream improv:commands:node-b: redis lost") == 1
    assert logged(caplog, "command stream improv:commands:node-b: redis is back") == 1
