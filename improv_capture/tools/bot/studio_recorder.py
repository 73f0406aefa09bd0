"""The bot's MediaRecorder: its own flash/beep encoded at full quality into a live WebM stream
(VP8 + Opus, unseekable, timestamps from 0 at the first frame), cut into timed chunks, as a
studio page records its raw camera and microphone (docs/signaling.md, `recording`).

Encoding 1280x720 VP8 costs milliseconds a frame, so it runs on a thread of its own (PyAV
releases the GIL while it encodes): the live call on the event loop keeps its rate."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av import AudioFrame, VideoFrame

from improv_capture.tools.bot.media import (
    AUDIO_PTIME,
    AUDIO_RATE,
    FlashPicture,
    beep_samples,
)

logger = logging.getLogger(__name__)

#: A frame this late (in frame periods) is skipped, as a camera drops what nobody took in
#: time: the recording stays on the wall clock even when the machine is slow.
LATE_FRAMES = 2
#: The recorder starts this far ahead, so opening the encoders (tens of ms at 1280x720) does
#: not make its first frames late.
START_AHEAD_S = 0.25


@dataclass(frozen=True)
class HqFormat:
    """What the local recording is made at: hq size from the profile's capture (or the bot's
    ``--hq-size``), bitrates and chunk length from the `recording` message's ``hq``."""

    width: int
    height: int
    frame_rate: int
    video_bitrate: int
    audio_bitrate: int
    chunk_s: float
    max_chunk_bytes: int
    #: sensor-like noise (luma +- grain) on every recorded frame, so the encoder spends the
    #: bits a real camera makes it spend (the bare pattern compresses to almost nothing);
    #: 0: none. For load benchmarks (bot --hq-grain).
    grain: int = 0

    def part_info(self, started_at_ms: float, reason: str = "start") -> dict[str, Any]:
        """The part's description for ``PUT .../parts/{part}`` (docs/api.md, "Uploads")."""
        return {
            "mime_type": "video/webm;codecs=vp8,opus",
            "started_at_ms": started_at_ms,
            "reason": reason,
            "video": {"width": self.width, "height": self.height, "frame_rate": self.frame_rate,
                      "device_id": "improv-capture-bot"},
            "audio": {"sample_rate": AUDIO_RATE, "channel_count": 1,
                      "device_id": "improv-capture-bot", "echo_cancellation": False,
                      "noise_suppression": False, "auto_gain_control": False},
        }


class _Sink:
    """Where the muxer writes: the bytes since the last chunk. Write-only, so the muxer sees
    an unseekable stream and never goes back to patch sizes (as MediaRecorder)."""

    def __init__(self) -> None:
        self.pending = bytearray()

    def write(self, data: bytes) -> int:
        self.pending += data
        return len(data)

    def take(self) -> bytes:
        chunk, self.pending = bytes(self.pending), bytearray()
        return chunk


def open_webm(sink: Any, fmt: HqFormat) -> tuple[Any, Any, Any]:
    """A live WebM muxer on ``sink`` with a realtime VP8 and an Opus stream."""
    # clusters of a quarter chunk: a chunk holds what was recorded in its time (the muxer
    # writes a cluster out only once it is closed)
    cluster_ms = max(100, int(fmt.chunk_s * 250))
    container = av.open(sink, mode="w", format="webm",
                        options={"live": "1", "cluster_time_limit": str(cluster_ms)})
    video = container.add_stream("libvpx", rate=fmt.frame_rate, options={
        "deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "error-resilient": "1",
    })
    video.width, video.height, video.pix_fmt = fmt.width, fmt.height, "yuv420p"
    video.bit_rate = fmt.video_bitrate
    video.codec_context.time_base = Fraction(1, fmt.frame_rate)
    video.codec_context.gop_size = fmt.frame_rate * 2
    video.codec_context.thread_count = 1
    audio = container.add_stream("libopus", rate=AUDIO_RATE)
    audio.layout = "mono"
    audio.bit_rate = fmt.audio_bitrate
    return container, video, audio


def grainy(planes: np.ndarray, luma_size: int, grain: int, rng: np.random.Generator) -> np.ndarray:
    """``planes`` (yuv420p, stacked) with noise of +- ``grain`` on the luma."""
    out = planes.copy()
    luma = out.reshape(-1)[:luma_size]
    noise = rng.integers(-grain, grain + 1, luma_size, dtype=np.int16)
    luma[:] = np.clip(luma.astype(np.int16) + noise, 16, 235).astype(np.uint8)
    return out


class LocalRecorder:
    """Records from :meth:`start` to :meth:`stop` on its own thread. ``on_chunk(bytes)`` gets
    every chunk in order (chunk 0 starts with the EBML header), then ``on_chunk(None)`` once
    the stream is closed; both are called on the recorder's thread."""

    def __init__(self, fmt: HqFormat, on_chunk: Callable[[bytes | None], None]) -> None:
        self.fmt = fmt
        self.on_chunk = on_chunk
        self.started_at: float | None = None
        self.chunks = 0
        self.video_frames = 0
        self.audio_frames = 0
        self.frames_skipped = 0
        self.error: str | None = None
        self._stop_at = math.inf
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> float:
        """Start recording at the next frame slot of the wall clock; that slot's time (epoch s):
        t=0 of the stream, the part's ``started_at_ms`` / 1000."""
        rate = self.fmt.frame_rate
        self.started_at = math.ceil((time.time() + START_AHEAD_S) * rate) / rate
        self._thread = threading.Thread(target=self._run, name="bot-hq-recorder", daemon=True)
        self._thread.start()
        return self.started_at

    def stop(self) -> None:
        """Record up to now, then close the stream (the thread sends the last chunk)."""
        self._stop_at = min(self._stop_at, time.time())
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        sink = _Sink()
        try:
            container, video, audio = open_webm(sink, self.fmt)
            try:
                self._record(sink, container, video, audio)
            finally:
                for stream in (video, audio):
                    for packet in stream.encode(None):
                        container.mux(packet)
                container.close()
        except Exception as exc:  # the take goes on without its local copy
            logger.exception("the local recording failed")
            self.error = f"local recording failed: {exc}"
        finally:
            if sink.pending:
                self._emit(sink.take())
            self.on_chunk(None)

    def _record(self, sink: _Sink, container: Any, video: Any, audio: Any) -> None:
        assert self.started_at is not None
        t0, fmt = self.started_at, self.fmt
        picture = FlashPicture(fmt.width, fmt.height, coded=True)  # tens of ms at 1280x720
        rng = np.random.default_rng()
        frame_s = 1.0 / fmt.frame_rate
        samples = int(AUDIO_RATE * AUDIO_PTIME)
        slot0 = round(t0 * fmt.frame_rate)  # t0 is on a frame slot: index since the epoch
        sample0 = round(t0 * AUDIO_RATE)
        next_video = next_audio = 0
        next_cut = 1
        while True:
            video_due = t0 + next_video * frame_s
            audio_due = t0 + next_audio * AUDIO_PTIME
            due = min(video_due, audio_due)
            if due >= self._stop_at:
                return
            delay = due - time.time()
            if delay > 0:
                self._wake.wait(delay)
                continue  # re-check: stop() may have come meanwhile
            if audio_due <= video_due:
                first = sample0 + next_audio * samples
                frame = AudioFrame.from_ndarray(beep_samples(first, samples, coded=True).reshape(1, -1),
                                                format="s16", layout="mono")
                frame.sample_rate, frame.pts = AUDIO_RATE, next_audio * samples
                frame.time_base = Fraction(1, AUDIO_RATE)
                for packet in audio.encode(frame):
                    container.mux(packet)
                next_audio += 1
                self.audio_frames += 1
            else:
                late = int((min(time.time(), self._stop_at) - video_due) / frame_s)
                if late > LATE_FRAMES:  # (never skipping past the stop: those frames are no loss)
                    logger.debug("local recording: %d frames late at frame %d", late, next_video)
                    self.frames_skipped += late
                    next_video += late
                    continue  # the frame now due may lie past the stop: check again
                data = picture.data(slot0 + next_video)
                if fmt.grain:
                    data = grainy(data, fmt.width * fmt.height, fmt.grain, rng)
                image = VideoFrame.from_ndarray(data, format="yuv420p")
                image.pts, image.time_base = next_video, Fraction(1, fmt.frame_rate)
                for packet in video.encode(image):
                    container.mux(packet)
                next_video += 1
                self.video_frames += 1
            cut_due = time.time() >= t0 + next_cut * fmt.chunk_s
            if (cut_due or len(sink.pending) >= fmt.max_chunk_bytes) and sink.pending:
                self._emit(sink.take())
            while time.time() >= t0 + next_cut * fmt.chunk_s:
                next_cut += 1

    def _emit(self, chunk: bytes) -> None:
        # a muxer burst may exceed the cap on its own: the server takes no chunk over it
        for start in range(0, len(chunk), self.fmt.max_chunk_bytes):
            self.chunks += 1
            self.on_chunk(chunk[start : start + self.fmt.max_chunk_bytes])
