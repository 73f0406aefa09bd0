"""Rooms: which exist, kept in the data dir so that invites and removals outlive a restart
(the live state of a room, who is in it, is rooms/model.py)."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from improv_capture.clock import new_id, utc_now_iso
from improv_capture.db import Database
from improv_capture.errors import LimitReached
from improv_capture.rooms.model import Room

logger = logging.getLogger(__name__)


def rooms_file(data_dir: Path, worker_index: int | None) -> Path:
    """Each worker of a cluster keeps its own rooms; worker 0 shares a lone server's file."""
    return data_dir / ("rooms.sqlite3" if not worker_index else f"rooms.w{worker_index}.sqlite3")


def legacy_rooms_file(store_path: Path) -> Path:
    """The JSON file that held a store's rooms before (rooms.json, rooms.w<i>.json)."""
    return store_path.with_suffix(".json")


def rooms_of_other_workers(data_dir: Path, worker_index: int | None) -> set[str]:
    """Room ids that another worker of the cluster owns (none for a lone server)."""
    if worker_index is None:
        return set()
    own = rooms_file(data_dir, worker_index)
    found: set[str] = set()
    for path in [data_dir / "rooms.sqlite3", *data_dir.glob("rooms.w*.sqlite3")]:
        if path != own:
            # the JSON file first: a worker migrating it renames it only once its rows are in
            found |= _legacy_room_ids(legacy_rooms_file(path)) | _stored_room_ids(path)
    return found


def _legacy_room_ids(path: Path) -> set[str]:
    try:
        return {item["room_id"] for item in json.loads(path.read_text()).get("rooms", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _stored_room_ids(path: Path) -> set[str]:
    if not path.exists():
        return set()
    try:
        conn = sqlite3.connect(path, timeout=5)
        try:
            return {row[0] for row in conn.execute("SELECT room_id FROM rooms")}
        finally:
            conn.close()
    except sqlite3.Error:
        return set()


ROOMS_SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (room_id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS invites (seq INTEGER PRIMARY KEY, room_id TEXT NOT NULL, invite TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS invites_of_room ON invites (room_id);
CREATE TABLE IF NOT EXISTS profiles (room_id TEXT PRIMARY KEY, profile TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS removed (
    seq INTEGER PRIMARY KEY, room_id TEXT NOT NULL, performer_id TEXT NOT NULL,
    UNIQUE (room_id, performer_id)
);
"""


class RoomStore:
    """The rooms that exist, kept in SQLite (a row per room, invite and removed performer), so
    that a write costs the same however many rooms and invites there are. Reads come from
    memory (``rooms``); every change writes its row first and is synced to disk (invites and
    removals must outlive a crash). Caps are checked on the event loop, before the write, so
    concurrent requests cannot pass one together."""

    def __init__(self, path: Path) -> None:
        self._db = Database(path, ROOMS_SCHEMA, durable=True)
        legacy = legacy_rooms_file(path)
        if legacy.exists():
            self._migrate(legacy)
        self.rooms: dict[str, Room] = {}
        self._db.run(self._load)
        #: told of every room written (its new state) and deleted (None), after the write: the
        #: copy other nodes take a room over from (nodes/service.py); set by the app
        self.on_change: Callable[[str, Room | None], Awaitable[None]] | None = None

    async def _changed(self, room_id: str, room: Room | None) -> None:
        if self.on_change is not None:
            await self.on_change(room_id, room)

    def _load(self, c: sqlite3.Connection) -> None:
        for row in c.execute("SELECT room_id, name, created_at FROM rooms ORDER BY rowid"):
            self.rooms[row["room_id"]] = Room(row["room_id"], row["name"], row["created_at"])
        for row in c.execute("SELECT room_id, invite FROM invites ORDER BY seq"):
            if row["room_id"] in self.rooms:
                self.rooms[row["room_id"]].invites.append(json.loads(row["invite"]))
        for row in c.execute("SELECT room_id, profile FROM profiles"):
            if row["room_id"] in self.rooms:
                self.rooms[row["room_id"]].profile = json.loads(row["profile"])
        for row in c.execute("SELECT room_id, performer_id FROM removed ORDER BY seq"):
            if row["room_id"] in self.rooms:
                self.rooms[row["room_id"]].removed.append(row["performer_id"])

    def _migrate(self, legacy: Path) -> None:
        """Rooms of a data dir from before the SQLite store: copied in once (one transaction),
        then the JSON file is kept beside it as ``<name>.migrated``."""
        items = json.loads(legacy.read_text()).get("rooms", [])

        def copy(c: sqlite3.Connection) -> None:
            for item in items:
                inserted = c.execute(
                    "INSERT OR IGNORE INTO rooms (room_id, name, created_at) VALUES (?,?,?)",
                    (item["room_id"], item["name"], item["created_at"])).rowcount
                if not inserted:
                    continue  # copied by an earlier start that stopped before the rename
                c.executemany("INSERT INTO invites (room_id, invite) VALUES (?,?)",
                              [(item["room_id"], json.dumps(i)) for i in item.get("invites", [])])
                c.executemany("INSERT OR IGNORE INTO removed (room_id, performer_id) VALUES (?,?)",
                              [(item["room_id"], p) for p in item.get("removed", [])])

        self._db.run(copy)
        kept = legacy.with_name(legacy.name + ".migrated")
        legacy.rename(kept)
        logger.info("rooms: %d rooms moved from %s into %s (old file kept as %s)",
                    len(items), legacy.name, self._db.path.name, kept.name)

    def get(self, room_id: str) -> Room | None:
        return self.rooms.get(room_id)

    async def adopt(self, snapshot: dict[str, Any]) -> Room:
        """A room another node held, from its ``snapshot`` (rooms/model.py: the room taken over
        when that node died: nodes/service.py). Kept like a room made here; a room this store
        already has is left as it is."""
        room = Room.from_snapshot(snapshot)
        if room.room_id in self.rooms:
            return self.rooms[room.room_id]
        self.rooms[room.room_id] = room

        def insert(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR IGNORE INTO rooms (room_id, name, created_at) VALUES (?,?,?)",
                      (room.room_id, room.name, room.created_at))
            c.execute("INSERT OR IGNORE INTO profiles (room_id, profile) VALUES (?,?)",
                      (room.room_id, json.dumps(room.profile)))
            c.executemany("INSERT INTO invites (room_id, invite) VALUES (?,?)",
                          [(room.room_id, json.dumps(i)) for i in room.invites])
            c.executemany("INSERT OR IGNORE INTO removed (room_id, performer_id) VALUES (?,?)",
                          [(room.room_id, p) for p in room.removed])

        try:
            await self._db.call(insert)
        except BaseException:
            self.rooms.pop(room.room_id, None)
            raise
        await self._changed(room.room_id, room)
        return room

    async def create(self, name: str | None, max_rooms: int, profile: dict[str, Any]) -> Room:
        """A new room with its resolved profile; LimitReached when ``max_rooms`` exist."""
        if len(self.rooms) >= max_rooms:
            raise LimitReached(f"at most {max_rooms} rooms (IMPROV_MAX_ROOMS); delete a room first")
        room_id = new_id("room")
        room = Room(room_id=room_id, name=name or room_id, created_at=utc_now_iso(),
                    profile=profile)
        self.rooms[room_id] = room  # holds its place under the cap while it is written

        def insert(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO rooms (room_id, name, created_at) VALUES (?,?,?)",
                      (room.room_id, room.name, room.created_at))
            c.execute("INSERT INTO profiles (room_id, profile) VALUES (?,?)",
                      (room.room_id, json.dumps(profile)))

        try:
            await self._db.call(insert)
        except BaseException:
            self.rooms.pop(room_id, None)
            raise
        await self._changed(room.room_id, room)
        return room

    async def delete(self, room_id: str) -> Room | None:
        room = self.rooms.pop(room_id, None)
        if room is not None:
            await self._delete_rows(room_id)
            await self._changed(room_id, None)
        return room

    async def forget(self, room_id: str) -> None:
        """Drop a room another node now holds (taken over while this one was away), without
        telling anyone: the room lives on there."""
        if self.rooms.pop(room_id, None) is not None:
            await self._delete_rows(room_id)

    async def _delete_rows(self, room_id: str) -> None:
        def delete_rows(c: sqlite3.Connection) -> None:
            for table in ("rooms", "invites", "removed", "profiles"):
                c.execute(f"DELETE FROM {table} WHERE room_id=?", (room_id,))

        await self._db.call(delete_rows)

    async def add_invite(self, room: Room, invite: dict[str, str], max_invites: int) -> None:
        """Keep an issued invite; LimitReached when the room has ``max_invites``."""
        if len(room.invites) >= max_invites:
            raise LimitReached(f"at most {max_invites} invites per room "
                               "(IMPROV_MAX_INVITES_PER_ROOM); make a new room")
        room.invites.append(invite)
        try:
            await self._db.call(lambda c: c.execute(
                "INSERT INTO invites (room_id, invite) VALUES (?,?)",
                (room.room_id, json.dumps(invite))))
        except BaseException:
            room.invites.remove(invite)
            raise
        await self._changed(room.room_id, room)

    async def remove_performer(self, room: Room, performer_id: str) -> None:
        """The performer may not join the room again. Only performers the room invited are
        kept (the caller checks), so the list is bounded by the invites."""
        if performer_id in room.removed:
            return
        room.removed.append(performer_id)  # refused at once, before the write lands
        await self._db.call(lambda c: c.execute(
            "INSERT OR IGNORE INTO removed (room_id, performer_id) VALUES (?,?)",
            (room.room_id, performer_id)))
        await self._changed(room.room_id, room)

    def close(self) -> None:
        self._db.close()
