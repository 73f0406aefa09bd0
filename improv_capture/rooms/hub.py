"""The live side of the rooms, built once per server process from its five parts, each with
one job: :attr:`Hub.seats` (who sits where, rooms/seats.py), :attr:`Hub.media` (who is sent
what, rooms/media_wiring.py), :attr:`Hub.recordings` (start, stop, markers, prompts,
rooms/recordings.py), :attr:`Hub.uploads` (the studio rooms' high-quality copies,
rooms/hq_uploads.py) and :attr:`Hub.stats` (what the consoles hear, rooms/stats_fanout.py).
The state they share is rooms/model.py's, kept by the :class:`RoomStore`."""

from __future__ import annotations

from improv_capture.rooms.factory import PASSTHROUGH, MediaFactory
from improv_capture.rooms.hq_uploads import HqUploads
from improv_capture.rooms.media_wiring import MediaWiring
from improv_capture.rooms.profiles import resolve_profile
from improv_capture.rooms.recordings import Recordings, SessionEvents
from improv_capture.rooms.seats import Seats
from improv_capture.rooms.stats_fanout import StatsFanout
from improv_capture.rooms.store import RoomStore
from improv_capture.settings import Settings


class Hub:
    def __init__(
        self,
        settings: Settings,
        store: RoomStore,
        sessions: SessionEvents,
        factory: MediaFactory = PASSTHROUGH,
    ) -> None:
        self.settings = settings
        self.store = store
        for room in store.rooms.values():  # rooms from before profiles record as standard
            room.profile = room.profile or resolve_profile("standard", settings)
        self.stats = StatsFanout(store)
        self.media = MediaWiring(settings, factory, self.stats)
        self.uploads = HqUploads(settings, store, sessions, self.stats)
        self.recordings = Recordings(settings, factory, sessions, self.media, self.stats,
                                     self.uploads)
        self.seats = Seats(settings, store, self.media, self.recordings, self.stats)

    async def start(self) -> None:
        self.stats.start()
        await self.uploads.start()

    async def remove_everywhere(self, performer_id: str) -> None:
        """Consent revoked: out of every room here, never back, and no upload of theirs kept
        or taken (their archived media is withdrawn downstream)."""
        await self.seats.remove_everywhere(performer_id)
        await self.uploads.revoke(performer_id)

    async def shutdown(self) -> None:
        self.stats.stop()
        await self.seats.shutdown()
        await self.uploads.shutdown()
