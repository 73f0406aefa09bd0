"""High-quality copies of studio sessions, on the server's side: who may upload into which
session, what the consoles see of each upload, placing a copy on the session timeline once
all of it arrived, and the deadline after which it is placed with what did arrive.

The chunks themselves, their checks and the placement are the recorder's
(improv_capture/recorder/hq/); this module decides when, for whom, and tells the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from improv_capture.background import Background
from improv_capture.clock import parse_utc
from improv_capture.recorder.hq.errors import BadUpload
from improv_capture.recorder.hq.place import place_hq
from improv_capture.recorder.hq.uploads import UploadLimits, UploadStore, upload_cap_bytes
from improv_capture.rooms.model import LiveRecording, Room
from improv_capture.rooms.store import RoomStore, rooms_of_other_workers
from improv_capture.settings import Settings

logger = logging.getLogger(__name__)

#: How long a settled upload (complete, incomplete, rejected) stays in its room's `uploads`.
SETTLED_SHOWN_S = 600.0
SETTLED = ("complete", "incomplete", "rejected", "withdrawn")


class UploadRefused(Exception):
    """An upload request this session does not take: an HTTP status and the reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class SessionUpdates(Protocol):
    """Who hears that a finalised session changed (downstream/service.py, or the cluster's
    notifier to the primary)."""

    async def session_updated(self, session_dir: Path, detail: dict[str, Any]) -> None: ...


class Changes(Protocol):
    def changed(self) -> None: ...


@dataclass
class Target:
    """An upload's session, as the request's checks found it."""

    session_id: str
    performer_id: str
    room_id: str
    limits: UploadLimits


def upload_url(room_id: str, session_id: str, performer_id: str) -> str:
    return f"/api/v1/rooms/{room_id}/sessions/{session_id}/performers/{performer_id}/hq"


class HqUploads:
    def __init__(
        self, settings: Settings, store: RoomStore, updates: SessionUpdates, changes: Changes
    ) -> None:
        self.settings = settings
        self.store = store
        self.updates = updates
        self.changes = changes
        self.files = UploadStore(settings.uploads_dir)
        #: (session_id, performer_id) -> what the consoles see (also kept in room.uploads)
        self.progress: dict[tuple[str, str], dict[str, Any]] = {}
        self._placing: set[tuple[str, str]] = set()
        self._slots = asyncio.Semaphore(settings.hq_placements)
        #: chunk bodies read at once (each up to hq_max_chunk_bytes in memory)
        self.chunk_slots = asyncio.Semaphore(settings.hq_max_concurrent_chunks)
        self._deadlines: dict[str, asyncio.TimerHandle] = {}
        #: sessions stopped but not finalised yet: uploads go on as while they recorded
        self._finalising: dict[str, tuple[Room, LiveRecording]] = {}
        self._background = Background()

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """After a restart: every studio session with copies still uploading gets its
        deadline again (placing at once the copies that completed before the crash). In a
        cluster each session is one process's: its room's worker's, or the primary's when the
        room is gone (the router sends a room it does not know to the primary)."""
        manifests = await asyncio.to_thread(self._unsettled_sessions)
        others = await asyncio.to_thread(
            rooms_of_other_workers, self.settings.data_dir, self.settings.worker_index)
        for manifest in manifests:
            room_id = manifest.get("room_id")
            gone = room_id is None or self.store.get(room_id) is None
            if room_id in others or (gone and not self.settings.is_primary):
                continue
            self._session_ready(manifest)

    async def shutdown(self) -> None:
        for handle in self._deadlines.values():
            handle.cancel()
        await self._background.cancel()

    def _unsettled_sessions(self) -> list[dict[str, Any]]:
        found = []
        for path in self.settings.sessions_dir.glob("ses_*/manifest.json"):
            try:
                manifest = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if manifest.get("state") != "recording" and any(
                (p.get("hq") or {}).get("state") == "uploading" for p in manifest.get("performers", [])
            ):
                found.append(manifest)
        return found

    # --- recording start and stop ------------------------------------------------------------

    def recording_started(self, room: Room, session_id: str) -> None:
        if not (room.profile or {}).get("hq"):
            return
        for member in room.members.values():
            self._show(room.room_id, session_id, member.performer_id, member.display_name,
                       state="pending")

    def recording_stopping(self, room: Room, recording: LiveRecording) -> None:
        """The room stopped recording; its session is being finalised: until it is, uploads
        into it are checked against the recording (the page sends its last chunk now)."""
        self._finalising[recording.session_id] = (room, recording)

    def recording_abandoned(self, session_id: str) -> None:
        """Finalising failed (it is recovered at the next start): no live target any more."""
        self._finalising.pop(session_id, None)

    def session_finalised(self, manifest: dict[str, Any]) -> None:
        """The live copy is in: the hq copies join when complete, or at the deadline."""
        self._finalising.pop(manifest["session_id"], None)
        if not (manifest.get("profile") or {}).get("hq"):
            return
        for performer in manifest.get("performers", []):
            key = (manifest["session_id"], performer["performer_id"])
            if key not in self.progress:
                self._show(manifest.get("room_id") or "", *key, performer.get("display_name"),
                           state="pending")
        self._session_ready(manifest)

    def _session_ready(self, manifest: dict[str, Any]) -> None:
        session_id = manifest["session_id"]
        deadline_s = float(manifest["profile"]["hq"]["upload_deadline_s"])
        ended = parse_utc(manifest.get("ended_at") or manifest["started_at"])
        delay = max(0.0, ended + deadline_s - time.time())
        loop = asyncio.get_running_loop()
        self._deadlines[session_id] = loop.call_later(
            delay, lambda: self._background.spawn(self._deadline(session_id))
        )
        for performer in manifest.get("performers", []):
            if (performer.get("hq") or {}).get("state") == "uploading":
                self._background.spawn(self._place_if_complete(session_id, performer["performer_id"]))

    # --- the checks every upload request passes before its body is read ----------------------

    async def target(self, room_id: str, session_id: str, performer_id: str) -> Target:
        """Revocation is the upload store's marker (HqUploads.revoke), read per request: the
        one record of it, which every process sharing the data dir sees, also after a restart."""
        room = self.store.get(room_id)
        recording = room.recording if room is not None else None
        live: tuple[Room, LiveRecording] | None = None
        if room is not None and recording is not None and recording.session_id == session_id:
            live = (room, recording)
        elif session_id in self._finalising and self._finalising[session_id][0].room_id == room_id:
            live = self._finalising[session_id]
        if live is not None:
            revoked = await asyncio.to_thread(self._revoked, session_id, performer_id)
            return self._live_target(*live, performer_id, revoked)
        manifest, revoked = await asyncio.to_thread(
            lambda: (self._manifest(session_id), self._revoked(session_id, performer_id)))
        if manifest is None or manifest.get("room_id") != room_id or manifest.get("state") == "recording":
            raise UploadRefused(404, "no such session")
        hq = (manifest.get("profile") or {}).get("hq")
        if not hq:
            raise UploadRefused(409, "this session takes no high-quality upload")
        performer = next((p for p in manifest.get("performers", [])
                          if p["performer_id"] == performer_id), None)
        if performer is None:
            raise UploadRefused(404, "this session does not record this performer")
        if performer.get("withdrawn") or revoked:
            raise UploadRefused(410, "consent revoked: the high-quality copy was deleted")
        if not performer.get("consent"):
            raise UploadRefused(403, "consent required")
        state = (performer.get("hq") or {}).get("state")
        if state != "uploading":
            raise UploadRefused(409, f"the upload is closed ({state})")
        duration = float(manifest.get("duration_s") or 0.0)
        return Target(session_id, performer_id, room_id, self._limits(hq, duration))

    def _live_target(
        self, room: Room, recording: LiveRecording, performer_id: str, revoked: bool
    ) -> Target:
        hq = (room.profile or {}).get("hq")
        if not hq:
            raise UploadRefused(409, "this session takes no high-quality upload")
        if revoked:
            raise UploadRefused(410, "consent revoked: the high-quality copy was deleted")
        recorded = {p["performer_id"]: p for p in recording.manifest["performers"]}
        member = room.members.get(performer_id)
        if member is None and performer_id not in recorded:
            raise UploadRefused(404, "this session does not record this performer")
        consent = member.consent if member is not None else recorded[performer_id].get("consent")
        if not consent:
            raise UploadRefused(403, "consent required")
        return Target(recording.session_id, performer_id, room.room_id,
                      self._limits(hq, recording.now_s()))

    def _limits(self, hq: dict[str, Any], duration_s: float) -> UploadLimits:
        return UploadLimits(
            max_chunk_bytes=int(hq["max_chunk_bytes"]),
            max_total_bytes=upload_cap_bytes(hq["video_bitrate"], hq["audio_bitrate"], duration_s),
        )

    def _manifest(self, session_id: str) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.settings.sessions_dir / session_id / "manifest.json").read_text()))
        except (OSError, ValueError):
            return None

    def _revoked(self, session_id: str, performer_id: str) -> bool:
        try:
            return self.files.revoked(session_id, performer_id)
        except BadUpload:  # not an id a directory may have: nothing was ever stored under it
            return False

    # --- the upload protocol -----------------------------------------------------------------

    async def declare_part(self, target: Target, part: int, info: dict[str, Any]) -> dict[str, Any]:
        result = await asyncio.to_thread(
            self.files.declare_part, target.session_id, target.performer_id, part, info)
        return self._stored(target, result)

    async def put_chunk(
        self, target: Target, part: int, index: int, data: bytes, sha256: str,
        recorded_chunks: int | None,
    ) -> dict[str, Any]:
        ack = await asyncio.to_thread(
            self.files.put_chunk, target.session_id, target.performer_id, part, index, data,
            sha256, recorded_chunks, target.limits)
        return self._stored(target, ack)

    async def end_part(self, target: Target, part: int, chunks: int) -> dict[str, Any]:
        result = await asyncio.to_thread(
            self.files.end_part, target.session_id, target.performer_id, part, chunks)
        return self._stored(target, result)

    def _stored(self, target: Target, result: dict[str, Any]) -> dict[str, Any]:
        """After a request changed an upload: its progress, from the store's summary of it
        (no second look at the disk), and once it is complete, its placing. The answer for
        the page is the rest."""
        answer = dict(result)
        upload = answer.pop("upload")
        self._refresh(target, upload)
        if upload["complete"]:
            self._place_when_done(target)
        return answer

    def _place_when_done(self, target: Target) -> None:
        """After a request completed the copy: once the take is over (checked now, not when
        the request began: the session may have been finalised meanwhile, and then its own
        look at the uploads may have come before this one), it is placed."""
        room = self.store.get(target.room_id)
        live = room is not None and room.recording is not None and \
            room.recording.session_id == target.session_id
        if not live and target.session_id not in self._finalising:
            self._background.spawn(self._place(target.session_id, target.performer_id, final=False))

    async def status(self, target: Target) -> dict[str, Any]:
        return dict(await asyncio.to_thread(self.files.status, target.session_id, target.performer_id))

    # --- placing -----------------------------------------------------------------------------

    async def _place_if_complete(self, session_id: str, performer_id: str) -> None:
        upload = await asyncio.to_thread(self.files.summary, session_id, performer_id)
        if upload["complete"]:
            await self._place(session_id, performer_id, final=False)

    async def _deadline(self, session_id: str) -> None:
        self._deadlines.pop(session_id, None)
        manifest = await asyncio.to_thread(self._manifest, session_id)
        for performer in (manifest or {}).get("performers", []):
            if (performer.get("hq") or {}).get("state") == "uploading":
                await self._place(session_id, performer["performer_id"], final=True)

    async def _place(self, session_id: str, performer_id: str, final: bool) -> None:
        key = (session_id, performer_id)
        if key in self._placing:
            return
        self._placing.add(key)
        try:
            async with self._slots:
                session_dir = self.settings.sessions_dir / session_id
                upload_dir = self.files.performer_dir(session_id, performer_id)
                hq = await asyncio.to_thread(place_hq, session_dir, performer_id, upload_dir, final)
            if hq is None:  # nothing changed (settled already, or withdrawn meanwhile)
                return
            logger.info("session %s: the high-quality copy of %s is %s", session_id,
                        performer_id, hq["state"])
            if hq["state"] in SETTLED:  # its chunks go; later requests get 409 closed
                await asyncio.to_thread(self.files.settle, session_id, performer_id, hq["state"])
            entry = self.progress.get(key)
            if entry is not None:
                self._show(entry["room_id"], session_id, performer_id, entry["display_name"],
                           state=hq["state"])
            await self.updates.session_updated(
                session_dir, {"performer_id": performer_id, "hq": {"state": hq["state"]}})
        except Exception:
            logger.exception("placing the high-quality copy of %s in %s failed", performer_id,
                             session_id)
        finally:
            self._placing.discard(key)

    # --- consent -----------------------------------------------------------------------------

    async def revoke(self, performer_id: str) -> None:
        """Consent revoked: every pending chunk of theirs goes, and uploads get 410 from now on
        (their placed copies are withdrawn with the rest of their media, downstream). What
        says so is the store's marker, left in every session they uploaded into and in every
        one still taking their copy (recording, finalising, or before its deadline), where
        nothing of theirs may have arrived yet."""
        live = [recording for room in self.store.rooms.values()
                if (recording := room.recording) is not None]
        live += [recording for _, recording in self._finalising.values()]
        taking = {r.session_id for r in live
                  if any(p["performer_id"] == performer_id for p in r.manifest["performers"])}
        placing = list(self._deadlines)

        def mark() -> None:
            finalised = {session_id for session_id in placing if any(
                p["performer_id"] == performer_id
                for p in (self._manifest(session_id) or {}).get("performers", []))}
            self.files.revoke_performer(performer_id, also=tuple(taking | finalised))

        await asyncio.to_thread(mark)
        for key in [k for k in self.progress if k[1] == performer_id]:
            entry = self.progress[key]
            self._show(entry["room_id"], *key, entry["display_name"], state="withdrawn")

    # --- what the consoles see -----------------------------------------------------------------

    def _refresh(self, target: Target, upload: dict[str, Any]) -> None:
        """An upload's progress, from the store's summary of it (UploadStore's ``upload``)."""
        key = (target.session_id, target.performer_id)
        entry = self.progress.get(key)
        if entry is not None and entry["state"] in SETTLED:
            return
        acked, recorded = upload["acked_chunks"], upload["recorded_chunks"]
        percent = int(100 * acked / recorded) if recorded else None
        self._show(target.room_id, *key, entry["display_name"] if entry else None,
                   state="uploading" if acked else "pending", percent=percent,
                   chunks={"acked": acked, "recorded": recorded}, bytes=upload["bytes"])

    def _show(self, room_id: str, session_id: str, performer_id: str, display_name: str | None,
              **fields: Any) -> None:
        key = (session_id, performer_id)
        entry = self.progress.setdefault(key, {
            "session_id": session_id, "performer_id": performer_id, "room_id": room_id,
            "display_name": display_name, "state": "pending", "percent": None,
            "chunks": {"acked": 0, "recorded": None}, "bytes": 0, "settled_at": None,
        })
        entry.update(fields)
        if entry["state"] in SETTLED and entry["settled_at"] is None:
            entry["settled_at"] = time.time()
            if entry["state"] == "complete":
                entry["percent"] = 100
        now = time.time()
        for stale in [k for k, e in self.progress.items()
                      if e["settled_at"] is not None and now - e["settled_at"] > SETTLED_SHOWN_S]:
            del self.progress[stale]
        self.changes.changed()

    def of_room(self, room_id: str) -> list[dict[str, Any]]:
        """The room's `uploads`, as the consoles show them."""
        return [{k: v for k, v in e.items() if k not in ("room_id", "settled_at")}
                for e in self.progress.values() if e["room_id"] == room_id]

