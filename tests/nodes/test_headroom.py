"""The headroom score and the choice of a node, in process (no Redis)."""

from __future__ import annotations

from pathlib import Path

import pytest

from improv_capture.nodes.headroom import (
    CpuSampler,
    NodeInfo,
    headroom_score,
    read_proc_stat,
)
from improv_capture.nodes.placement import NoNodeAvailable, choose_node

pytestmark = pytest.mark.unit


def node(node_id: str, rooms: int, max_rooms: int = 10, cpu: float = 0.0) -> NodeInfo:
    return NodeInfo(node_id, f"https://{node_id}.example", rooms, max_rooms, cpu,
                    headroom_score(rooms, max_rooms, cpu), 0.0, "test")


def test_the_scarcer_resource_decides_the_score() -> None:
    assert headroom_score(0, 10, 0.0) == 1.0
    assert headroom_score(5, 10, 0.1) == 0.5  # rooms are scarcer
    assert headroom_score(1, 10, 0.7) == pytest.approx(0.3)  # CPU is scarcer
    assert headroom_score(10, 10, 0.0) == 0.0  # full
    assert headroom_score(12, 10, 0.0) == 0.0
    assert headroom_score(0, 10, 1.5) == 0.0  # loads past 1 count as 1
    assert headroom_score(0, 10, 0.09) == 1.0  # loads within a step are the same (noise)
    assert headroom_score(0, 10, 0.79) == pytest.approx(0.3)


def test_the_node_with_most_headroom_is_chosen() -> None:
    nodes = [node("a", 6), node("b", 2), node("c", 4), node("d", 0, cpu=0.9)]
    assert choose_node(nodes).node_id == "b"


def test_ties_are_broken_by_free_slots_then_node_id() -> None:
    # same score (CPU-bound at 0.5), c has more free slots
    assert choose_node([node("a", 1, cpu=0.5), node("c", 0, cpu=0.5)]).node_id == "c"
    assert choose_node([node("b", 1), node("a", 1)]).node_id == "a"
    assert choose_node([node("a", 1), node("b", 1)]).node_id == "a"


def test_a_full_node_is_never_chosen() -> None:
    # the full node has idle CPU; the other is busy but has a slot
    full = node("full", 10, cpu=0.0)
    busy = node("busy", 9, cpu=1.0)
    assert busy.score == 0.0
    assert choose_node([full, busy]).node_id == "busy"
    with pytest.raises(NoNodeAvailable, match="all full"):
        choose_node([full, node("full2", 3, max_rooms=3)])
    with pytest.raises(NoNodeAvailable, match="no live node"):
        choose_node([])


def test_node_info_round_trips_through_json() -> None:
    info = node("a", 3, cpu=0.25)
    assert NodeInfo.from_json(info.to_json()) == info
    with pytest.raises(ValueError):
        NodeInfo.from_json('{"node_id": "a"}')
    with pytest.raises(ValueError):
        NodeInfo.from_json("not json")


def test_cpu_load_comes_from_proc_stat_deltas(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
    assert read_proc_stat(stat) == (200, 1000)
    sampler = CpuSampler(stat)
    stat.write_text("cpu  130 0 130 840 0 0 0 0 0 0\n")  # 60 busy of 100
    assert sampler.sample() == pytest.approx(0.6)
    assert 0.0 <= CpuSampler().sample() <= 1.0  # this machine's, whatever it is
