"""Capture stage: write packets as they arrive, stream-copied, in files that survive a crash.

Each performer's publish session is a *segment*; each track of a segment goes to its own
Matroska file (live, flushed per packet, 1 s clusters: what was written before a SIGKILL
stays readable) plus a clock sidecar (JSON lines): every packet's RTP-derived pts and
arrival time, every RTCP sender report, every gap. The finalise stage turns these into the
archive. All file work runs on one writer thread per session behind a bounded queue, so a
slow disk never slows the live relay: when the queue is full the packet is dropped and the
hole is recorded as a gap.
"""

from __future__ import annotations

import heapq
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

import av

from improv_capture.recorder.files import describe_error, write_json_atomic
from improv_capture.recorder.opus import packet_samples

logger = logging.getLogger(__name__)

CLOCK_RATES = {"audio": 48000, "video": 90000}
MATROSKA_LIVE = {"live": "1", "flush_packets": "1", "cluster_time_limit": "1000"}
#: Once the writer has caught up it waits this long before it takes the next item, so that
#: items arrive while it is not waiting: a put that wakes a waiting thread, once per packet,
#: cost the relay's event loop more than the put itself (docs/benchmarks.md). Crash safety is
#: unchanged: what was submitted reaches the disk within this, far inside the 2 s promised.
BATCH_WAIT_S = 0.02
#: Nominal size in the capture file's header; the archive takes the real one from keyframes.
NOMINAL_VIDEO = (640, 480)
#: Audio is held this much media time before it is written, so that a lost packet the sender
#: sent again (the server asks for it for 0.2 s: media/aiortc_hooks.py, AUDIO_REPAIR_S) still
#: goes in its place: a Matroska track takes its packets in order only.
AUDIO_REORDER_S = 0.3
#: ... and never more packets than this (0.3 s is 15 of Opus's usual 20 ms: a sender whose
#: timestamps stand still cannot make the recorder hold its audio for ever)
AUDIO_HELD_MAX = 64
#: Video waiting for a keyframe asks for one again this often (arrival time) while frames keep
#: coming without one; the publication's requester spaces the PLIs it sends further still
#: (IMPROV_PLI_INTERVAL_S).
KEYFRAME_REASK_S = 0.5

TrackKey = tuple[str, str, str]  # performer_id, segment, kind


def capture_paths(session_dir: Path, key: TrackKey) -> tuple[Path, Path]:
    performer_id, segment, kind = key
    base = session_dir / "capture" / performer_id / f"{segment}.{kind}"
    return base.with_suffix(base.suffix + ".mkv"), base.with_suffix(base.suffix + ".clock.jsonl")


def open_capture_container(path: Path, kind: str) -> tuple[Any, Any]:
    container = av.open(str(path), "w", format="matroska", options=MATROSKA_LIVE)
    if kind == "video":
        stream = container.add_mux_stream("vp8", width=NOMINAL_VIDEO[0], height=NOMINAL_VIDEO[1])
    else:
        # an (unused) libopus encoder context gives the stream its OpusHead
        stream = container.add_stream("libopus", rate=48000, layout="stereo")
        container.start_encoding()
    return container, stream


class _Track:
    def __init__(self, session_dir: Path, key: TrackKey) -> None:
        mkv, clock = capture_paths(session_dir, key)
        mkv.parent.mkdir(parents=True, exist_ok=True)
        self.kind = key[2]
        self.time_base = Fraction(1, CLOCK_RATES[self.kind])
        self.container, self.stream = open_capture_container(mkv, self.kind)
        self.clock: TextIO = open(clock, "a", buffering=1)
        self.last_dts: int | None = None

    def write(self, data: bytes, pts: int, keyframe: bool, arrival: float) -> None:
        if self.last_dts is not None and pts <= self.last_dts:
            return  # a retransmitted or reordered duplicate: keep dts monotonic
        packet = av.Packet(data)
        packet.pts = packet.dts = pts
        packet.time_base = self.time_base
        packet.is_keyframe = keyframe
        packet.stream = self.stream
        self.container.mux(packet)
        self.last_dts = pts
        self.clock.write(json.dumps(["p", pts, round(arrival, 6), int(keyframe), len(data)]) + "\n")

    def note(self, record: list[Any]) -> None:
        self.clock.write(json.dumps(record) + "\n")

    def close(self) -> None:
        try:
            self.container.close()
        finally:
            self.clock.close()


class SessionWriter:
    """Owns every file of one recording while it runs; thread-safe, non-blocking submits."""

    def __init__(self, session_dir: Path, queue_size: int = 4096) -> None:
        self.session_dir = session_dir
        self.session_dir.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=queue_size)
        self._tracks: dict[TrackKey, _Track] = {}
        self._events: TextIO = open(session_dir / "events.jsonl", "a", buffering=1)
        self.error: str | None = None
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="session-writer", daemon=True)
        self._thread.start()

    # called from the event loop

    @property
    def queued(self) -> int:
        """Items waiting for the writer thread (the queue's approximate size, for /metrics)."""
        return self._queue.qsize()

    def submit(self, item: tuple[Any, ...]) -> bool:
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def event(self, record: dict[str, Any]) -> None:
        self.submit(("event", record))

    def manifest(self, manifest: dict[str, Any]) -> None:
        self.submit(("manifest", json.loads(json.dumps(manifest))))

    def track(self, key: TrackKey, request_keyframe: Callable[[], None]) -> TrackRecorder:
        return TrackRecorder(self, key, request_keyframe)

    # called from a thread (never the event loop: it waits for the disk)

    def close(self, timeout: float = 120.0) -> None:
        """Write what is queued, close every file. A disk too slow to drain the queue in
        ``timeout`` leaves the session with an error rather than the stop hanging."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            self.error = self.error or "write failed: the disk did not keep up at the stop"
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.error = self.error or "write failed: the disk did not keep up at the stop"

    # the writer thread

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            if self.error is not None:
                continue  # the disk failed: drain without writing, the reason is kept
            try:
                self._handle(item)
            except (OSError, av.FFmpegError, ValueError) as exc:
                self.error = f"write failed: {describe_error(exc)}"
                logger.error("recording in %s: %s", self.session_dir, self.error)
            if self._queue.empty():
                time.sleep(BATCH_WAIT_S)
        for track in self._tracks.values():
            try:
                track.close()
            except (OSError, av.FFmpegError) as exc:
                self.error = self.error or f"close failed: {describe_error(exc)}"
        self._tracks.clear()
        try:
            self._events.close()
        except OSError as exc:
            self.error = self.error or f"close failed: {describe_error(exc)}"

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "p":
            _, key, data, pts, keyframe, arrival = item
            track = self._tracks.get(key) or self._open(key)
            track.write(data, pts, keyframe, arrival)
        elif kind in ("sr", "gap"):
            key = item[1]
            track = self._tracks.get(key) or self._open(key)
            track.note([kind, *item[2:]])
        elif kind == "close":
            track = self._tracks.pop(item[1], None)
            if track is not None:
                track.close()
        elif kind == "event":
            self._events.write(json.dumps(item[1]) + "\n")
        elif kind == "manifest":
            write_json_atomic(self.session_dir / "manifest.json", item[1])

    def _open(self, key: TrackKey) -> _Track:
        track = self._tracks[key] = _Track(self.session_dir, key)
        return track


class TrackRecorder:
    """The recorder's view of one published track: drops to the next keyframe after any
    loss (a queue overflow or a broken frame upstream), and records every such hole. Audio
    is put in pts order first (a repaired packet comes late), and a hole the sender's
    numbering says was lost, and that no retransmission filled, is recorded too."""

    def __init__(
        self, writer: SessionWriter, key: TrackKey, request_keyframe: Callable[[], None]
    ) -> None:
        self.writer = writer
        self.key = key
        self.kind = key[2]
        self.waiting_for_keyframe = self.kind == "video"
        self._request_keyframe = request_keyframe
        self._gap: tuple[float, str] | None = None
        self._gap_dropped = 0
        self.packets = 0
        #: audio waiting for its place: (pts, arrival order, data, follows a loss, arrival)
        self._held: list[tuple[int, int, bytes, bool, float]] = []
        self._held_order = 0
        self._newest_pts: int | None = None
        #: audio: (pts, samples, arrival) of the latest packet written
        self._last_audio: tuple[int, int | None, float] | None = None
        self._last_arrival = 0.0
        #: arrival time of the latest keyframe request while waiting (None: not yet timed)
        self._asked_at: float | None = None
        if self.waiting_for_keyframe:
            request_keyframe()

    def _lost(self, arrival: float, reason: str, frames: int = 1) -> None:
        if self._gap is None:
            self._gap = (arrival, reason)
        self._gap_dropped += frames
        if self.kind == "video" and not self.waiting_for_keyframe:
            self.waiting_for_keyframe = True
            self._asked_at = arrival
            self._request_keyframe()

    def packet(self, packet: av.Packet, arrival: float) -> None:
        keyframe = bool(packet.is_keyframe)
        if self.kind == "audio":
            self._hold(int(packet.pts), bytes(packet), bool(packet.is_corrupt), arrival)
            return
        if packet.is_corrupt and not keyframe:
            self._lost(arrival, "lost upstream")
            return
        if packet.is_corrupt and self.packets and self._gap is None:
            # a keyframe right after frames lost upstream: it decodes, but they are gone
            # (none of them reached the recorder: nothing dropped here)
            self._gap = (self._last_arrival, "lost upstream")
        if self.waiting_for_keyframe:
            if not keyframe:
                if self.packets:
                    self._gap_dropped += 1
                self._ask_again(arrival)
                return
            self.waiting_for_keyframe = False
            self._asked_at = None
        self._write(bytes(packet), int(packet.pts), keyframe, arrival)

    def _ask_again(self, arrival: float) -> None:
        """While frames come that cannot start the file, ask for a keyframe again every
        KEYFRAME_REASK_S: a request lost on the way, or sent before the sender's encoder ran
        (a browser that just published ignores it), must not leave the video unrecorded until
        something else asks."""
        if self._asked_at is None:
            self._asked_at = arrival
        elif arrival - self._asked_at >= KEYFRAME_REASK_S:
            self._asked_at = arrival
            self._request_keyframe()

    def _hold(self, pts: int, data: bytes, after_loss: bool, arrival: float) -> None:
        heapq.heappush(self._held, (pts, self._held_order, data, after_loss, arrival))
        self._held_order += 1
        self._newest_pts = pts if self._newest_pts is None else max(self._newest_pts, pts)
        horizon = self._newest_pts - AUDIO_REORDER_S * CLOCK_RATES["audio"]
        while self._held and (self._held[0][0] <= horizon or len(self._held) > AUDIO_HELD_MAX):
            self._release_audio(*heapq.heappop(self._held))

    def _release_audio(
        self, pts: int, _order: int, data: bytes, after_loss: bool, arrival: float
    ) -> None:
        if self._last_audio is not None:
            last_pts, samples, last_arrival = self._last_audio
            if pts <= last_pts:
                return  # a duplicate, or a retransmission later than the window
            missing = pts - last_pts - samples if samples else 0
            if after_loss and samples and missing >= samples // 2:
                # (a retransmission written last may have come after this packet)
                self._lost(min(last_arrival, arrival), "lost upstream",
                           max(1, round(missing / samples)))
        self._last_audio = (pts, packet_samples(data), arrival)
        self._write(data, pts, True, arrival)

    def _write(self, data: bytes, pts: int, keyframe: bool, arrival: float) -> None:
        if self._gap is not None:
            start, reason = self._gap
            if not self.writer.submit(("gap", self.key, start, arrival, reason, self._gap_dropped)):
                self._lost(arrival, reason)
                return
            self._gap, self._gap_dropped = None, 0
        item = ("p", self.key, data, pts, keyframe, arrival)
        if self.writer.submit(item):
            self.packets += 1
            self._last_arrival = arrival
        else:
            self._lost(arrival, "recorder queue full")

    def sender_report(self, pts: int, ntp_s: float, arrival: float) -> None:
        self.writer.submit(("sr", self.key, pts, ntp_s, arrival))

    def close(self) -> None:
        while self._held:
            self._release_audio(*heapq.heappop(self._held))
        if self._gap is not None:
            start, reason = self._gap
            self.writer.submit(("gap", self.key, start, time.time(), reason, self._gap_dropped))
        self.writer.submit(("close", self.key))
