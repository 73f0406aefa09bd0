"""A real redis-server per test (tests/redis_server.py), and the nodes' objects made on it;
whatever a test started is stopped after it, pass or fail."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Iterator
from pathlib import Path
from typing import Any

import pytest

from improv_capture.nodes.bus import Command, RoomBus
from improv_capture.nodes.headroom import CpuSampler, Headroom
from improv_capture.nodes.placement import RoomOwners
from improv_capture.nodes.registry import NodeRegistry
from tests.redis_server import RedisServer

#: Fast but not flaky: a node drops out at most TTL_S after its last beat.
HEARTBEAT_S = 0.2
TTL_S = 1.0
TIMEOUT_S = 0.5


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class FixedCpu(CpuSampler):
    """A CPU load that does not depend on what else the test machine runs."""

    def __init__(self, load: float) -> None:
        super().__init__()
        self.load = load

    def sample(self) -> float:
        return self.load


class Nodes:
    """Makes registries, owners, buses and subscribers on one Redis; close() stops them all."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.registries: list[NodeRegistry] = []
        self.clients: list[RoomOwners | RoomBus] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def registry(self, node_id: str, *, rooms: Collection[str] = (), max_rooms: int = 10,
                       cpu: float = 0.1, start: bool = True, **kwargs: Any) -> NodeRegistry:
        """A registry whose local rooms are `rooms` (a set the test may change)."""
        kwargs.setdefault("heartbeat_s", HEARTBEAT_S)
        kwargs.setdefault("ttl_s", TTL_S)
        kwargs.setdefault("timeout_s", TIMEOUT_S)
        registry = NodeRegistry(
            self.url, node_id, f"https://{node_id}.example", local_rooms=lambda: rooms,
            headroom=Headroom(node_id, f"https://{node_id}.example", max_rooms,
                              cpu=FixedCpu(cpu), version="test"),
            **kwargs)
        self.registries.append(registry)
        if start:
            assert await registry.start()
        return registry

    def owners(self, **kwargs: Any) -> RoomOwners:
        kwargs.setdefault("timeout_s", TIMEOUT_S)
        owners = RoomOwners(self.url, **kwargs)
        self.clients.append(owners)
        return owners

    def bus(self, **kwargs: Any) -> RoomBus:
        kwargs.setdefault("timeout_s", TIMEOUT_S)
        kwargs.setdefault("block_s", 0.2)
        kwargs.setdefault("max_backoff_s", 0.4)
        bus = RoomBus(self.url, **kwargs)
        self.clients.append(bus)
        return bus

    async def subscriber(self, bus: RoomBus, node_id: str) -> asyncio.Queue[Command]:
        """node_id's commands from now on, as they arrive."""
        queue: asyncio.Queue[Command] = asyncio.Queue()
        after = await bus.last_id(node_id)

        async def pump() -> None:
            async for command in bus.subscribe(node_id, after=after):
                queue.put_nowait(command)

        self.tasks.append(asyncio.create_task(pump()))
        return queue

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for registry in self.registries:
            await registry.stop()
        for client in self.clients:
            await client.aclose()


@pytest.fixture
async def nodes(redis_server: RedisServer) -> AsyncIterator[Nodes]:
    made = Nodes(redis_server.url)
    try:
        yield made
    finally:
        await made.close()
