"""Synthetic capture aligned to the wall clock: a white frame and the start of a 1 kHz beep
at every whole second, so anyone holding the wall clock can measure delay and A/V sync.

In a studio room each second also carries its number modulo SECOND_CODES (where a grey block
sits in the picture, the beep's pitch), so no two seconds within SECOND_CODES s look or sound
alike: the server places a studio copy against the live copy by their content, and a pattern
that repeats every second would let it slip by whole seconds. Flash and beep onset stay on
every whole second.

With ``--voice`` the microphone sends voice.py's speech-like sound instead of the beeps, and
with ``--leak-gain`` it also picks up what the bot receives (MicAudioTrack, Loudspeaker)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from fractions import Fraction

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack
from av import AudioFrame, VideoFrame

from improv_capture.tools.bot.voice import AUDIO_RATE, speech_intervals, voice_samples

VIDEO_RATE = 30
VIDEO_CLOCK = 90000
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
        #: the wall-clock time of the slot returned last (its capture time)
        self.captured_at: float | None = None
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
        self.captured_at = self._next * self.period
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

    def samples(self, index: int) -> np.ndarray:
        """The int16 samples of slot ``index`` since the epoch."""
        return beep_samples(index * self._samples, self._samples, self.coded)

    def frame(self, index: int, pts: int) -> AudioFrame | av.Packet:
        samples = self.samples(index).reshape(1, -1)
        frame = AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, pts, Fraction(1, AUDIO_RATE)
        return frame


#: --leak-gain: the room's audio plays this many frames after the earliest it could have
#: arrived (a playout buffer, as a browser's: four frames of it absorb network jitter and a
#: busy machine's late wake-ups; with one, a starved bot heard too little of the room for its
#: cross-talk to be found) and is captured by the microphone, never sooner than a frame after
#: it arrived
LEAK_DELAY_FRAMES = 5
#: received audio kept per source behind the newest frame; older is dropped (a source whose
#: audio is never captured, before the bot's microphone starts, holds no more than this)
LEAK_MAX_QUEUED_S = 0.5


class _Playout:
    """One source's received audio on its own sample timeline (the frames' pts, which aiortc
    counts from 0 without wrapping), played at a fixed delay: sample ``p`` plays at
    ``origin + p / AUDIO_RATE + LEAK_DELAY_FRAMES * AUDIO_PTIME``, where ``origin`` is the
    earliest arrival seen less its pts time (the path without jitter). A chunk that arrived
    less than a frame before it would be captured is not heard (silence, as a playout buffer
    gives for a late packet)."""

    def __init__(self) -> None:
        self.origin = math.inf
        #: (pts, arrival, mono float samples) in arrival order
        self.chunks: deque[tuple[int, float, np.ndarray]] = deque()
        #: samples not heard: due before they had been in the room a frame
        self.late_samples = 0

    def add(self, pts: int, arrival: float, samples: np.ndarray) -> None:
        self.origin = min(self.origin, arrival - pts / AUDIO_RATE)
        self.chunks.append((pts, arrival, samples))
        while self.chunks[0][0] + len(self.chunks[0][2]) < pts - LEAK_MAX_QUEUED_S * AUDIO_RATE:
            self.chunks.popleft()

    def take(self, at: float, count: int) -> np.ndarray | None:
        """The ``count`` samples playing from wall-clock ``at``; None when none are due."""
        start = round((at - LEAK_DELAY_FRAMES * AUDIO_PTIME - self.origin) * AUDIO_RATE)
        while self.chunks and self.chunks[0][0] + len(self.chunks[0][2]) <= start:
            self.chunks.popleft()  # played (or too late to be)
        out, heard = np.zeros(count), False
        for pts, arrival, samples in self.chunks:
            lo, hi = max(pts, start), min(pts + len(samples), start + count)
            if lo < hi and arrival <= at - AUDIO_PTIME:
                out[lo - start : hi - start] = samples[lo - pts : hi - pts]
                heard = True
            elif lo < hi:
                self.late_samples += hi - lo
        return out if heard else None


class Loudspeaker:
    """The room the bot sits in: the audio it receives from the other performers plays, and
    its microphone picks it up at ``gain`` (cross-talk, for tests that must find it)."""

    def __init__(self, gain: float) -> None:
        self.gain = gain
        self._sources: dict[str, _Playout] = {}
        #: frames sent with some of the room's audio in them
        self.frames_mixed = 0

    def play(self, source: str, frame: AudioFrame, arrival: float) -> None:
        """A decoded frame received from ``source``. aiortc decodes Opus to 48 kHz s16; a
        frame at another rate, or without a pts, is not played."""
        if frame.sample_rate != AUDIO_RATE or frame.pts is None:
            return
        pcm = frame.to_ndarray().astype(np.float64)
        channels = len(frame.layout.channels)
        mono = pcm.mean(axis=0) if frame.format.is_planar else pcm.reshape(-1, channels).mean(axis=1)
        self._sources.setdefault(source, _Playout()).add(int(frame.pts), arrival, mono)

    def capture(self, at: float, count: int) -> np.ndarray | None:
        """What the microphone hears of the room in the frame captured at ``at`` (wall
        clock): every source's samples playing then, summed, times ``gain``; None when
        nothing plays."""
        mixed: np.ndarray | None = None
        for playout in self._sources.values():
            heard = playout.take(at, count)
            if heard is not None:
                mixed = heard if mixed is None else mixed + heard
        if mixed is None:
            return None
        self.frames_mixed += 1
        return self.gain * mixed

    @property
    def late_s(self) -> float:
        """Received audio not heard because it came too late to play (jitter past the
        playout margin), in seconds over every source."""
        return sum(p.late_samples for p in self._sources.values()) / AUDIO_RATE


#: The most runs of frames sent a speaking MicAudioTrack keeps for its report (about 100
#: bytes each). Only a break in sending while its voice speaks starts one; past this many the
#: oldest go, their speech leaves the report, which says how many went.
MAX_SPEECH_RUNS = 10_000


class MicAudioTrack(BeepAudioTrack):
    """The bot's microphone when it speaks (``voice``: a seed of voice.py; None: the beeps)
    and/or hears the room (``speaker``: the others' audio mixed in). Keeps the wall-clock
    stretches it sent, so the report can say where its speech is."""

    def __init__(self, voice: int | None, speaker: Loudspeaker | None) -> None:
        super().__init__()
        self.voice = voice
        self.speaker = speaker
        #: (first slot, last slot) of each finished run of frames sent; the current one is _run
        self._runs: deque[tuple[int, int]] = deque(maxlen=MAX_SPEECH_RUNS)
        self._run: tuple[int, int] | None = None
        #: runs dropped from the front of ``_runs``: their speech is not in sent_speech()
        self.runs_dropped = 0
        if voice is not None:
            voice_samples(voice, 0, 1)  # the cycle is computed now, not at the first frame

    def frame(self, index: int, pts: int) -> AudioFrame | av.Packet:
        if self.voice is not None:
            self._sent(self.voice, index)
        return super().frame(index, pts)

    def _sent(self, voice: int, index: int) -> None:
        """Slot ``index`` was sent (slots only increase): it extends the current run, or
        after a break starts another. A break in which the voice is silent joins the runs
        around it instead: the speech clipped to one run spanning both is the same."""
        if self._run is None:
            self._run = (index, index)
            return
        first, last = self._run
        if index == last + 1 or not speech_intervals(voice, (last + 1) * AUDIO_PTIME, index * AUDIO_PTIME):
            self._run = (first, index)
            return
        if len(self._runs) == self._runs.maxlen:
            self.runs_dropped += 1
        self._runs.append(self._run)
        self._run = (index, index)

    def samples(self, index: int) -> np.ndarray:
        """The sound of slot ``index``; what the loudspeaker plays then is used up (one call
        a frame)."""
        if self.voice is None:
            own = super().samples(index)
        else:
            own = voice_samples(self.voice, index * self._samples, self._samples)
        heard = None if self.speaker is None else self.speaker.capture(index * AUDIO_PTIME, len(own))
        if heard is None:
            return own
        return np.clip(np.round(own + heard), -32768, 32767).astype(np.int16)

    def sent_speech(self) -> list[list[float]] | None:
        """The wall-clock intervals of speech sent (voice.py's pattern, clipped to the runs
        of frames sent); None without a voice."""
        if self.voice is None:
            return None
        runs = [*self._runs, *([self._run] if self._run is not None else [])]
        return [[round(a, 6), round(b, 6)] for first, last in runs
                for a, b in speech_intervals(self.voice, first * AUDIO_PTIME, (last + 1) * AUDIO_PTIME)]


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
