"""The decode-and-re-encode design, kept only as scripts/bench_rooms.py's baseline
(``IMPROV_RELAY_MODE=transcode``): what aiortc's example server does. The publish connection
lets aiortc decode, subscribers get decoded frames that each of their senders encodes again,
and each performer is recorded by aiortc's MediaRecorder, which decodes and re-encodes too.
Not for production: no sync, no crash safety. The app factory plugs :data:`TRANSCODE` in
where the product uses rooms/factory.py's PASSTHROUGH."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import av
from aiortc import RTCRtpReceiver
from aiortc.contrib.media import MediaRecorder
from aiortc.mediastreams import MediaStreamTrack

from improv_capture.clock import utc_iso
from improv_capture.media.connections import PublishConnection
from improv_capture.media.relay import KeyframeRequester, Publication, RelayTrack
from improv_capture.recorder.files import write_json_atomic
from improv_capture.rooms.factory import MediaFactory
from improv_capture.rooms.model import Member
from improv_capture.rooms.recording import Recording

logger = logging.getLogger(__name__)


class FrameTrack(RelayTrack):
    """Decoded frames to one subscriber: any frame can start, so every kind drops its
    oldest when the queue is full, and there is no keyframe to wait for."""

    def __init__(self, kind: str, capacity: int, request_keyframe: Any) -> None:
        super().__init__(kind, capacity, request_keyframe)
        self.waiting_for_keyframe = False

    def _push_video(self, packet: av.Packet) -> None:
        self._push_dropping_oldest(packet)

    def resync(self) -> None:
        return


class FramePublication(Publication):
    """A decoded track relayed as frames, for each subscriber's sender to encode again."""

    def _new_track(self) -> RelayTrack:
        return FrameTrack(self.kind, self._capacity, self.request_keyframe)

    def _relay(self, packet: av.Packet, arrival: float) -> None:
        for sub in self._subscribers:
            sub.push(packet)


class TranscodePublishConnection(PublishConnection):
    """Receives a performer's media the usual aiortc way: decoded."""

    def _receive(self, receiver: RTCRtpReceiver) -> None:
        return  # aiortc's own decoder stays

    def _new_publication(
        self, track: MediaStreamTrack, requester: KeyframeRequester | None
    ) -> Publication:
        return FramePublication(self.performer_id, track, requester, self._capacity[track.kind])


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

    def member_left(self, member: Member, reason: str) -> None:
        return

    async def stop(self) -> dict[str, Any]:
        self.stopped = True
        for recorder in self._recorders.values():
            await recorder.stop()
        self.manifest.update(state="complete", ended_at=utc_iso(self.started_unix + self.now_s()))
        await asyncio.to_thread(self.writer.close)
        await asyncio.to_thread(write_json_atomic, self.session_dir / "manifest.json", self.manifest)
        return self.manifest


#: the baseline: aiortc decodes what performers send and encodes it again for each receiver
TRANSCODE = MediaFactory(TranscodePublishConnection, BaselineRecording)
