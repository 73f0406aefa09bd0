"""The hub's parts on their own, in one process: seats (join, resume, the refusals, the
reconnect grace, peers), the stats fan-out's coalescing of changes, and a recording's
lifecycle, with a real room store, a real recording writing a session into tmp_path and the
real downstream service hearing of it. The sockets are the test's own: they keep what the
server sends and how it closed them, as a performer's page would."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from improv_capture.close_codes import (
    CLOSE_REMOVED,
    CLOSE_ROOM_FULL,
    CLOSE_ROOM_NOT_FOUND,
    CLOSE_SEAT_IN_USE,
)
from improv_capture.downstream.service import Downstream
from improv_capture.rooms.hub import Hub
from improv_capture.rooms.invites import Invite
from improv_capture.rooms.model import Room
from improv_capture.rooms.profiles import resolve_profile
from improv_capture.rooms.recordings import RecordingStateError
from improv_capture.rooms.seats import SeatError
from improv_capture.rooms.store import RoomStore
from improv_capture.settings import Settings

pytestmark = pytest.mark.unit

GRACE_S = 0.2


class Page:
    """A performer's end of the socket: what the server sent, and the close it got."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    async def send_json(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def last(self, kind: str) -> dict[str, Any] | None:
        return next((m for m in reversed(self.messages) if m["type"] == kind), None)

    def peers(self) -> list[tuple[str, str]]:
        """Who the latest `peers` message lists, and their state."""
        last = self.last("peers")
        return [(p["performer_id"], p["state"]) for p in last["peers"]] if last else []


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, max_performers=2, reconnect_grace_s=GRACE_S)


@pytest.fixture
async def downstream(settings: Settings) -> AsyncIterator[Downstream]:
    service = Downstream(settings, "webhook-secret")
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
        await service.close()


@pytest.fixture
async def hub(settings: Settings, downstream: Downstream, tmp_path: Path) -> AsyncIterator[Hub]:
    store = RoomStore(tmp_path / "rooms.sqlite3")
    hub = Hub(settings, store, downstream)
    try:
        yield hub
    finally:
        await hub.shutdown()
        store.close()


@pytest.fixture
async def room(hub: Hub) -> Room:
    return await hub.store.create("stage", 10, resolve_profile("standard", hub.settings))


def invite(room: Room, performer_id: str) -> Invite:
    return Invite(room.room_id, performer_id, performer_id.upper(), time.time() + 3600)


async def test_performers_join_and_each_hears_of_the_others(hub: Hub, room: Room) -> None:
    ann, bob = Page(), Page()
    member, replaced = hub.seats.attach(invite(room, "ann"), ann, None)
    assert replaced is None and member.state == "joined" and set(room.members) == {"ann"}
    hub.seats.attach(invite(room, "bob"), bob, None)
    await until(lambda: ann.peers() == [("bob", "joined")] and bob.peers() == [("ann", "joined")])

    await hub.seats.leave(member, "left")
    assert set(room.members) == {"bob"}
    await until(lambda: bob.peers() == [])


async def test_a_second_socket_takes_the_seat_only_with_its_secret(hub: Hub, room: Room) -> None:
    first = Page()
    member, _ = hub.seats.attach(invite(room, "ann"), first, None)
    for resume in (None, "not the secret"):
        with pytest.raises(SeatError) as refused:
            hub.seats.attach(invite(room, "ann"), Page(), resume)
        assert refused.value.code == CLOSE_SEAT_IN_USE == 4409
    assert member.socket is first

    second = Page()
    again, replaced = hub.seats.attach(invite(room, "ann"), second, member.resume)
    assert again is member and replaced is first and member.socket is second


async def test_a_full_room_and_an_unknown_room_refuse_the_seat(hub: Hub, room: Room) -> None:
    hub.seats.attach(invite(room, "ann"), Page(), None)
    hub.seats.attach(invite(room, "bob"), Page(), None)
    with pytest.raises(SeatError) as full:
        hub.seats.attach(invite(room, "cy"), Page(), None)
    assert full.value.code == CLOSE_ROOM_FULL == 4429 and set(room.members) == {"ann", "bob"}

    gone = Invite("room_none", "ann", "Ann", time.time() + 3600)
    with pytest.raises(SeatError) as missing:
        hub.seats.attach(gone, Page(), None)
    assert missing.value.code == CLOSE_ROOM_NOT_FOUND == 4404


async def test_a_removed_performer_is_closed_with_4403_and_cannot_rejoin(
    hub: Hub, room: Room
) -> None:
    ann, bob = Page(), Page()
    hub.seats.attach(invite(room, "ann"), ann, None)
    hub.seats.attach(invite(room, "bob"), bob, None)
    await hub.store.remove_performer(room, "ann")
    await hub.seats.remove(room, "ann")
    assert ann.closed == (CLOSE_REMOVED, "removed by the operator") and set(room.members) == {"bob"}
    await until(lambda: bob.peers() == [])
    with pytest.raises(SeatError) as refused:
        hub.seats.attach(invite(room, "ann"), Page(), None)
    assert refused.value.code == CLOSE_REMOVED == 4403


async def test_a_dropped_socket_keeps_the_seat_until_the_grace_expires(
    hub: Hub, room: Room
) -> None:
    ann, bob = Page(), Page()
    member, _ = hub.seats.attach(invite(room, "ann"), ann, None)
    hub.seats.attach(invite(room, "bob"), bob, None)
    hub.seats.detach(member, ann)
    assert member.state == "reconnecting" and "ann" in room.members
    await until(lambda: bob.peers() == [("ann", "reconnecting")])
    # the grace expires: ann leaves, and bob is told
    await until(lambda: "ann" not in room.members, timeout=GRACE_S + 2)
    await until(lambda: bob.peers() == [])


async def test_a_rejoin_within_the_grace_keeps_the_seat(hub: Hub, room: Room) -> None:
    ann = Page()
    member, _ = hub.seats.attach(invite(room, "ann"), ann, None)
    hub.seats.detach(member, ann)
    grace = member.grace
    assert grace is not None
    back = Page()
    again, replaced = hub.seats.attach(invite(room, "ann"), back, None)  # no socket: no secret
    assert again is member and replaced is None and member.state == "joined"
    assert member.grace is None and grace.cancelled()


async def test_consent_is_accepted_for_the_current_text_only(hub: Hub, room: Room) -> None:
    member, _ = hub.seats.attach(invite(room, "ann"), Page(), None)
    with pytest.raises(ValueError):
        hub.seats.accept_consent(member, "0", hub.settings.consent_sha256)
    assert member.consent is None
    record = hub.seats.accept_consent(member, hub.settings.consent_version, hub.settings.consent_sha256)
    assert member.consent is record and record.text_sha256 == hub.settings.consent_sha256


async def test_revoked_consent_takes_the_performer_out_of_every_room(hub: Hub, room: Room) -> None:
    other = await hub.store.create("other", 10, resolve_profile("standard", hub.settings))
    await hub.store.add_invite(other, {"performer_id": "ann", "display_name": "Ann"}, 10)
    ann = Page()
    hub.seats.attach(invite(room, "ann"), ann, None)
    await hub.seats.remove_everywhere("ann")
    assert ann.closed == (CLOSE_REMOVED, "consent revoked") and not room.members
    assert "ann" in room.removed and "ann" in other.removed
    with pytest.raises(SeatError):
        hub.seats.attach(invite(other, "ann"), Page(), None)


async def test_changes_reach_each_console_once_per_loop_turn(hub: Hub) -> None:
    class Console:
        def __init__(self) -> None:
            self.rooms_changes = 0

        def rooms_changed(self) -> None:
            self.rooms_changes += 1

        def stats(self, room_id: str, performers: dict[str, Any]) -> None:
            pass

    console = Console()
    hub.stats.listeners.add(console)
    for _ in range(5):
        hub.stats.changed()
    assert console.rooms_changes == 0  # not yet: on the next loop turn
    await asyncio.sleep(0)
    assert console.rooms_changes == 1
    await asyncio.sleep(0)
    assert console.rooms_changes == 1
    hub.stats.changed()
    await asyncio.sleep(0)
    assert console.rooms_changes == 2


async def test_a_recording_starts_once_stops_once_and_is_announced(
    hub: Hub, room: Room, downstream: Downstream
) -> None:
    ann = Page()
    hub.seats.attach(invite(room, "ann"), ann, None)
    recording = hub.recordings.start(room)
    assert room.recording is recording
    with pytest.raises(RecordingStateError):
        hub.recordings.start(room)
    await until(lambda: ann.last("recording") == {
        "type": "recording", "active": True, "session_id": recording.session_id, "hq": None})
    marker = hub.recordings.marker(room, "scene", "one", None)
    prompt = hub.recordings.prompt(room, {"text": "be surprised"})
    await until(lambda: ann.last("prompt") == {"type": "prompt", "text": "be surprised"})

    manifest = await hub.recordings.stop(room)
    assert room.recording is None and manifest["session_id"] == recording.session_id
    assert ann.last("recording") == {
        "type": "recording", "active": False, "session_id": recording.session_id}
    with pytest.raises(RecordingStateError):
        await hub.recordings.stop(room)
    with pytest.raises(RecordingStateError):
        hub.recordings.marker(room, "scene", "two", None)

    on_disk = json.loads((recording.session_dir / "manifest.json").read_text())
    assert on_disk["session_id"] == recording.session_id and on_disk["room_id"] == room.room_id
    assert [(m["kind"], m["label"], m["t_s"]) for m in on_disk["markers"]] == [
        ("scene", "one", marker["t_s"])]
    assert [(p["text"], p["t_s"]) for p in on_disk["prompts"]] == [("be surprised", prompt["t_s"])]
    events = await downstream.events.since(0)
    assert [(e["type"], e["data"]["session_id"]) for e in events] == [
        ("session.started", recording.session_id), ("session.finalized", recording.session_id)]
    listed = await downstream.catalog.page(
        state=None, room_id=room.room_id, since=None, until=None, after=None, limit=10)
    assert [s["session_id"] for s in listed["items"]] == [recording.session_id]


async def test_closing_a_room_finalises_its_recording_and_closes_every_seat(
    hub: Hub, room: Room
) -> None:
    ann = Page()
    hub.seats.attach(invite(room, "ann"), ann, None)
    recording = hub.recordings.start(room)
    await hub.seats.close_room(room)
    assert ann.closed == (CLOSE_ROOM_NOT_FOUND, "room closed") and not room.members
    assert room.recording is None
    assert json.loads((recording.session_dir / "manifest.json").read_text())["ended_at"]


async def test_every_publish_session_of_a_performer_gets_its_own_segment(
    hub: Hub, room: Room
) -> None:
    """A closed publisher's successor may get its id(): it must still start a new segment, or
    it reopens the first segment's files (what they held is lost, the rest misplaced)."""

    class Publisher:  # what the recording keys segments by: the member's current publisher
        pass

    member, _ = hub.seats.attach(invite(room, "ann"), Page(), None)
    recording = hub.recordings.start(room)
    names = []
    for _ in range(3):
        member.publisher = Publisher()  # type: ignore[assignment]
        names.append(recording._segment(member))
        assert recording._segment(member) == names[-1]  # the same publish session
        member.publisher = None  # closed: nothing else holds it, so its id is free again
    assert names == ["s001", "s002", "s003"]
    await hub.recordings.stop(room)
