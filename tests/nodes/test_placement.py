"""Rooms are placed by headroom and owned by exactly one node (real redis-server)."""

from __future__ import annotations

import asyncio
import time

import pytest

from improv_capture.nodes.placement import Move, NoNodeAvailable, choose_node
from tests.nodes.conftest import Nodes

pytestmark = pytest.mark.process


async def test_placement_picks_the_live_node_with_most_headroom(nodes: Nodes) -> None:
    a = await nodes.registry("node-a", rooms={"r1", "r2"}, max_rooms=4)
    await nodes.registry("node-b", rooms={"r3"}, max_rooms=4)
    await nodes.registry("node-c", rooms={"r4", "r5"}, max_rooms=2)  # full, idle CPU
    await nodes.registry("node-d", max_rooms=4, cpu=0.9)  # empty but its CPU is busy
    assert choose_node(await a.live_nodes()).node_id == "node-b"


async def test_placement_never_picks_a_full_node(nodes: Nodes) -> None:
    a = await nodes.registry("node-a", rooms={"r1"}, max_rooms=1, cpu=0.0)
    await nodes.registry("node-b", rooms={"r2", "r3"}, max_rooms=2, cpu=0.0)
    with pytest.raises(NoNodeAvailable):
        choose_node(await a.live_nodes())


async def test_a_room_has_one_owner(nodes: Nodes) -> None:
    owners = [nodes.owners() for _ in range(4)]
    claims = await asyncio.gather(*(o.claim_room("room-1", f"node-{i}")
                                    for i, o in enumerate(owners)))
    assert claims.count(True) == 1
    winner = f"node-{claims.index(True)}"
    assert await owners[0].owner_of("room-1") == winner
    assert await owners[0].rooms_of(winner) == ["room-1"]
    assert await owners[0].claim_room("room-1", winner)  # claiming one's own room again: yes
    loser = "node-3" if winner != "node-3" else "node-2"
    assert not await owners[0].release_room("room-1", loser)  # not the owner: no effect
    assert await owners[0].owner_of("room-1") == winner
    assert await owners[0].release_room("room-1", winner)
    assert await owners[0].owner_of("room-1") is None
    assert await owners[0].rooms_of(winner) == []


async def test_placements_through_several_nodes_go_one_at_a_time(nodes: Nodes) -> None:
    owners = [nodes.owners() for _ in range(3)]
    inside: list[int] = []
    most = 0

    async def place(n: int) -> bool:
        nonlocal most
        async with owners[n % 3].placing(lease_s=5, wait_s=5) as held:
            inside.append(n)
            most = max(most, len(inside))
            await asyncio.sleep(0.05)  # the placement: read the counts, create, claim
            inside.remove(n)
            return held

    held = await asyncio.gather(*(place(n) for n in range(9)))
    assert all(held) and most == 1


async def test_the_placing_lock_is_bounded_by_its_lease_and_its_wait(nodes: Nodes) -> None:
    dead, waiting = nodes.owners(), nodes.owners()
    holding = dead.placing(lease_s=0.6, wait_s=1)
    assert await holding.__aenter__()  # a node that dies holding it: never released
    started = time.monotonic()
    async with waiting.placing(lease_s=1, wait_s=0.2) as held:
        assert not held  # busy past the wait: placed without it
    assert 0.2 <= time.monotonic() - started < 0.5
    async with waiting.placing(lease_s=1, wait_s=2) as held:
        assert held  # the lease ran out
    assert time.monotonic() - started < 1.0
    # the dead holder's late release does not free a lock that is another's now
    async with waiting.placing(lease_s=5, wait_s=1) as held:
        assert held
        await holding.__aexit__(None, None, None)
        async with dead.placing(lease_s=1, wait_s=0.1) as other:
            assert not other


async def test_a_move_is_a_compare_and_set_on_the_old_owner(nodes: Nodes) -> None:
    owners = nodes.owners()
    assert await owners.claim_room("room-1", "dead")
    assert await owners.move_room("room-1", "dead", "node-a")
    assert not await owners.move_room("room-1", "dead", "node-b")  # moved already
    assert await owners.owner_of("room-1") == "node-a"
    assert (await owners.rooms_of("dead"), await owners.rooms_of("node-a"),
            await owners.rooms_of("node-b")) == ([], ["room-1"], [])


async def test_concurrent_reassignments_give_each_orphan_to_exactly_one_node(
        nodes: Nodes) -> None:
    a = await nodes.registry("node-a", max_rooms=50)
    b = await nodes.registry("node-b", max_rooms=50)
    c = await nodes.registry("node-c", max_rooms=50)
    orphans = [f"room-{i:02d}" for i in range(20)]
    setup = nodes.owners()
    for room in orphans:  # owned by a node that never registered (or whose key expired)
        assert await setup.claim_room(room, "dead")
    live = await a.live_nodes()
    # four nodes run the reassignment at once, each on its own connection, and each with its
    # own view of who is alive, so they aim rooms at different nodes
    views = [live, live[:2], live[1:], [live[2], live[0]]]
    results = await asyncio.gather(*(nodes.owners().reassign_orphans(v) for v in views))
    moved: list[Move] = [m for result in results for m in result]
    assert sorted(m.room_id for m in moved) == orphans  # each moved once, none twice
    assert all(m.from_node == "dead" for m in moved)
    for m in moved:  # the move that reported success is the one that stuck
        assert await setup.owner_of(m.room_id) == m.to_node
    assert await setup.rooms_of("dead") == []
    per_node = {r.node_id: await setup.rooms_of(r.node_id) for r in (a, b, c)}
    assert sorted(room for rooms in per_node.values() for room in rooms) == orphans
    # and a second pass finds nothing left to move
    assert await nodes.owners().reassign_orphans(live) == []


async def test_orphans_are_spread_by_headroom_and_wait_when_all_are_full(nodes: Nodes) -> None:
    a = await nodes.registry("node-a", max_rooms=4)
    await nodes.registry("node-b", rooms={"b1", "b2"}, max_rooms=4)
    owners = nodes.owners()
    for room in ("b1", "b2"):
        assert await owners.claim_room(room, "node-b")
    orphans = [f"room-{i}" for i in range(7)]
    for room in orphans:
        assert await owners.claim_room(room, "dead")
    moves = await owners.reassign_orphans(await a.live_nodes())
    assert len(moves) == 6  # 8 slots, 2 taken
    assert len(await owners.rooms_of("node-a")) == 4
    assert len(await owners.rooms_of("node-b")) == 4
    assert len(await owners.rooms_of("dead")) == 1  # waits for a free slot
