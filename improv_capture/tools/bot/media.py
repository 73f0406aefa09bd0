"""Synthetic capture aligned to the wall clock: a white frame and the start of a 1 kHz beep
at every whole second, so anyone holding the wall clock can measure delay and A/V sync."""

from __future__ import annotations

import asyncio
import math
import time
from fractions import Fraction

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack
from av import AudioFrame, VideoFrame

VIDEO_RATE = 30
VIDEO_CLOCK = 90000
AUDIO_RATE = 48000
AUDIO_PTIME = 0.020
BEEP_HZ = 1000.0
BEEP_S = 0.100
FLASH_LUMA = 235
PATTERN_FRAMES = VIDEO_RATE


def _pattern(width: int, height: int) -> list[np.ndarray]:
    """Dark frames with a moving grey bar (so the encoder has motion to code), yuv420p."""
    frames = []
    chroma = np.full((height // 2, width), 128, dtype=np.uint8)
    for i in range(PATTERN_FRAMES):
        luma = np.full((height, width), 40, dtype=np.uint8)
        x = (i * width // PATTERN_FRAMES) % width
        luma[:, x : x + width // 10] = 110
        luma[height // 3 : height // 3 + 8, :] = 70 + i
        frames.append(np.vstack([luma, chroma]))
    return frames


async def sleep_until(wall_time: float) -> None:
    delay = wall_time - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


class Pause:
    """A stretch of wall-clock time in which the bot's camera and microphone send nothing
    (for fault tests: a performer whose media stops and comes back)."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.end: float | None = None

    async def wait(self) -> None:
        now = time.time()
        if self.start is not None and self.end is not None and self.start <= now < self.end:
            await sleep_until(self.end)


class WallClockTrack(MediaStreamTrack):
    """Emits one item per ``period`` seconds, each at its slot of the wall clock, so that
    slot ``index`` is at ``index * period`` seconds since the epoch."""

    period: float

    def __init__(self) -> None:
        super().__init__()
        self._start: int | None = None
        self._next: int | None = None
        self.frames_sent = 0
        self.pause = Pause()

    async def next_slot(self) -> tuple[int, int]:
        """(slot index since the epoch, slots since this track started)."""
        await self.pause.wait()
        if self._next is None:
            self._next = math.ceil(time.time() / self.period)
            self._start = self._next
        else:
            self._next += 1
            # after a stall, skip ahead rather than bursting late frames
            now_index = math.floor(time.time() / self.period)
            if now_index > self._next + 2:
                self._next = now_index
        await sleep_until(self._next * self.period)
        self.frames_sent += 1
        assert self._start is not None
        return self._next, self._next - self._start


class FlashVideoTrack(WallClockTrack):
    """Raw 640x480 frames, encoded by aiortc like a camera's (what a browser costs)."""

    kind = "video"
    period = 1 / VIDEO_RATE

    def __init__(self, width: int = 640, height: int = 480) -> None:
        super().__init__()
        self._frames = _pattern(width, height)
        self._white = np.vstack(
            [np.full((height, width), FLASH_LUMA, np.uint8), np.full((height // 2, width), 128, np.uint8)]
        )
        self.flashes_sent = 0

    async def recv(self) -> VideoFrame | av.Packet:
        index, elapsed = await self.next_slot()
        flash = index % VIDEO_RATE == 0
        self.flashes_sent += flash
        return self.frame(index, flash, elapsed * (VIDEO_CLOCK // VIDEO_RATE))

    def frame(self, index: int, flash: bool, pts: int) -> VideoFrame | av.Packet:
        data = self._white if flash else self._frames[index % PATTERN_FRAMES]
        frame = VideoFrame.from_ndarray(data, format="yuv420p")
        frame.pts, frame.time_base = pts, Fraction(1, VIDEO_CLOCK)
        return frame


def beep_samples(first_sample: int, count: int) -> np.ndarray:
    """The bot's sound: a 1 kHz tone for the first 100 ms of every wall-clock second."""
    t = (first_sample + np.arange(count)) / AUDIO_RATE
    in_second = np.mod(t, 1.0)
    tone = 0.5 * np.sin(2 * np.pi * BEEP_HZ * in_second) * (in_second < BEEP_S)
    return (tone * 32767).astype(np.int16)


class BeepAudioTrack(WallClockTrack):
    kind = "audio"
    period = AUDIO_PTIME

    def __init__(self) -> None:
        super().__init__()
        self._samples = int(AUDIO_RATE * AUDIO_PTIME)

    async def recv(self) -> AudioFrame | av.Packet:
        index, elapsed = await self.next_slot()
        return self.frame(index, elapsed * self._samples)

    def frame(self, index: int, pts: int) -> AudioFrame | av.Packet:
        samples = beep_samples(index * self._samples, self._samples).reshape(1, -1)
        frame = AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, pts, Fraction(1, AUDIO_RATE)
        return frame


class PreencodedFlashVideoTrack(FlashVideoTrack):
    """The same picture, encoded once (one second, flash = keyframe) and looped: a bot that
    costs next to nothing, for load tests. It cannot answer a keyframe request sooner than
    the next second."""

    def __init__(self, width: int = 640, height: int = 480) -> None:
        super().__init__(width, height)
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
        codec.time_base = Fraction(1, VIDEO_RATE)
        codec.bit_rate, codec.gop_size = 600_000, VIDEO_RATE
        self._loop: list[bytes] = []
        for i in range(VIDEO_RATE):
            raw = VideoFrame.from_ndarray(self._white if i == 0 else self._frames[i], format="yuv420p")
            raw.pts = i
            self._loop += [bytes(p) for p in codec.encode(raw)]
        self._loop += [bytes(p) for p in codec.encode(None)]
        assert len(self._loop) == VIDEO_RATE and self._loop[0][0] & 1 == 0

    def frame(self, index: int, flash: bool, pts: int) -> av.Packet:
        packet = av.Packet(self._loop[index % VIDEO_RATE])
        packet.pts, packet.time_base = pts, Fraction(1, VIDEO_CLOCK)
        return packet


class PreencodedBeepAudioTrack(BeepAudioTrack):
    """One second of the beep encoded once with Opus and looped."""

    def __init__(self) -> None:
        super().__init__()
        codec = av.CodecContext.create("libopus", "w")
        codec.sample_rate, codec.layout, codec.format = AUDIO_RATE, "mono", "s16"
        codec.time_base = Fraction(1, AUDIO_RATE)
        self._loop: list[bytes] = []
        per_second = int(1 / AUDIO_PTIME)
        for i in range(per_second + 2):
            raw = AudioFrame.from_ndarray(
                beep_samples(i * self._samples, self._samples).reshape(1, -1), format="s16", layout="mono")
            raw.sample_rate, raw.pts = AUDIO_RATE, i * self._samples
            self._loop += [bytes(p) for p in codec.encode(raw)]
        self._loop = self._loop[:per_second]

    def frame(self, index: int, pts: int) -> av.Packet:
        packet = av.Packet(self._loop[index % len(self._loop)])
        packet.pts, packet.time_base = pts, Fraction(1, AUDIO_RATE)
        return packet
