"""Known media for tests: a pre-encoded VP8 clip and a track that sends it untouched."""

from __future__ import annotations

import asyncio
import functools
import time
from fractions import Fraction

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

FRAMES = 60


def encode_vp8_clip(count: int = FRAMES) -> list[bytes]:
    """``count`` frames of noise, VP8 with a keyframe every 15 (encoded once per process:
    libvpx takes seconds over them)."""
    return list(_encoded_clip(count))


@functools.cache
def _encoded_clip(count: int) -> tuple[bytes, ...]:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = 320, 240, "yuv420p"
    codec.time_base = Fraction(1, 30)
    codec.gop_size = 15
    codec.bit_rate = 400_000
    rng = np.random.default_rng(7)
    packets: list[bytes] = []
    for i in range(count):
        image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets += [bytes(p) for p in codec.encode(frame)]
    packets += [bytes(p) for p in codec.encode(None)]
    assert len(set(packets)) == len(packets)
    return tuple(packets)


class EncodedVideoTrack(MediaStreamTrack):
    """Sends a pre-encoded clip in a loop; aiortc packetizes it without encoding."""

    kind = "video"

    def __init__(self, frames: list[bytes]) -> None:
        super().__init__()
        self.frames = frames
        self.sent = 0
        self._start: float | None = None

    async def recv(self) -> av.Packet:
        if self._start is None:
            self._start = time.time()
        await asyncio.sleep(max(0.0, self._start + self.sent / 30 - time.time()))
        packet = av.Packet(self.frames[self.sent % len(self.frames)])
        packet.pts = self.sent * 3000
        packet.time_base = Fraction(1, 90000)
        self.sent += 1
        return packet


