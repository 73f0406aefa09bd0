"""Who sits in which room: a performer's socket takes the seat of their invite, keeps it
through a reconnect grace when the socket drops, and gives it up in one way, :meth:`Seats.leave`,
whatever the reason (left, reconnect grace expired, removed by the operator, room closed,
consent revoked, server shutting down). Consent is accepted here, and every change of who is
in a room is told to its members (`peers`) and to the consoles."""

from __future__ import annotations

import asyncio
import logging
import secrets

from improv_capture.clock import utc_now_iso
from improv_capture.close_codes import (
    CLOSE_REMOVED,
    CLOSE_ROOM_FULL,
    CLOSE_ROOM_NOT_FOUND,
    CLOSE_SEAT_IN_USE,
)
from improv_capture.rooms.invites import Invite
from improv_capture.rooms.media_wiring import MediaWiring
from improv_capture.rooms.model import ConsentRecord, Member, Room, Socket
from improv_capture.rooms.recordings import Recordings
from improv_capture.rooms.stats_fanout import StatsFanout
from improv_capture.rooms.store import RoomStore
from improv_capture.settings import Settings

logger = logging.getLogger(__name__)

REMOVED = "removed by the operator"
REVOKED = "consent revoked"


class SeatError(Exception):
    """Why a hello cannot take a seat; ``code`` is the WebSocket close code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Seats:
    def __init__(
        self,
        settings: Settings,
        store: RoomStore,
        media: MediaWiring,
        recordings: Recordings,
        fanout: StatsFanout,
    ) -> None:
        self.settings = settings
        self.store = store
        self.media = media
        self.recordings = recordings
        self.fanout = fanout

    def attach(
        self, invite: Invite, socket: Socket, resume: str | None
    ) -> tuple[Member, Socket | None]:
        """Seat ``socket`` for ``invite``; returns the member and the socket it replaced (a
        resume: the seat's secret takes a seat whose socket is still there)."""
        room = self.store.get(invite.room_id)
        if room is None:
            raise SeatError(CLOSE_ROOM_NOT_FOUND, "room not found")
        if invite.performer_id in room.removed:
            raise SeatError(CLOSE_REMOVED, REMOVED)
        member = room.members.get(invite.performer_id)
        replaced = None
        if member is not None:
            if member.socket is not None:
                if not (isinstance(resume, str) and secrets.compare_digest(resume, member.resume)):
                    raise SeatError(CLOSE_SEAT_IN_USE, "this invite is already in use")
                replaced = member.socket
            if member.grace is not None:
                member.grace.cancel()
                member.grace = None
            member.socket = socket
            asyncio.ensure_future(self.media.reset(member))
        else:
            if len(room.members) >= self.settings.max_performers:
                raise SeatError(CLOSE_ROOM_FULL, "room is full")
            member = Member(
                performer_id=invite.performer_id,
                display_name=invite.display_name,
                room=room,
                resume=secrets.token_urlsafe(18),
                socket=socket,
            )
            room.members[member.performer_id] = member
            logger.info("performer %s joined room %s", member.performer_id, room.room_id)
        self._roster_changed(room)
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
            lambda: asyncio.ensure_future(self.leave(member, "reconnect grace expired")),
        )
        self._roster_changed(member.room)

    async def leave(self, member: Member, reason: str) -> None:
        """The member is out of its room (``reason`` says why; the recording logs it), its
        connections closed. Closing its socket, if any, is the caller's."""
        room = member.room
        if room.members.get(member.performer_id) is not member:
            return
        del room.members[member.performer_id]
        if member.grace is not None:
            member.grace.cancel()
            member.grace = None
        logger.info("performer %s left room %s (%s)", member.performer_id, room.room_id, reason)
        if room.recording is not None:
            room.recording.member_left(member, reason)
        await self.media.reset(member)
        self._roster_changed(room)

    async def _leave_and_close(self, member: Member, reason: str, code: int) -> None:
        socket = member.socket
        await self.leave(member, reason)
        if socket is not None:
            try:
                await socket.close(code, reason)
            except Exception:
                pass

    async def remove(self, room: Room, performer_id: str, reason: str = REMOVED) -> None:
        """The operator removed the performer (the caller keeps them out: RoomStore's
        remove_performer); their socket is closed with 4403."""
        member = room.members.get(performer_id)
        if member is not None:
            await self._leave_and_close(member, reason, CLOSE_REMOVED)

    async def remove_everywhere(self, performer_id: str) -> None:
        """After the performer revoked consent: out of every room here that knows them, and
        never back in (their archived media is withdrawn downstream)."""
        for room in list(self.store.rooms.values()):
            if room.knows(performer_id):
                await self.store.remove_performer(room, performer_id)
                await self.remove(room, performer_id, REVOKED)

    async def close_room(self, room: Room) -> None:
        """Before the room is deleted: its recording finalised, everyone out (close 4404)."""
        if room.recording is not None:
            await self.recordings.stop(room)
        for member in list(room.members.values()):
            await self._leave_and_close(member, "room closed", CLOSE_ROOM_NOT_FOUND)

    async def shutdown(self) -> None:
        """The server stops: every recording finalised, every member out (the server closes
        the sockets)."""
        for room in list(self.store.rooms.values()):
            if room.recording is not None:
                await self.recordings.stop(room)
            for member in list(room.members.values()):
                await self.leave(member, "server shutting down")

    def accept_consent(self, member: Member, version: object, text_sha256: object) -> ConsentRecord:
        """The performer accepted the current consent text (ValueError for another one)."""
        if version != self.settings.consent_version or text_sha256 != self.settings.consent_sha256:
            raise ValueError("consent does not match the current consent text")
        member.consent = ConsentRecord(
            version=self.settings.consent_version,
            text_sha256=self.settings.consent_sha256,
            accepted_at=utc_now_iso(),
        )
        if member.room.recording is not None:
            member.room.recording.event(
                "consent", performer_id=member.performer_id, **member.consent.__dict__
            )
        return member.consent

    def _roster_changed(self, room: Room) -> None:
        self.fanout.changed()
        room.send_peers()
