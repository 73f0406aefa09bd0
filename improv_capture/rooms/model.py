"""The live state of rooms: a room, its members (performers' seats), their consent and
connections, and the roster each one sees.

Plain data with a few helpers that only read it or send on a member's socket; the hub's parts
(seats, media wiring, recordings, stats fan-out) change it, and store.py keeps what of a
room outlives a restart (name, invites, removed performers). The rooms side never touches a
WebSocket: a :class:`Socket` is anything that can send a JSON message and close with a code.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from improv_capture.media.connections import PublishConnection, SubscribeConnection
from improv_capture.media.relay import Publication


class Socket(Protocol):
    """A performer's socket as the rooms side sees it (api/sockets.py's JsonSocket)."""

    async def send_json(self, message: dict[str, Any]) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


@dataclass
class ConsentRecord:
    version: str
    text_sha256: str
    accepted_at: str


class LiveRecording(Protocol):
    """A room's running recording as the live side uses it: rooms/recording.py's Recording
    (and the benchmark's baseline). A protocol, so that this model needs no recorder."""

    session_id: str
    session_dir: Path
    manifest: dict[str, Any]

    @property
    def started_at(self) -> str: ...

    def now_s(self) -> float: ...

    def start(self) -> None: ...

    def event(self, event_type: str, /, **fields: Any) -> dict[str, Any]: ...

    def sync_member(self, member: Member) -> None: ...

    def member_left(self, member: Member, reason: str) -> None: ...

    def performer_changed(self, member: Member) -> None: ...

    def stats(self, member: Member, stats: dict[str, Any]) -> None: ...

    def marker(self, kind: str, label: str, data: Any) -> dict[str, Any]: ...

    def prompt(self, prompt: dict[str, Any]) -> dict[str, Any]: ...

    async def stop(self) -> dict[str, Any]: ...


@dataclass
class Room:
    room_id: str
    name: str
    created_at: str
    #: invites issued for the room, for the console to list and copy again
    invites: list[dict[str, str]] = field(default_factory=list)
    #: performers the operator removed: their invites cannot rejoin
    removed: list[str] = field(default_factory=list)
    #: the resolved capture profile (rooms/profiles.py); None: a room from before profiles,
    #: which records as `standard`
    profile: dict[str, Any] | None = None
    #: live state, not persisted
    members: dict[str, Member] = field(default_factory=dict, repr=False)
    recording: LiveRecording | None = field(default=None, repr=False)

    def record(self) -> dict[str, str]:
        return {"room_id": self.room_id, "name": self.name, "created_at": self.created_at}

    def snapshot(self) -> dict[str, Any]:
        """What another node needs to hold the room: what the store keeps, not the live state."""
        recording = self.recording
        return {**self.record(), "invites": list(self.invites), "removed": list(self.removed),
                "profile": self.profile,
                # the session under way, for the node that takes the room over to go on with
                "recording": {"session_id": recording.session_id, "started_at": recording.started_at}
                if recording is not None else None}

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any]) -> Room:
        return cls(room_id=str(snapshot["room_id"]), name=str(snapshot["name"]),
                   created_at=str(snapshot["created_at"]),
                   invites=[dict(i) for i in snapshot.get("invites", [])],
                   removed=[str(p) for p in snapshot.get("removed", [])],
                   profile=snapshot.get("profile"))

    def knows(self, performer_id: str) -> bool:
        """Whether the performer sits in the room or was ever invited to it."""
        return performer_id in self.members or any(
            i["performer_id"] == performer_id for i in self.invites
        )

    def broadcast(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every member, without waiting for any of them."""
        for member in self.members.values():
            asyncio.ensure_future(member.send(message))

    def send_peers(self) -> None:
        """Tell every member who else is in the room (their own `peers` message each)."""
        for member in self.members.values():
            asyncio.ensure_future(member.send({"type": "peers", "peers": member.peers()}))


@dataclass
class Member:
    """One performer's seat in a room."""

    performer_id: str
    display_name: str
    room: Room
    #: the seat's secret: a new socket with it takes the seat over (a resume)
    resume: str
    socket: Socket | None = None
    consent: ConsentRecord | None = None
    capture_settings: dict[str, Any] | None = None
    publisher: PublishConnection | None = None
    subscriber: SubscribeConnection | None = None
    epoch: int = 0
    joined_at: float = field(default_factory=time.time)
    grace: asyncio.TimerHandle | None = None
    #: loop time of this seat's latest publish: the next one waits publish_min_interval_s
    last_publish_at: float = -float("inf")

    @property
    def state(self) -> str:
        return "joined" if self.socket is not None else "reconnecting"

    @property
    def stream_id(self) -> str:
        return f"{self.performer_id}.{self.epoch}"

    @property
    def publications(self) -> list[Publication]:
        if self.publisher is None:
            return []
        return list(self.publisher.publications.values())

    def peers(self) -> list[dict[str, Any]]:
        """The others in the room, as this member's subscriber forwards them."""
        streams = self.subscriber.stream_ids if self.subscriber else {}
        return roster(self.room, streams, exclude=self)

    async def send(self, message: dict[str, Any]) -> None:
        socket = self.socket
        if socket is None:
            return
        try:
            await socket.send_json(message)
        except Exception:  # the socket is gone; its reader will detach us
            pass


def roster(
    room: Room, stream_ids: dict[str, str], exclude: Member | None = None
) -> list[dict[str, Any]]:
    """Who is in the room as one subscriber sees them: the `peers` of docs/signaling.md."""
    return [
        {
            "performer_id": other.performer_id,
            "display_name": other.display_name,
            "stream_id": stream_ids.get(other.performer_id),
            "state": other.state,
        }
        for other in room.members.values()
        if other is not exclude
    ]
