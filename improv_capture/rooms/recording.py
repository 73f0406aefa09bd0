"""A room's recording while it runs: which tracks go to the recorder, the live manifest,
the events log, and the stop that finalises the archive (in a thread, off the event loop)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from improv_capture.clock import utc_iso
from improv_capture.media.relay import Publication
from improv_capture.recorder.capture import SessionWriter, TrackRecorder
from improv_capture.recorder.finalise import finalise_session
from improv_capture.rooms.model import Member, Room

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: markers that open a take: every publisher is asked for a keyframe at once, so that the
#: take's video can be cut by stream copy within a frame or two of the mark (export)
KEYFRAME_MARKERS = frozenset({"take", "scene"})


def new_session_id(now: float) -> str:
    return time.strftime("ses_%Y%m%dT%H%M%SZ_", time.gmtime(now)) + secrets.token_hex(3)


class Recording:
    """Writes one session: a track per publication (the recorder's capture stage), the
    manifest as it changes, and the timeline of events."""

    def __init__(self, room: Room, sessions_dir: Path, queue_size: int) -> None:
        self.started_unix = time.time()
        self.session_id = new_session_id(self.started_unix)
        self.session_dir = sessions_dir / self.session_id
        self.room = room
        self.writer = SessionWriter(self.session_dir, queue_size=queue_size)
        self.manifest: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "session_id": self.session_id,
            "room_id": room.room_id,
            "room_name": room.name,
            "profile": room.profile,
            "state": "recording",
            "reason": None,
            "started_at": utc_iso(self.started_unix),
            "ended_at": None,
            "duration_s": None,
            "performers": [],
            "markers": [],
            "prompts": [],
            "files": [],
        }
        self._performers: dict[str, dict[str, Any]] = {}
        self._tracks: dict[tuple[str, str, str], tuple[Publication, TrackRecorder]] = {}
        #: performer_id -> (their current publisher, its segment name)
        self._segments: dict[str, tuple[object, str]] = {}
        self.stopped = False

    @property
    def started_at(self) -> str:
        return str(self.manifest["started_at"])

    def now_s(self) -> float:
        return round(time.time() - self.started_unix, 6)

    def start(self) -> None:
        self.writer.manifest(self.manifest)
        self.event("recording.started", session_id=self.session_id)

    def event(self, event_type: str, /, **fields: Any) -> dict[str, Any]:
        record = {"t_s": self.now_s(), "type": event_type, **fields}
        self.writer.event(record)
        return record

    # performers and tracks

    def _performer(self, member: Member) -> dict[str, Any]:
        entry = self._performers.get(member.performer_id)
        if entry is None:
            entry = {
                "performer_id": member.performer_id,
                "display_name": member.display_name,
                "consent": None,
                "capture": None,
                "joined_at_s": self.now_s(),
                "left_at_s": None,
                "file": None,
                "tracks": [],
                "sync": {"method": None, "rtt_s": None},
            }
            self._performers[member.performer_id] = entry
            self.manifest["performers"].append(entry)
            self.event("join", performer_id=member.performer_id, display_name=member.display_name)
        entry["left_at_s"] = None
        if member.consent is not None:
            entry["consent"] = dict(member.consent.__dict__)
        if member.capture_settings is not None:
            entry["capture"] = member.capture_settings
        return entry

    def performer_changed(self, member: Member) -> None:
        """New consent or capture settings of someone already in the session."""
        if not self.stopped and member.performer_id in self._performers:
            self._performer(member)
            self.writer.manifest(self.manifest)

    def sync_member(self, member: Member) -> None:
        """Record every publication the member has now; close the ones that ended."""
        if self.stopped:
            return
        changed = False
        current = {id(p) for p in member.publications}
        for key, (publication, recorder) in list(self._tracks.items()):
            if key[0] == member.performer_id and id(publication) not in current:
                self._close_track(key)
        for publication in member.publications:
            key = (member.performer_id, self._segment(member), publication.kind)
            if key in self._tracks:
                continue
            self._performer(member)
            recorder = self.writer.track(key, publication.request_keyframe)
            publication.add_sink(recorder)
            self._tracks[key] = (publication, recorder)
            changed = True
        if changed:
            self.writer.manifest(self.manifest)

    def _segment(self, member: Member) -> str:
        """One segment per publish session: a rejoin starts a new one in the same file.

        The current publisher is held (not its ``id()``, which a closed publisher's successor
        can reuse: that reopened the first segment's files and lost what they held, seen as a
        rejoin recorded as one segment, placed seconds early).
        """
        current = self._segments.get(member.performer_id)
        if current is None or current[0] is not member.publisher:
            number = (int(current[1][1:]) if current else 0) + 1
            current = self._segments[member.performer_id] = (member.publisher, f"s{number:03d}")
        return current[1]

    def member_left(self, member: Member, reason: str) -> None:
        if self.stopped or member.performer_id not in self._performers:
            return
        for key in [k for k in self._tracks if k[0] == member.performer_id]:
            self._close_track(key)
        self._performers[member.performer_id]["left_at_s"] = self.now_s()
        self.event("leave", performer_id=member.performer_id, reason=reason)
        self.writer.manifest(self.manifest)

    def _close_track(self, key: tuple[str, str, str]) -> None:
        publication, recorder = self._tracks.pop(key)
        publication.remove_sink(recorder)
        recorder.close()

    # markers and prompts

    def marker(self, kind: str, label: str, data: Any) -> dict[str, Any]:
        marker = {"t_s": self.now_s(), "kind": kind, "label": label, "data": data}
        if kind in KEYFRAME_MARKERS:
            for publication, _ in self._tracks.values():
                if publication.kind == "video":
                    publication.request_keyframe_now()
        self.manifest["markers"].append(marker)
        self.event("marker", **{k: v for k, v in marker.items() if k != "t_s"})
        self.writer.manifest(self.manifest)
        return marker

    def prompt(self, prompt: dict[str, Any]) -> dict[str, Any]:
        record = {"t_s": self.now_s(), **prompt}
        self.manifest["prompts"].append(record)
        self.event("prompt", **prompt)
        self.writer.manifest(self.manifest)
        return record

    # stats

    def stats(self, member: Member, stats: dict[str, Any]) -> None:
        """Log a performer's per-second stats on the timeline (and keep the RTT for sync)."""
        entry = self._performers.get(member.performer_id)
        if entry is None or self.stopped:
            return
        if stats.get("rtt_ms") is not None:
            entry["sync"]["rtt_s"] = round(stats["rtt_ms"] / 1000, 6)
        self.event("stats", performer_id=member.performer_id, **stats)

    # stop

    async def stop(self) -> dict[str, Any]:
        """Close every track, flush the capture, finalise; returns the final manifest."""
        self.stopped = True
        for key in list(self._tracks):
            self._close_track(key)
        self.manifest["ended_at"] = utc_iso(time.time())
        self.event("recording.stopped")
        self.writer.manifest(self.manifest)
        await asyncio.to_thread(self.writer.close)
        reasons = []
        if self.writer.error:
            reasons.append(self.writer.error)
        if self.writer.dropped:
            reasons.append(f"recorder queue full ({self.writer.dropped} items dropped)")
        manifest = await asyncio.to_thread(
            finalise_session, self.session_dir, "; ".join(reasons) or None
        )
        logger.info("session %s finalised: %s", self.session_id, manifest["state"])
        return manifest
