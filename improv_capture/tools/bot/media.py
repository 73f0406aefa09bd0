"""Synthetic capture aligned to the wall clock: a white frame and the start of a 1 kHz beep
at every whole second, so anyone holding the wall clock can measure delay and A/V sync.

In a studio room each second also carries its number modulo SECOND_CODES (where a grey block
sits in the picture, the beep's pitch), so no two seconds within SECOND_CODES s look or sound
alike: the server places a studio copy against the live copy by their content, and a pattern
that repeats every second would let it slip by whole seconds. Flash and beep onset stay on
every whole second."""

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
SECOND_CODES = 8
CODE_LUMA = 150


def _pattern(width: int, height: int) -> list[np.ndarray]:
    """Dark frames with a moving grey bar (so the encoder has motion to code), yuv420p.
    Every feature scales with the size (a 640x480 picture has its 8-row stripe), so the
    same slot at two sizes of one aspect ratio is one picture scaled: what a studio page's
    camera gives its live call and its local recording."""
    frames = []
    chroma = np.full((height // 2, width), 128, dtype=np.uint8)
    stripe = max(1, height // 60)
    for i in range(PATTERN_FRAMES):
        luma = np.full((height, width), 40, dtype=np.uint8)
        x = (i * width // PATTERN_FRAMES) % width
        luma[:, x : x + width // 10] = 110
        luma[height // 3 : height // 3 + stripe, :] = 70 + i
        frames.append(np.vstack([luma, chroma]))
    return frames


class FlashPicture:
    """The bot's camera at one size: the picture of each 1/30 s slot of the wall clock (white
    on whole seconds; ``coded``: with the second's code). A studio bot's live track and its
    local recording show the same slots."""

    def __init__(self, width: int, height: int, coded: bool = False) -> None:
        self.width, self.height, self.coded = width, height, coded
        self._frames = _pattern(width, height)
        self._white = np.vstack(
            [np.full((height, width), FLASH_LUMA, np.uint8), np.full((height // 2, width), 128, np.uint8)]
        )

    def data(self, index: int) -> np.ndarray:
        """The yuv420p plane stack of slot ``index`` since the epoch."""
        if index % VIDEO_RATE == 0:
            return self._white
        frame = self._frames[index % PATTERN_FRAMES]
        if not self.coded:
            return frame
        code = (index // VIDEO_RATE) % SECOND_CODES
        block_w, top = self.width // SECOND_CODES, 2 * self.height // 3
        marked = frame.copy()
        marked[top : top + self.height // 6, code * block_w : (code + 1) * block_w] = CODE_LUMA
        return marked


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
        self.picture = FlashPicture(width, height)
        self.flashes_sent = 0

    def configure(self, width: int, height: int, coded: bool) -> None:
        """Send at another size, with or without the second codes (a studio room's live
        call), from the first frame on."""
        self.picture = FlashPicture(width, height, coded)

    async def recv(self) -> VideoFrame | av.Packet:
        index, elapsed = await self.next_slot()
        flash = index % VIDEO_RATE == 0
        self.flashes_sent += flash
        return self.frame(index, flash, elapsed * (VIDEO_CLOCK // VIDEO_RATE))

    def frame(self, index: int, flash: bool, pts: int) -> VideoFrame | av.Packet:
        frame = VideoFrame.from_ndarray(self.picture.data(index), format="yuv420p")
        frame.pts, frame.time_base = pts, Fraction(1, VIDEO_CLOCK)
        return frame


def beep_samples(first_sample: int, count: int, coded: bool = False) -> np.ndarray:
    """The bot's sound: a 1 kHz tone for the first 100 ms of every wall-clock second
    (``coded``: its pitch 1000 Hz + 125 Hz x the second's code)."""
    t = (first_sample + np.arange(count)) / AUDIO_RATE
    in_second = np.mod(t, 1.0)
    hz = BEEP_HZ * (1 + np.mod(np.floor(t), SECOND_CODES) / SECOND_CODES) if coded else BEEP_HZ
    tone = 0.5 * np.sin(2 * np.pi * hz * in_second) * (in_second < BEEP_S)
    return (tone * 32767).astype(np.int16)


class BeepAudioTrack(WallClockTrack):
    kind = "audio"
    period = AUDIO_PTIME

    def __init__(self) -> None:
        super().__init__()
        self._samples = int(AUDIO_RATE * AUDIO_PTIME)
        self.coded = False

    def configure(self, coded: bool) -> None:
        """With or without the second codes (a studio room), from the first frame on."""
        self.coded = coded

    async def recv(self) -> AudioFrame | av.Packet:
        index, elapsed = await self.next_slot()
        return self.frame(index, elapsed * self._samples)

    def frame(self, index: int, pts: int) -> AudioFrame | av.Packet:
        samples = beep_samples(index * self._samples, self._samples, self.coded).reshape(1, -1)
        frame = AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, pts, Fraction(1, AUDIO_RATE)
        return frame


class PreencodedFlashVideoTrack(FlashVideoTrack):
    """The same picture, encoded once (one second, flash = keyframe; with second codes, one
    cycle of them) and looped: a bot that costs next to nothing, for load tests. It cannot
    answer a keyframe request sooner than the next second."""

    def __init__(self, width: int = 640, height: int = 480) -> None:
        super().__init__(width, height)
        self._loop = self._encode_loop()

    def configure(self, width: int, height: int, coded: bool) -> None:
        super().configure(width, height, coded)
        self._loop = self._encode_loop()

    def _encode_loop(self) -> list[bytes]:
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height, codec.pix_fmt = self.picture.width, self.picture.height, "yuv420p"
        codec.time_base = Fraction(1, VIDEO_RATE)
        codec.bit_rate, codec.gop_size = 600_000, VIDEO_RATE
        frames = VIDEO_RATE * (SECOND_CODES if self.picture.coded else 1)
        loop: list[bytes] = []
        for i in range(frames):
            raw = VideoFrame.from_ndarray(self.picture.data(i), format="yuv420p")
            raw.pts = i
            loop += [bytes(p) for p in codec.encode(raw)]
        loop += [bytes(p) for p in codec.encode(None)]
        assert len(loop) == frames and loop[0][0] & 1 == 0
        return loop

    def frame(self, index: int, flash: bool, pts: int) -> av.Packet:
        packet = av.Packet(self._loop[index % len(self._loop)])
        packet.pts, packet.time_base = pts, Fraction(1, VIDEO_CLOCK)
        return packet


class PreencodedBeepAudioTrack(BeepAudioTrack):
    """One second of the beep (with second codes, one cycle) encoded once with Opus and looped."""

    def __init__(self) -> None:
        super().__init__()
        self._loop = self._encode_loop()

    def configure(self, coded: bool) -> None:
        super().configure(coded)
        self._loop = self._encode_loop()

    def _encode_loop(self) -> list[bytes]:
        codec = av.CodecContext.create("libopus", "w")
        codec.sample_rate, codec.layout, codec.format = AUDIO_RATE, "mono", "s16"
        codec.time_base = Fraction(1, AUDIO_RATE)
        loop: list[bytes] = []
        packets = int(1 / AUDIO_PTIME) * (SECOND_CODES if self.coded else 1)
        for i in range(packets + 2):
            raw = AudioFrame.from_ndarray(
                beep_samples(i * self._samples, self._samples, self.coded).reshape(1, -1),
                format="s16", layout="mono")
            raw.sample_rate, raw.pts = AUDIO_RATE, i * self._samples
            loop += [bytes(p) for p in codec.encode(raw)]
        return loop[:packets]

    def frame(self, index: int, pts: int) -> av.Packet:
        packet = av.Packet(self._loop[index % len(self._loop)])
        packet.pts, packet.time_base = pts, Fraction(1, AUDIO_RATE)
        return packet
