"""Rooms: which exist (kept in the data dir, so invites outlive a restart) and who is in them."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .member import Member


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


def write_json_atomic(path: Path, data: object) -> None:
    """Temp file, fsync, rename: a crash leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Room:
    room_id: str
    name: str
    created_at: str
    #: live state, not persisted
    members: dict[str, Member] = field(default_factory=dict, repr=False)

    def record(self) -> dict[str, str]:
        return {"room_id": self.room_id, "name": self.name, "created_at": self.created_at}


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
            write_json_atomic(self._path, {"rooms": [r.record() for r in self.rooms.values()]})

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

