"""A take's sound, cut sample-exact: decoded from the archive (Opus, never re-encoded for the
WAV) to 48 kHz mono s16 and placed by its decoded timestamps on the session clock.

Sample i of a take's WAV is the decoded sample at session time ``first / 48000 + i / 48000``,
``first = round(start_s * 48000)``. Each copy of a performer is decoded once, front to back,
in one pass over all takes (Opus keeps state from packet to packet: a decoder started in the
middle of a file gives other samples for a while), and only one take's sound is held at a
time. Where no copy has sound (a gap, before a join, after a leave) the WAV holds zeros and
the stretch is listed."""

from __future__ import annotations

import io
import itertools
import wave
from dataclasses import dataclass
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from improv_capture.recorder.export import ExportError
from improv_capture.recorder.export.source import archive_name
from improv_capture.recorder.hq.align import AUDIO_GAP_S, RATE

#: Frames whose stamps lie within this many samples of where the previous frame ended follow
#: it end to end: stamps are rounded to the container's 1 ms, frames are whole.
CHAIN_TOLERANCE = int(round(AUDIO_GAP_S * RATE))
S16_SCALE = 32768.0

Stretch = tuple[int, int]  # [start, end) in samples, relative to a take's first sample


def to_s16(mono: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] to s16 as FFmpeg converts them: x * 32768, rounded to the
    nearest (ties to even), clipped."""
    return np.clip(np.rint(mono * np.float32(S16_SCALE)), -32768, 32767).astype(np.int16)


#: Decoded sample formats read straight from the frame's planes (PyAV's to_ndarray stacks
#: planar channels first: twice the work for nothing), and their scale to [-1, 1].
SAMPLE_TYPES = {"flt": (np.float32, None), "fltp": (np.float32, None),
                "s16": (np.int16, S16_SCALE), "s16p": (np.int16, S16_SCALE)}


@dataclass(frozen=True)
class SampleLayout:
    """How a decoder's frames hold their samples (fixed for a stream: read from its first
    frame, not from every frame)."""

    dtype: Any
    scale: float | None
    channels: int
    planar: bool

    @classmethod
    def of(cls, frame: Any) -> SampleLayout:
        name = frame.format.name
        if name not in SAMPLE_TYPES:
            raise ExportError(f"unexpected decoded audio format {name}")
        dtype, scale = SAMPLE_TYPES[name]
        return cls(dtype, scale, len(frame.layout.channels), bool(frame.format.is_planar))

    def mono(self, frame: Any) -> np.ndarray:
        """The frame as mono s16: the mean of its channels (for two, (L + R) / 2), then
        :func:`to_s16` (a take is held as s16 only: 2 bytes a sample)."""
        channels, count = self.channels, frame.samples
        if self.planar:
            planes = [np.frombuffer(plane, self.dtype, count) for plane in frame.planes[:channels]]
        else:
            interleaved = np.frombuffer(frame.planes[0], self.dtype, count * channels).reshape(count, channels)
            planes = [interleaved[:, c] for c in range(channels)]
        if self.scale is not None:
            planes = [p.astype(np.float32) / np.float32(self.scale) for p in planes]
        mono = planes[0].astype(np.float32, copy=True)
        for plane in planes[1:]:
            mono += plane
        if channels > 1:
            mono /= np.float32(channels)
        return to_s16(mono)


def stamp_samples(pts: int, numerator: int, denominator: int) -> int:
    """``pts`` in units of ``numerator / denominator`` s as a sample index at RATE, rounded
    half to even (as ``round(pts * time_base * RATE)``, without a Fraction per frame)."""
    quotient, remainder = divmod(pts * numerator * RATE, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2):
        quotient += 1
    return quotient


def merge(stretches: list[Stretch]) -> list[Stretch]:
    merged: list[Stretch] = []
    for start, end in sorted(stretches):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        elif end > start:
            merged.append((start, end))
    return merged


def complement(stretches: list[Stretch], count: int) -> list[Stretch]:
    """The parts of [0, count) no stretch covers."""
    holes, at = [], 0
    for start, end in merge(stretches):
        if start > at:
            holes.append((at, start))
        at = max(at, end)
    if at < count:
        holes.append((at, count))
    return holes


class AudioTrack:
    """The decoded sound of one performer file on the session clock, read front to back: each
    ``cut`` takes a later stretch of it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.decode_errors = 0
        self._container: Any = None
        self._frames: Iterator[tuple[int, np.ndarray]] | None = None
        self._pending: tuple[int, np.ndarray] | None = None
        try:
            container = av.open(str(path))
        except (av.FFmpegError, OSError) as exc:
            raise ExportError(f"{archive_name(path)}: cannot be read ({exc})") from None
        if container.streams.audio:
            self._container = container
            self._frames = self._placed(container)
        else:
            container.close()

    def _decoded(self, container: Any) -> Iterator[tuple[int, np.ndarray]]:
        """(sample index of its stamp on the session clock, mono s16 samples) of every frame."""
        stream = container.streams.audio[0]
        time_base = Fraction(stream.time_base)
        numerator, denominator = time_base.numerator, time_base.denominator
        layout: SampleLayout | None = None
        for packet in container.demux(stream):  # the last, empty packet flushes the decoder
            try:
                frames = packet.decode()
            except av.FFmpegError:
                self.decode_errors += 1
                continue
            for frame in frames:
                if frame.pts is None:
                    continue
                if frame.sample_rate != RATE:
                    raise ExportError(f"{archive_name(self.path)}: audio at {frame.sample_rate} Hz, not {RATE}")
                layout = layout or SampleLayout.of(frame)
                yield stamp_samples(frame.pts, numerator, denominator), layout.mono(frame)

    def _placed(self, container: Any) -> Iterator[tuple[int, np.ndarray]]:
        """Frames laid end to end while their stamps agree within CHAIN_TOLERANCE, each run
        starting at its first frame's stamp. The file's first frame is the exception: the
        decoder cut the Opus pre-skip from it and moved its stamp by the pre-skip rounded to
        the 1 ms time base, so it is placed to end where the second frame begins."""
        frames = self._decoded(container)
        first = next(frames, None)
        if first is None:
            return
        second = next(frames, None)
        if second is not None and abs(second[0] - (first[0] + first[1].size)) <= CHAIN_TOLERANCE:
            first = (second[0] - first[1].size, first[1])
        at = first[0] + first[1].size
        yield first
        rest = itertools.chain([second] if second is not None else [], frames)
        for stamp, samples in rest:
            position = at if abs(stamp - at) <= CHAIN_TOLERANCE else stamp
            at = position + samples.size
            yield position, samples

    def cut(self, first: int, count: int, out: np.ndarray, stretches: list[Stretch]) -> list[Stretch]:
        """Write this copy's sound of session samples [first, first + count) into ``out``
        (int16, ``count`` long) within ``stretches`` only; return where it had sound. Frames
        before ``first`` are passed over: cuts must come in time order."""
        end = first + count
        covered: list[Stretch] = []
        if self._frames is None:
            return covered
        while True:
            item = self._pending if self._pending is not None else next(self._frames, None)
            self._pending = None
            if item is None:
                break
            position, samples = item
            stop = position + samples.size
            if stop > first and position < end:
                for a, b in stretches:
                    low, high = max(position, first + a), min(stop, first + b)
                    if high > low:
                        out[low - first : high - first] = samples[low - position : high - position]
                        if covered and covered[-1][1] == low - first:  # the usual case: end to end
                            covered[-1] = (covered[-1][0], high - first)
                        else:
                            covered.append((low - first, high - first))
            if stop > end:
                self._pending = item  # it (or the rest of it) belongs to a later take
                break
        return merge(covered)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def wav_bytes(samples: np.ndarray) -> bytes:
    """A mono 48 kHz s16 WAV, written by the stdlib (no header field depends on anything but
    the samples)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(samples.astype("<i2", copy=False).tobytes())
    return buffer.getvalue()
