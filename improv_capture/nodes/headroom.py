"""How much more this node can take: CPU and rooms, combined into one score.

The score rule: ``score = min(1 - cpu_load, 1 - rooms / max_rooms)``, in [0, 1]. The scarcer of
the two resources decides, because either one running out hurts every room on the node: a
node with free seats but a saturated CPU drops media, and one with idle CPU but no free room
slots cannot take a room at all. A full node (rooms >= max_rooms) scores 0 and `has_room` is
False; placement never chooses it (placement.py).

CPU load is the machine's busy fraction (all cores) since the previous sample, from the deltas
of /proc/stat; where /proc/stat cannot be read, the 1-minute load average divided by the cores
this process may run on. Reading /proc/stat is one small file read, so sampling never blocks
the event loop. In a container, /proc/stat shows the host's CPUs, not a cgroup quota.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

PROC_STAT = Path("/proc/stat")


#: CPU load is counted in steps of this much
CPU_STEP = 0.1


def headroom_score(rooms: int, max_rooms: int, cpu_load: float) -> float:
    """The module's score rule; rooms at or above max_rooms give 0."""
    if max_rooms <= 0 or rooms >= max_rooms:
        return 0.0
    # loads within one CPU_STEP are the same (a sample's noise must not outweigh a room)
    cpu_free = 1.0 - math.floor(min(max(cpu_load, 0.0), 1.0) / CPU_STEP + 1e-9) * CPU_STEP
    rooms_free = 1.0 - max(rooms, 0) / max_rooms
    return round(min(cpu_free, rooms_free), 6)


@dataclass(frozen=True)
class NodeInfo:
    """One node as the others see it in Redis (what its heartbeat writes)."""

    node_id: str
    #: Base URL that performers and operators use for this node's rooms.
    public_url: str
    rooms: int
    max_rooms: int
    #: Busy fraction of the machine's CPUs, 0 to 1.
    cpu_load: float
    #: headroom_score(rooms, max_rooms, cpu_load).
    score: float
    #: Unix time the node started (tells a restarted node from its previous life).
    started_at: float
    version: str

    @property
    def has_room(self) -> bool:
        return self.rooms < self.max_rooms

    def with_rooms(self, rooms: int) -> NodeInfo:
        """The same node with another room count, its score recomputed (placement's what-if)."""
        return dataclasses.replace(
            self, rooms=rooms, score=headroom_score(rooms, self.max_rooms, self.cpu_load))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> NodeInfo:
        """Parses what to_json wrote; raises ValueError on anything else (unknown keys ignored,
        so that a newer node's extra fields do not hide it from an older one)."""
        try:
            data: dict[str, Any] = json.loads(text)
            return cls(
                node_id=str(data["node_id"]), public_url=str(data["public_url"]),
                rooms=int(data["rooms"]), max_rooms=int(data["max_rooms"]),
                cpu_load=float(data["cpu_load"]), score=float(data["score"]),
                started_at=float(data["started_at"]), version=str(data["version"]),
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
            raise ValueError(f"not a NodeInfo: {e}") from e


def read_proc_stat(path: Path = PROC_STAT) -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, or None where there is no /proc/stat."""
    try:
        with path.open() as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    # user nice system idle iowait irq softirq steal (guest times are already in user/nice)
    total = sum(values[:8])
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return total - idle, total


def load_average_fraction() -> float:
    """The 1-minute load average over the cores this process may use, capped at 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return min(os.getloadavg()[0] / max(cores, 1), 1.0)


class CpuSampler:
    """CPU busy fraction since the previous call to `sample()`; never blocks."""

    def __init__(self, path: Path = PROC_STAT) -> None:
        self._path = path
        self._last = read_proc_stat(path)

    def sample(self) -> float:
        now = read_proc_stat(self._path)
        if now is None:
            return load_average_fraction()
        last, self._last = self._last, now
        if last is None or now[1] <= last[1]:
            return load_average_fraction()  # first sample, or too soon for a delta
        return min(max((now[0] - last[0]) / (now[1] - last[1]), 0.0), 1.0)


class ProcessCpuSampler(CpuSampler):
    """This process's own CPU time since the previous call, over the cores it may use: the
    measure for nodes that share a machine (where the machine's load is everyone's)."""

    def __init__(self) -> None:
        try:
            self._cores = max(len(os.sched_getaffinity(0)), 1)
        except AttributeError:  # not Linux
            self._cores = os.cpu_count() or 1
        self._last = (time.process_time(), time.monotonic())

    def sample(self) -> float:
        now = (time.process_time(), time.monotonic())
        last, self._last = self._last, now
        wall = now[1] - last[1]
        if wall <= 0:
            return 0.0
        return min(max((now[0] - last[0]) / wall / self._cores, 0.0), 1.0)


def package_version() -> str:
    try:
        return metadata.version("improv-capture")
    except metadata.PackageNotFoundError:
        return "unknown"


class Headroom:
    """This node's NodeInfo on demand: fixed identity, rooms counted by the caller, CPU sampled."""

    def __init__(self, node_id: str, public_url: str, max_rooms: int,
                 cpu: CpuSampler | None = None, version: str | None = None,
                 started_at: float | None = None) -> None:
        if max_rooms < 1:
            raise ValueError("max_rooms must be at least 1")
        self.node_id = node_id
        self.public_url = public_url
        self.max_rooms = max_rooms
        self.cpu = cpu or CpuSampler()
        self.version = version or package_version()
        self.started_at = time.time() if started_at is None else started_at

    def measure(self, rooms: int) -> NodeInfo:
        cpu_load = round(self.cpu.sample(), 4)
        return NodeInfo(
            node_id=self.node_id, public_url=self.public_url, rooms=rooms,
            max_rooms=self.max_rooms, cpu_load=cpu_load,
            score=headroom_score(rooms, self.max_rooms, cpu_load),
            started_at=self.started_at, version=self.version,
        )
