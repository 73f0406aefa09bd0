"""Rooms: which exist (kept in the data dir, so invites outlive a restart) and who is in them."""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
import time
from pathlib import Path
from typing import TYPE_CHECKING

from recorder.files import write_json_atomic
from recorder.utc import utc_iso

if TYPE_CHECKING:
    from .hub import Member
    from .recording import Recording


def rooms_file(data_dir: Path, worker_index: int | None) -> Path:
    """Each worker of a cluster keeps its own rooms; worker 0 shares a lone server's file."""
    return data_dir / ("rooms.json" if not worker_index else f"rooms.w{worker_index}.json")


def rooms_of_other_workers(data_dir: Path, worker_index: int | None) -> set[str]:
    """Room ids that another worker of the cluster owns (none for a lone server)."""
    if worker_index is None:
        return set()
    own = rooms_file(data_dir, worker_index)
    found: set[str] = set()
    for path in [data_dir / "rooms.json", *data_dir.glob("rooms.w*.json")]:
        if path == own or not path.exists():
            continue
        try:
            found.update(item["room_id"] for item in json.loads(path.read_text()).get("rooms", []))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def utc_now_iso() -> str:
    return utc_iso(time.time())


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


@dataclass
class Room:
    room_id: str
    name: str
    created_at: str
    #: invites issued for the room, for the console to list and copy again
    invites: list[dict[str, str]] = field(default_factory=list)
    #: performers the operator removed: their invites cannot rejoin
    removed: list[str] = field(default_factory=list)
    #: live state, not persisted
    members: dict[str, Member] = field(default_factory=dict, repr=False)
    recording: Recording | None = field(default=None, repr=False)

    def record(self) -> dict[str, str]:
        return {"room_id": self.room_id, "name": self.name, "created_at": self.created_at}

    def persisted(self) -> dict[str, object]:
        return {**self.record(), "invites": self.invites, "removed": self.removed}


class RoomStore:
    """The rooms that exist, persisted as one small JSON file in the data dir."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self.rooms: dict[str, Room] = {}
        if path.exists():
            for item in json.loads(path.read_text()).get("rooms", []):
                room = Room(**item)
                self.rooms[room.room_id] = room

    def _save(self) -> None:
        with self._lock:
            write_json_atomic(self._path, {"rooms": [r.persisted() for r in self.rooms.values()]})

    def save(self) -> None:
        """Persist after changing a room's invites or removed performers (call in a thread)."""
        self._save()

    def create(self, name: str | None) -> Room:
        room_id = new_id("room")
        room = Room(room_id=room_id, name=name or room_id, created_at=utc_now_iso())
        self.rooms[room_id] = room
        self._save()
        return room

    def get(self, room_id: str) -> Room | None:
        return self.rooms.get(room_id)

    def delete(self, room_id: str) -> Room | None:
        room = self.rooms.pop(room_id, None)
        if room is not None:
            self._save()
        return room

