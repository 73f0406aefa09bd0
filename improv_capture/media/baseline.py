"""The decode-and-re-encode design, kept only as the benchmark's baseline (relay_mode =
transcode): what aiortc's example server does. Subscribers get decoded frames that each of
their senders encodes again, and each performer is recorded by aiortc's MediaRecorder, which
decodes and re-encodes too. Not for production: no sync, no crash safety."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiortc.contrib.media import MediaRecorder

from improv_capture.clock import utc_iso
from improv_capture.recorder.files import write_json_atomic
from improv_capture.rooms.recording import Recording

if TYPE_CHECKING:
    from improv_capture.rooms.hub import Member

logger = logging.getLogger(__name__)


class BaselineRecording(Recording):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recorders: dict[tuple[str, int], MediaRecorder] = {}

    def sync_member(self, member: Member) -> None:
        if self.stopped or len(member.publications) < 2:
            return  # MediaRecorder takes all its tracks before it starts
        key = (member.performer_id, id(member.publisher))
        if key in self._recorders:
            return
        self._performer(member)
        path = self.session_dir / "performers" / f"{member.performer_id}.{len(self._recorders)}.webm"
        path.parent.mkdir(parents=True, exist_ok=True)
        recorder = MediaRecorder(str(path), format="webm")
        for publication in member.publications:
            recorder.addTrack(publication.subscribe())
        self._recorders[key] = recorder
        asyncio.ensure_future(recorder.start())

    def member_gone(self, member: Member, why: str) -> None:
        return

    async def stop(self) -> dict[str, Any]:
        self.stopped = True
        for recorder in self._recorders.values():
            await recorder.stop()
        self.manifest.update(state="complete", ended_at=utc_iso(self.started_unix + self.now_s()))
        await asyncio.to_thread(self.writer.close)
        await asyncio.to_thread(write_json_atomic, self.session_dir / "manifest.json", self.manifest)
        return self.manifest
