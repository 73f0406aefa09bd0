"""Who is sent what: each member's publish and subscribe connections, and the one rule that
wires them, :meth:`MediaWiring.resync`: every subscriber forwards exactly the others' current
publications, the recording records every publication, and every console monitor of the room
forwards all of them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from improv_capture.media.connections import SubscribeConnection
from improv_capture.media.relay import Publication
from improv_capture.media.sdp_policy import SdpPolicy
from improv_capture.rooms.factory import MediaFactory
from improv_capture.rooms.model import Member, Room, roster
from improv_capture.rooms.stats_fanout import StatsFanout
from improv_capture.settings import Settings


def forwarded(room: Room, to: Member | None = None) -> dict[str, tuple[str, list[Publication]]]:
    """What a subscriber in ``room`` forwards, as :meth:`SubscribeConnection.sync` takes it:
    every member's current publications but its own (``to``; a monitor is nobody's)."""
    return {
        other.performer_id: (other.stream_id, other.publications)
        for other in room.members.values()
        if other is not to and other.publications
    }


class Monitor:
    """An operator console's receive-only view of one room: it forwards every performer but
    is never a member, so performers never see it and the recording never records it."""

    def __init__(
        self, wiring: MediaWiring, room: Room, send_offer: Callable[[str], Awaitable[None]]
    ) -> None:
        self.room = room
        self._wiring = wiring
        settings = wiring.settings
        self.subscriber = SubscribeConnection(
            settings.ice_servers, send_offer, settings.negotiation_timeout_s, wiring.sdp_policy
        )

    def sync(self) -> None:
        self.subscriber.sync(forwarded(self.room))

    def peers(self) -> list[dict[str, Any]]:
        return roster(self.room, self.subscriber.stream_ids)

    async def close(self) -> None:
        self._wiring.monitors.discard(self)
        await self.subscriber.close()


class MediaWiring:
    def __init__(self, settings: Settings, factory: MediaFactory, fanout: StatsFanout) -> None:
        self.settings = settings
        self.factory = factory
        self.fanout = fanout
        self.sdp_policy = SdpPolicy.from_settings(settings)
        self.monitors: set[Monitor] = set()

    def publish_wait_s(self, member: Member) -> float:
        """How long ``member`` must wait before its next publish (a new peer connection, an
        answer, gathering: the most a performer can make the server do with one message)."""
        since = asyncio.get_running_loop().time() - member.last_publish_at
        return max(0.0, self.settings.publish_min_interval_s - since)

    async def publish(self, member: Member, offer_sdp: object) -> str:
        """Answer a publish offer (the caller checks consent and waits :meth:`publish_wait_s`);
        the member's earlier publish connection is replaced, its subscribe one made once."""
        member.last_publish_at = asyncio.get_running_loop().time()
        # checked once, before anything is torn down: a refused offer leaves the current one up
        offer = self.sdp_policy.publish_offer(offer_sdp)
        old = member.publisher
        member.publisher = None
        if old is not None:
            await old.close()
        member.epoch += 1
        publisher = self.factory.publish_connection(
            self.settings,
            member.performer_id,
            on_publication=lambda _p: self.resync(member.room),
        )
        try:
            answer = await publisher.answer(offer)
        except Exception:
            await publisher.close()
            self.resync(member.room)
            raise
        member.publisher = publisher
        if member.subscriber is None:
            member.subscriber = SubscribeConnection(
                self.settings.ice_servers,
                lambda sdp: self._send_subscribe_offer(member, sdp),
                self.settings.negotiation_timeout_s,
                self.sdp_policy,
            )
        self.resync(member.room)
        return answer

    async def _send_subscribe_offer(self, member: Member, sdp: str) -> None:
        await member.send({"type": "subscribe_offer", "sdp": sdp, "peers": member.peers()})

    async def reset(self, member: Member) -> None:
        """Close both connections of ``member`` (a rejoin publishes anew; a leave is final)."""
        publisher, subscriber = member.publisher, member.subscriber
        member.publisher = member.subscriber = None
        self.resync(member.room)
        if subscriber is not None:
            await subscriber.close()
        if publisher is not None:
            await publisher.close()
        self.resync(member.room)

    def resync(self, room: Room) -> None:
        """Make every subscriber forward exactly the others' current publications, and the
        recording record every publication; then tell everyone the new roster."""
        for member in room.members.values():
            if room.recording is not None:
                room.recording.sync_member(member)
            if member.subscriber is not None:
                member.subscriber.sync(forwarded(room, to=member))
        for monitor in list(self.monitors):
            if monitor.room is room:
                monitor.sync()
        self.fanout.changed()
        room.send_peers()

    def watch(self, room: Room, send_offer: Callable[[str], Awaitable[None]]) -> Monitor:
        """A monitor of ``room`` for a console; it follows every resync until it is closed."""
        monitor = Monitor(self, room, send_offer)
        self.monitors.add(monitor)
        monitor.sync()
        return monitor
