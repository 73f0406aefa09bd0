"""Starting and stopping a room's recording (a :class:`~improv_capture.rooms.recording.Recording`
writes one session), and what goes into it on the operator's word: markers, prompts, and
performers' changed capture settings. Who hears of a session is told when it starts and once
it is finalised."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Protocol

from improv_capture.observability.logs import log_ids
from improv_capture.rooms.factory import MediaFactory
from improv_capture.rooms.hq_uploads import HqUploads, upload_url
from improv_capture.rooms.media_wiring import MediaWiring
from improv_capture.rooms.model import LiveRecording, Member, Room
from improv_capture.rooms.stats_fanout import StatsFanout
from improv_capture.settings import Settings

logger = logging.getLogger(__name__)


class SessionEvents(Protocol):
    """Who hears that a session started and was finalised: the catalog, events and webhooks
    (improv_capture.downstream.service) in a lone server or a cluster's primary, a notifier
    (improv_capture.cluster.internal_api) in the other workers."""

    async def session_started(self, session_id: str, room_id: str, started_at: str) -> None: ...

    async def session_finalised(self, session_dir: Path) -> None: ...

    async def session_updated(self, session_dir: Path, detail: dict[str, Any]) -> None: ...


class RecordingStateError(RuntimeError):
    """Start on a room already recording, or a stop, marker on one that is not."""


def recording_message(member: Member) -> dict[str, Any]:
    """What a performer's page hears of its room's recording: whether one runs, and in a
    studio room where its high-quality copy goes and how it is recorded."""
    room, recording = member.room, member.room.recording
    if recording is None:
        return recording_stopped_message(None)
    hq = (room.profile or {}).get("hq")
    return {
        "type": "recording",
        "active": True,
        "session_id": recording.session_id,
        "hq": {
            "upload_url": upload_url(room.room_id, recording.session_id, member.performer_id),
            **{k: hq[k] for k in ("mime_type", "video_bitrate", "audio_bitrate", "chunk_s",
                                  "max_chunk_bytes")},
        } if hq else None,
    }


def recording_stopped_message(session_id: str | None) -> dict[str, Any]:
    """No recording runs (any more): the page ends the high-quality part of ``session_id``."""
    return {"type": "recording", "active": False, "session_id": session_id}


class Recordings:
    def __init__(
        self,
        settings: Settings,
        factory: MediaFactory,
        sessions: SessionEvents,
        media: MediaWiring,
        fanout: StatsFanout,
        uploads: HqUploads,
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.sessions = sessions
        self.media = media
        self.fanout = fanout
        self.uploads = uploads

    def start(self, room: Room, continues: dict[str, Any] | None = None) -> LiveRecording:
        """``continues``: the session this one goes on with, recorded on a node that died
        (its session_id, started_at and node_id: the manifest's ``continues``)."""
        if room.recording is not None:
            raise RecordingStateError("already recording")
        recording = self.factory.recording(self.settings, room)
        with log_ids(room_id=room.room_id, session_id=recording.session_id):
            room.recording = recording
            if continues is not None:
                recording.manifest["continues"] = continues
            recording.start()
            self.media.resync(room)
            self.fanout.changed()
            asyncio.ensure_future(self.sessions.session_started(
                recording.session_id, room.room_id, recording.started_at))
            self.uploads.recording_started(room, recording.session_id)
            for member in room.members.values():
                asyncio.ensure_future(member.send(recording_message(member)))
            logger.info("room %s recording session %s", room.room_id, recording.session_id)
        return recording

    async def stop(self, room: Room) -> dict[str, Any]:
        """Stop and finalise; returns the session's final manifest."""
        recording = room.recording
        if recording is None:
            raise RecordingStateError("not recording")
        with log_ids(room_id=room.room_id, session_id=recording.session_id):
            return await self._stop(room, recording)

    async def _stop(self, room: Room, recording: LiveRecording) -> dict[str, Any]:
        self.uploads.recording_stopping(room, recording)
        room.recording = None
        room.broadcast(recording_stopped_message(recording.session_id))
        self.fanout.changed()
        try:
            manifest = await recording.stop()
        except BaseException:
            self.uploads.recording_abandoned(recording.session_id)
            raise
        await self.sessions.session_finalised(recording.session_dir)
        self.uploads.session_finalised(manifest)
        return manifest

    def marker(self, room: Room, kind: str, label: str, data: Any) -> dict[str, Any]:
        if room.recording is None:
            raise RecordingStateError("not recording")
        marker = room.recording.marker(kind, label, data)
        self.fanout.changed()
        return marker

    def prompt(self, room: Room, prompt: dict[str, Any]) -> dict[str, Any]:
        """Show a prompt to every performer; recorded (with its time) if the room records."""
        room.broadcast({"type": "prompt", **prompt})
        self.fanout.changed()
        if room.recording is not None:
            return room.recording.prompt(prompt)
        return {"t_s": None, **prompt}

    def capture_settings_changed(self, member: Member) -> None:
        if member.room.recording is not None:
            member.room.recording.performer_changed(member)
