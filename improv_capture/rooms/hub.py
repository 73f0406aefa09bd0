"""Who is in which room, and what each performer is sent.

The hub owns the live side of rooms: seats (with their reconnect grace), consent records,
each performer's publish and subscribe sessions, and the rule that every performer receives
every other performer's media. It never touches sockets directly: a :class:`Socket`
is anything that can send a JSON message and close with a code.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from improv_capture.clock import utc_now_iso
from improv_capture.media.baseline import BaselineRecording
from improv_capture.media.connections import PublishConnection, SubscribeConnection
from improv_capture.media.relay import Publication
from improv_capture.media.sdp_policy import SdpPolicy
from improv_capture.media.stats import StatsSampler
from improv_capture.rooms.invites import Invite
from improv_capture.rooms.recording import Recording
from improv_capture.rooms.store import Room, RoomStore
from improv_capture.settings import Settings

logger = logging.getLogger(__name__)


class Socket(Protocol):
    async def send_json(self, message: dict[str, Any]) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class SeatError(Exception):
    """Why a hello cannot take a seat; ``code`` is the WebSocket close code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class ConsentRecord:
    version: str
    text_sha256: str
    accepted_at: str


@dataclass
class Member:
    """One performer's seat in a room."""

    performer_id: str
    display_name: str
    room: Room
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


class Listener(Protocol):
    """An operator console: told when rooms change and given per-second stats."""

    def rooms_changed(self) -> None: ...

    def stats(self, room_id: str, performers: dict[str, Any]) -> None: ...

    def sync_monitor(self, room: Room) -> None: ...


class SessionEvents(Protocol):
    """Who hears that a session started and was finalised: the catalog, events and webhooks
    (improv_capture.downstream.service) in a lone server or a cluster's primary, a notifier elsewhere."""

    async def session_started(self, session_id: str, room_id: str, started_at: str) -> None: ...

    async def session_finalised(self, session_dir: Path) -> None: ...


class Hub:
    def __init__(self, settings: Settings, store: RoomStore, sessions: SessionEvents) -> None:
        self.settings = settings
        self.store = store
        self.sessions = sessions
        self.listeners: set[Listener] = set()
        self.sdp_policy = SdpPolicy.from_settings(settings)
        self._changed_pending = False
        self._sampler = StatsSampler()
        self._stats_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stats_task = asyncio.ensure_future(self._stats_loop())

    def changed(self) -> None:
        """Something an operator sees changed; listeners hear of it once per loop turn."""
        if self._changed_pending:
            return
        self._changed_pending = True

        def notify() -> None:
            self._changed_pending = False
            for listener in list(self.listeners):
                listener.rooms_changed()

        asyncio.get_running_loop().call_soon(notify)

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for room in list(self.store.rooms.values()):
                if not room.members:
                    continue
                performers = {}
                for member in list(room.members.values()):
                    try:
                        stats = await self._sampler.sample(member)
                    except Exception:
                        logger.exception("stats of %s failed", member.performer_id)
                        continue
                    performers[member.performer_id] = stats
                    if room.recording is not None:
                        room.recording.stats(member, stats)
                for listener in list(self.listeners):
                    listener.stats(room.room_id, performers)

    # seats

    def attach(
        self, invite: Invite, socket: Socket, resume: str | None
    ) -> tuple[Member, Socket | None]:
        """Seat ``socket`` for ``invite``; returns the member and a replaced socket."""
        room = self.store.get(invite.room_id)
        if room is None:
            raise SeatError(4404, "room not found")
        if invite.performer_id in room.removed:
            raise SeatError(4403, "removed by the operator")
        member = room.members.get(invite.performer_id)
        replaced = None
        if member is not None:
            if member.socket is not None:
                if not (isinstance(resume, str) and secrets.compare_digest(resume, member.resume)):
                    raise SeatError(4409, "this invite is already in use")
                replaced = member.socket
            if member.grace is not None:
                member.grace.cancel()
                member.grace = None
            member.socket = socket
            asyncio.ensure_future(self._reset_media(member))
        else:
            if len(room.members) >= self.settings.max_performers:
                raise SeatError(4429, "room is full")
            member = Member(
                performer_id=invite.performer_id,
                display_name=invite.display_name,
                room=room,
                resume=secrets.token_urlsafe(18),
                socket=socket,
            )
            room.members[member.performer_id] = member
            logger.info("performer %s joined room %s", member.performer_id, room.room_id)
        self._broadcast_peers(room)
        return member, replaced

    def detach(self, member: Member, socket: Socket) -> None:
        """The socket dropped without a leave: hold the seat for the reconnect grace."""
        if member.socket is not socket:
            return  # already replaced by a newer socket
        member.socket = None
        if member.room.members.get(member.performer_id) is not member:
            return
        if member.room.recording is not None:
            member.room.recording.event("reconnecting", performer_id=member.performer_id)
        loop = asyncio.get_running_loop()
        member.grace = loop.call_later(
            self.settings.reconnect_grace_s,
            lambda: asyncio.ensure_future(self.remove(member, "reconnect grace expired")),
        )
        self._broadcast_peers(member.room)

    async def remove(self, member: Member, why: str) -> None:
        room = member.room
        if room.members.get(member.performer_id) is not member:
            return
        del room.members[member.performer_id]
        if member.grace is not None:
            member.grace.cancel()
            member.grace = None
        logger.info("performer %s left room %s (%s)", member.performer_id, room.room_id, why)
        if room.recording is not None:
            room.recording.member_gone(member, why)
        await self._reset_media(member)
        self._broadcast_peers(room)

    async def kick(self, room: Room, performer_id: str) -> None:
        member = room.members.get(performer_id)
        if member is None:
            return
        socket = member.socket
        await self.remove(member, "removed by the operator")
        if socket is not None:
            try:
                await socket.close(4403, "removed by the operator")
            except Exception:
                pass

    async def withdraw(self, performer_id: str) -> None:
        """Withdrawn consent: out of every room here that knows them, and never back in."""
        for room in list(self.store.rooms.values()):
            known = performer_id in room.members or any(
                i["performer_id"] == performer_id for i in room.invites
            )
            if known:
                await self.store.remove_performer(room, performer_id)
                await self.kick(room, performer_id)

    async def close_room(self, room: Room) -> None:
        if room.recording is not None:
            await self.stop_recording(room)
        for member in list(room.members.values()):
            socket = member.socket
            await self.remove(member, "room closed")
            if socket is not None:
                try:
                    await socket.close(4404, "room closed")
                except Exception:
                    pass

    async def shutdown(self) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
        for room in list(self.store.rooms.values()):
            if room.recording is not None:
                await self.stop_recording(room)
            for member in list(room.members.values()):
                await self.remove(member, "server shutting down")

    # consent and media

    def accept_consent(self, member: Member, version: object, text_sha256: object) -> ConsentRecord:
        if version != self.settings.consent_version or text_sha256 != self.settings.consent_sha256:
            raise ValueError("consent does not match the current consent text")
        member.consent = ConsentRecord(
            version=self.settings.consent_version,
            text_sha256=self.settings.consent_sha256,
            accepted_at=utc_now_iso(),
        )
        return member.consent

    def publish_wait_s(self, member: Member) -> float:
        """How long ``member`` must wait before its next publish (a new peer socket, an
        answer, gathering: the most a performer can make the server do with one message)."""
        since = asyncio.get_running_loop().time() - member.last_publish_at
        return max(0.0, self.settings.publish_min_interval_s - since)

    async def publish(self, member: Member, offer_sdp: object) -> str:
        """Answer a publish offer; media is refused before consent and publishes are spaced
        by publish_min_interval_s (the caller waits for :meth:`publish_wait_s`)."""
        member.last_publish_at = asyncio.get_running_loop().time()
        self.sdp_policy.publish_offer(offer_sdp)  # refused here, the current one stays up
        old = member.publisher
        member.publisher = None
        if old is not None:
            await old.close()
        member.epoch += 1
        capacity = {
            "audio": self.settings.relay_audio_queue,
            "video": self.settings.relay_video_queue,
        }
        publisher = PublishConnection(
            member.performer_id,
            self.settings.ice_servers,
            capacity,
            self.settings.pli_interval_s,
            on_publication=lambda _p: self._resync(member.room),
            policy=self.sdp_policy,
            passthrough=self.settings.relay_mode == "passthrough",
        )
        try:
            answer = await publisher.answer(offer_sdp)
        except Exception:
            await publisher.close()
            self._resync(member.room)
            raise
        member.publisher = publisher
        if member.subscriber is None:
            member.subscriber = SubscribeConnection(
                self.settings.ice_servers,
                lambda sdp: self._send_subscribe_offer(member, sdp),
                self.settings.negotiation_timeout_s,
                self.sdp_policy,
            )
        self._resync(member.room)
        return answer

    async def _send_subscribe_offer(self, member: Member, sdp: str) -> None:
        await member.send({"type": "subscribe_offer", "sdp": sdp, "peers": self.peers_for(member)})

    async def _reset_media(self, member: Member) -> None:
        publisher, subscriber = member.publisher, member.subscriber
        member.publisher = member.subscriber = None
        self._resync(member.room)
        if subscriber is not None:
            await subscriber.close()
        if publisher is not None:
            await publisher.close()
        self._resync(member.room)

    def _resync(self, room: Room) -> None:
        """Make every subscriber forward exactly the others' current publications, and the
        recorder record every publication."""
        for member in room.members.values():
            if room.recording is not None:
                room.recording.sync_member(member)
            if member.subscriber is None:
                continue
            wanted = {
                other.performer_id: (other.stream_id, other.publications)
                for other in room.members.values()
                if other is not member and other.publications
            }
            member.subscriber.sync(wanted)
        for listener in list(self.listeners):
            listener.sync_monitor(room)
        self._broadcast_peers(room)

    # recording, markers, prompts

    def start_recording(self, room: Room) -> Recording:
        if room.recording is not None:
            raise RuntimeError("already recording")
        kind = Recording if self.settings.relay_mode == "passthrough" else BaselineRecording
        recording = kind(room, self.settings.sessions_dir, self.settings.recorder_queue)
        room.recording = recording
        recording.start()
        self._resync(room)
        self.changed()
        asyncio.ensure_future(
            self.sessions.session_started(recording.session_id, room.room_id, recording.started_at)
        )
        self._broadcast(room, {"type": "recording", "active": True})
        logger.info("room %s recording session %s", room.room_id, recording.session_id)
        return recording

    async def stop_recording(self, room: Room) -> dict[str, Any]:
        recording = room.recording
        if recording is None:
            raise RuntimeError("not recording")
        room.recording = None
        self._broadcast(room, {"type": "recording", "active": False})
        self.changed()
        manifest = await recording.stop()
        await self.sessions.session_finalised(recording.session_dir)
        return manifest

    def capture_settings_changed(self, member: Member) -> None:
        if member.room.recording is not None:
            member.room.recording.performer_changed(member)

    def prompt(self, room: Room, prompt: dict[str, Any]) -> dict[str, Any]:
        self._broadcast(room, {"type": "prompt", **prompt})
        self.changed()
        if room.recording is not None:
            return room.recording.prompt(prompt)
        return {"t_s": None, **prompt}

    def _broadcast(self, room: Room, message: dict[str, Any]) -> None:
        for member in room.members.values():
            asyncio.ensure_future(member.send(message))

    # roster

    def peers_for(self, member: Member) -> list[dict[str, Any]]:
        streams = member.subscriber.stream_ids if member.subscriber else {}
        return roster(member.room, streams, exclude=member)

    def _broadcast_peers(self, room: Room) -> None:
        self.changed()
        for member in room.members.values():
            asyncio.ensure_future(member.send({"type": "peers", "peers": self.peers_for(member)}))

    def describe(self, room: Room) -> dict[str, Any]:
        """A room as the operator API shows it: performers, live stats, recording state."""
        performers = []
        for member in room.members.values():
            tracks = {
                p.kind: {
                    "packets": p.packets,
                    "bytes": p.bytes,
                    "keyframes": p.keyframes,
                    "last_packet_age_s": (
                        round(time.time() - p.last_packet_at, 3) if p.last_packet_at else None
                    ),
                }
                for p in member.publications
            }
            performers.append(
                {
                    "performer_id": member.performer_id,
                    "display_name": member.display_name,
                    "state": member.state,
                    "consent": member.consent.__dict__ if member.consent else None,
                    "capture": member.capture_settings,
                    "publishing": sorted(tracks),
                    "tracks": tracks,
                    "receiving": member.subscriber.forward_stats() if member.subscriber else {},
                }
            )
        recording = room.recording
        where = {"worker": self.settings.worker_index} if self.settings.worker_index is not None else {}
        return {
            **room.record(),
            **where,
            "performers": performers,
            "recording": recording.describe() if recording is not None else None,
        }
