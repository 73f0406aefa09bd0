"""Proof that the relay never transcodes: a subscriber receives, frame for frame, the very
VP8 bytes the publisher sent (an encoder or decoder in between would change them)."""

from __future__ import annotations

import asyncio

import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from improv_capture.media import aiortc_hooks
from improv_capture.tools.bot.client import Bot
from tests.helpers import ServerProcess, wait_for_async
from tests.media import EncodedVideoTrack, encode_vp8_clip

pytestmark = pytest.mark.process


class RecordingBot(Bot):
    """Keeps every received video frame still encoded, with the same hook the server uses."""

    received_video: list[bytes]

    def _on_track(self, track: MediaStreamTrack) -> None:
        assert self.sub is not None
        transceiver = next(t for t in self.sub.getTransceivers() if t.receiver.track is track)
        if track.kind == "video":
            aiortc_hooks.enable_passthrough(transceiver.receiver)
            self.received_video = []
            self._tasks.append(asyncio.ensure_future(self._keep(track)))

    async def _keep(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                packet = await track.recv()
                self.received_video.append(bytes(packet))
        except MediaStreamError:
            pass


async def test_subscriber_gets_the_publishers_bytes_frame_for_frame(
    server: ServerProcess,
) -> None:
    aiortc_hooks.install()
    aiortc_hooks.restrict_ice_addresses(["127.0.0.1"])
    clip = encode_vp8_clip()
    room = server.create_room()
    publisher_track = EncodedVideoTrack(clip)
    publisher = Bot(server.invite(room, "publisher")["url"], video=publisher_track)
    subscriber = RecordingBot(server.invite(room, "subscriber")["url"])
    runs = asyncio.gather(publisher.run(30), subscriber.run(30))
    await wait_for_async(lambda: len(getattr(subscriber, "received_video", [])) >= 120 or runs.done(),
                         20, "120 frames at the subscriber")
    subscriber.leave()
    publisher.leave()
    await runs

    received = subscriber.received_video
    assert len(received) >= 100, len(received)
    index = {frame: i for i, frame in enumerate(clip)}
    positions = [index.get(frame) for frame in received]
    assert None not in positions, "a received frame differs from every frame sent"
    assert clip[positions[0]][0] & 1 == 0, "the subscriber must start on a keyframe"
    steps = [(b - a) % len(clip) for a, b in zip(positions, positions[1:])]
    assert steps.count(1) == len(steps), "frames arrived out of order or with holes"
