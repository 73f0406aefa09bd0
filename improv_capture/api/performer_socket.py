"""The performer WebSocket: authenticate by the first message, then dispatch JSON messages.

Protocol: docs/signaling.md. A bad message gets an ``error`` message or a 44xx close; it
never raises out of this module, so one performer cannot disturb another room.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from improv_capture.api.messages import ProtocolError
from improv_capture.api.network_probe import NetworkProbes, ProbeRefused
from improv_capture.api.sockets import JsonSocket, MessageReader
from improv_capture.close_codes import (
    CLOSE_BAD_INVITE,
    CLOSE_EXPIRED,
    CLOSE_INTERNAL,
    CLOSE_LEFT,
    CLOSE_MOVED,
    CLOSE_REPLACED,
    CLOSE_TRY_LATER,
)
from improv_capture.media.sdp_policy import NegotiationError
from improv_capture.media.turn import ice_servers_for
from improv_capture.nodes.connection import RedisUnavailable
from improv_capture.nodes.service import Nodes
from improv_capture.observability.logs import bind
from improv_capture.rooms.hub import Hub
from improv_capture.rooms.invites import InviteError, InviteSigner
from improv_capture.rooms.model import Member
from improv_capture.rooms.profiles import live_media, resolve_profile
from improv_capture.rooms.recordings import recording_message
from improv_capture.rooms.seats import SeatError
from improv_capture.settings import Settings

logger = logging.getLogger(__name__)


MAX_CAPTURE_KEYS = 64


class PerformerSocket:
    """One performer's socket from hello to close."""

    def __init__(self, websocket: WebSocket, hub: Hub, signer: InviteSigner,
                 probes: NetworkProbes | None = None, nodes: Nodes | None = None) -> None:
        self.ws = websocket
        self.probes = probes
        self.nodes = nodes
        self.hub = hub
        self.settings: Settings = hub.settings
        self.signer = signer
        self.socket = JsonSocket(websocket)
        self.reader = MessageReader(websocket, self.socket, self.settings)
        self.member: Member | None = None
        self.performer_id: str | None = None  # from the hello on, after a leave too

    async def run(self) -> None:
        await self.ws.accept()
        try:
            await self._hello()
            await self._loop()
        except ProtocolError as exc:
            await self.socket.close(exc.code, exc.reason)
        except SeatError as exc:
            await self.socket.close(exc.code, exc.reason)
        except WebSocketDisconnect:
            pass
        except Exception:
            logger.exception("signaling session failed")
            await self.socket.close(CLOSE_INTERNAL, "internal error")
        finally:
            if self.member is not None and self.member.socket is self.socket:
                self.hub.seats.detach(self.member, self.socket)
            if self.probes is not None and self.performer_id is not None:
                await self.probes.stop(self.performer_id, self.socket)

    async def _hello(self) -> None:
        message = await self.reader.hello()
        try:
            invite = self.signer.verify(message.get("token"))
        except InviteError as exc:
            code = CLOSE_EXPIRED if exc.expired else CLOSE_BAD_INVITE
            raise ProtocolError(code, str(exc)) from exc
        bind(room_id=invite.room_id, performer_id=invite.performer_id)  # this socket's log lines
        self.performer_id = invite.performer_id
        if self.nodes is not None and invite.room_id not in self.hub.store.rooms:
            await self._elsewhere(invite.room_id)
        member, replaced = self.hub.seats.attach(invite, self.socket, message.get("resume"))
        self.member = member
        if replaced is not None:
            await replaced.close(CLOSE_REPLACED, "replaced by a newer socket")
        s = self.settings
        profile = member.room.profile or resolve_profile("standard", s)
        await self.socket.send_json(
            {
                "type": "welcome",
                "performer_id": member.performer_id,
                "display_name": member.display_name,
                "room_id": member.room.room_id,
                "room_name": member.room.name,
                "resume": member.resume,
                "consent": {
                    "version": s.consent_version,
                    "text": s.consent_text,
                    "text_sha256": s.consent_sha256,
                    "accepted": member.consent is not None,
                },
                "ice_servers": ice_servers_for(s, member.performer_id),  # + TURN
                "profile": profile,
                "media": live_media(profile),
                # several nodes: where to look for the room if this node goes away
                "nodes": await self.nodes.live_urls() if self.nodes is not None else [],
            }
        )
        await self.socket.send_json({"type": "peers", "peers": member.peers()})
        await self.socket.send_json(recording_message(member))

    async def _elsewhere(self, room_id: str) -> None:
        """The room is on another node (IMPROV_REDIS_URL): say where and close (4308), or,
        while its node is dead and the room not yet moved, close with "try later" (1013).
        Nothing is said when no node has it: the seat's own 4404 follows."""
        assert self.nodes is not None
        try:
            found = await self.nodes.where(room_id)
        except RedisUnavailable as exc:
            raise ProtocolError(CLOSE_TRY_LATER, "the room's node cannot be found now") from exc
        if found is None:
            return
        owner, url = found
        if url is None:
            raise ProtocolError(CLOSE_TRY_LATER, "the room's node is down; it moves shortly")
        await self.socket.send_json({"type": "moved", "url": url})
        raise ProtocolError(CLOSE_MOVED, f"the room is on node {owner}")

    async def _loop(self) -> None:
        assert self.member is not None
        while True:
            message = await self.reader.next()
            if self.member.socket is not self.socket:
                return  # replaced by a newer socket of this seat
            handler = getattr(self, f"_on_{message['type']}", None)
            if handler is None:
                await self._error("unknown_type", f"unknown message type {message['type']!r}")
                continue
            if await handler(message) is False:
                return

    async def _error(self, code: str, text: str) -> None:
        await self.socket.send_json({"type": "error", "code": code, "message": text})

    async def _on_ping(self, message: dict[str, Any]) -> None:
        await self.socket.send_json({"type": "pong"})

    async def _on_consent(self, message: dict[str, Any]) -> None:
        assert self.member is not None
        try:
            record = self.hub.seats.accept_consent(
                self.member, message.get("version"), message.get("text_sha256")
            )
        except ValueError as exc:
            await self._error("bad_consent", str(exc))
            return
        await self.socket.send_json({"type": "consent_ok", "accepted_at": record.accepted_at})

    async def _on_capture(self, message: dict[str, Any]) -> None:
        assert self.member is not None
        capture = {k: message.get(k) for k in ("user_agent", "audio_processing", "video_settings")}
        if not isinstance(capture["user_agent"], (str, type(None))) or not all(
            isinstance(capture[k], (dict, type(None))) and len(capture[k] or {}) <= MAX_CAPTURE_KEYS
            for k in ("audio_processing", "video_settings")
        ):
            await self._error("bad_message", "capture needs user_agent and two objects")
            return
        self.member.capture_settings = capture
        self.hub.recordings.capture_settings_changed(self.member)
        logger.info(
            "performer %s capture settings: audio %s video %s",
            self.member.performer_id,
            capture["audio_processing"],
            capture["video_settings"],
        )

    async def _on_publish(self, message: dict[str, Any]) -> None:
        assert self.member is not None
        if self.member.consent is None:
            await self._error("consent_required", "accept the consent text before sending media")
            return
        wait = self.hub.media.publish_wait_s(self.member)
        if wait > 0:
            await asyncio.sleep(wait)  # publishes of a seat are spaced; this socket waits
            if self.member is None or self.member.socket is not self.socket:
                return
        try:
            answer = await self.hub.media.publish(self.member, message.get("sdp"))
        except NegotiationError as exc:
            await self._error("bad_sdp", str(exc))
            return
        await self.socket.send_json({"type": "publish_answer", "sdp": answer})

    async def _on_subscribe_answer(self, message: dict[str, Any]) -> None:
        assert self.member is not None
        subscriber = self.member.subscriber
        if subscriber is None:
            await self._error("wrong_state", "nothing to answer: not subscribed")
            return
        try:
            subscriber.handle_answer(message.get("sdp"))
        except NegotiationError as exc:
            await self._error("bad_sdp", str(exc))

    async def _on_probe(self, message: dict[str, Any]) -> None:
        """The pre-join network check (api/network_probe.py): no consent needed, no media."""
        assert self.member is not None
        if self.probes is None:
            await self._error("probe_busy", "this server runs no network checks")
            return
        try:
            answer = await self.probes.start(self.member.performer_id, self.socket,
                                             message.get("sdp"))
        except ProbeRefused as exc:
            await self.socket.send_json(exc.message())
            return
        await self.socket.send_json(answer)

    async def _on_leave(self, message: dict[str, Any]) -> bool:
        assert self.member is not None
        member, self.member = self.member, None
        if member.room.recording is not None:
            # what they sent just before is still on its way (queued on a slow uplink, or
            # being repaired): the seat and the connection stay for it a moment
            await asyncio.sleep(self.settings.leave_drain_s)
        await self.hub.seats.leave(member, "left")
        await self.socket.close(CLOSE_LEFT, "left")
        return False
