"""Synthetic capture aligned to the wall clock: a white frame and the start of a 1 kHz beep
at every whole second, so anyone holding the wall clock can measure delay and A/V sync."""

from __future__ import annotations

import asyncio
import math
import time
from fractions import Fraction

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


class FlashVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, width: int = 640, height: int = 480) -> None:
        super().__init__()
        self._frames = _pattern(width, height)
        white = np.vstack(
            [np.full((height, width), FLASH_LUMA, np.uint8), np.full((height // 2, width), 128, np.uint8)]
        )
        self._white = white
        self._start: int | None = None
        self._next: int | None = None
        self.frames_sent = 0
        self.flashes_sent = 0
        self.pause = Pause()

    async def recv(self) -> VideoFrame:
        await self.pause.wait()
        if self._next is None:
            self._next = math.ceil(time.time() * VIDEO_RATE)
            self._start = self._next
        else:
            self._next += 1
            # after a stall, skip ahead rather than bursting late frames
            now_index = math.floor(time.time() * VIDEO_RATE)
            if now_index > self._next + 2:
                self._next = now_index
        index = self._next
        await sleep_until(index / VIDEO_RATE)
        flash = index % VIDEO_RATE == 0
        data = self._white if flash else self._frames[index % PATTERN_FRAMES]
        frame = VideoFrame.from_ndarray(data, format="yuv420p")
        assert self._start is not None
        frame.pts = (index - self._start) * (VIDEO_CLOCK // VIDEO_RATE)
        frame.time_base = Fraction(1, VIDEO_CLOCK)
        self.frames_sent += 1
        self.flashes_sent += flash
        return frame


class BeepAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._samples = int(AUDIO_RATE * AUDIO_PTIME)
        self._next: int | None = None  # index of the next 20 ms frame since the epoch
        self._start: int | None = None
        self.frames_sent = 0
        self.pause = Pause()

    async def recv(self) -> AudioFrame:
        await self.pause.wait()
        if self._next is None:
            self._next = math.ceil(time.time() / AUDIO_PTIME)
            self._start = self._next
        else:
            self._next += 1
            now_index = math.floor(time.time() / AUDIO_PTIME)
            if now_index > self._next + 5:
                self._next = now_index
        index = self._next
        await sleep_until(index * AUDIO_PTIME)
        first = index * self._samples  # sample index since the epoch
        t = (first + np.arange(self._samples)) / AUDIO_RATE
        in_second = np.mod(t, 1.0)
        tone = 0.5 * np.sin(2 * np.pi * BEEP_HZ * in_second) * (in_second < BEEP_S)
        samples = (tone * 32767).astype(np.int16).reshape(1, -1)
        frame = AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        assert self._start is not None
        frame.pts = (index - self._start) * self._samples
        frame.time_base = Fraction(1, AUDIO_RATE)
        self.frames_sent += 1
        return frame
