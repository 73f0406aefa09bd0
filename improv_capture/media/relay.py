"""Fan-out of one publisher's encoded packets to many subscribers, never decoding them.

A :class:`Publication` reads one passthrough remote track and pushes every packet into each
subscriber's :class:`RelayTrack`, a bounded queue that an aiortc ``RTCRtpSender`` drains and
packetizes. A slow subscriber never slows the publisher or the others: audio drops its
oldest packet, video drops everything up to the next keyframe and asks for one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from improv_capture.recorder import vp8

logger = logging.getLogger(__name__)


class PublicationSink(Protocol):
    """Something that sees every packet of a publication (the recorder); must not block."""

    def packet(self, packet: av.Packet, arrival: float) -> None: ...

    def sender_report(self, pts: int, ntp_s: float, arrival: float) -> None: ...


class RelayTrack(MediaStreamTrack):
    """What one subscriber receives of one publisher track."""

    def __init__(
        self,
        kind: str,
        capacity: int,
        request_keyframe: Callable[[], None],
    ) -> None:
        super().__init__()
        self.kind = kind
        self._capacity = capacity
        self._queue: deque[av.Packet] = deque()
        self._wakeup = asyncio.Event()
        self._request_keyframe = request_keyframe
        # encoded video starts at a keyframe: anything before it cannot be decoded
        self.waiting_for_keyframe = kind == "video"
        self._ended = False
        #: video sent to this subscriber is paused: its link cannot take it (media/downlink.py)
        self.paused = False
        self.packets_in = 0
        self.packets_dropped = 0

    def push(self, packet: av.Packet) -> None:
        if self._ended:
            return
        self.packets_in += 1
        if self.kind == "video":
            self._push_video(packet)
        else:
            self._push_dropping_oldest(packet)
        self._wakeup.set()

    def _push_dropping_oldest(self, packet: av.Packet) -> None:
        """Audio: any packet can be played, so a full queue loses its oldest."""
        if len(self._queue) >= self._capacity:
            self._queue.popleft()
            self.packets_dropped += 1
        self._queue.append(packet)

    def _push_video(self, packet: av.Packet) -> None:
        if self.paused:
            self.packets_dropped += 1
            return
        if self.waiting_for_keyframe:
            if not packet.is_keyframe:
                self.packets_dropped += 1
                return
            self.waiting_for_keyframe = False
        if len(self._queue) >= self._capacity:
            # the subscriber fell behind: drop what it has not sent and restart at a keyframe
            self.packets_dropped += len(self._queue) + 1
            self._queue.clear()
            self.resync()
            return
        self._queue.append(packet)

    def resync(self) -> None:
        """Drop video until the next keyframe and ask the publisher for one."""
        if self.kind != "video" or self.paused:
            return
        self._queue.clear()
        self.waiting_for_keyframe = True
        self._request_keyframe()

    def pause(self) -> None:
        """Send none of this video until :meth:`resume`: the subscriber sees it frozen."""
        if self.kind == "video" and not self.paused:
            self.paused = True
            self.waiting_for_keyframe = False
            self.packets_dropped += len(self._queue)
            self._queue.clear()

    def resume(self) -> None:
        """Send this video again, from the next keyframe (asked for at once)."""
        if self.paused:
            self.paused = False
            self.resync()

    def end(self) -> None:
        self._ended = True
        self._wakeup.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def recv(self) -> av.Packet:  # type: ignore[override]
        while not self._queue:
            if self._ended or self.readyState != "live":
                raise MediaStreamError
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._queue.popleft()

    def stop(self) -> None:
        super().stop()
        self.end()


class KeyframeRequester:
    """Coalesces keyframe requests to at most one PLI per ``interval`` seconds."""

    def __init__(self, send: Callable[[], Awaitable[object]], interval: float) -> None:
        self._send = send
        self._interval = interval
        self._last = -float("inf")
        self._pending: asyncio.TimerHandle | None = None
        self.sent = 0

    def __call__(self) -> None:
        if self._pending is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._last + self._interval - loop.time()
        if wait <= 0:
            self._fire()
        else:
            self._pending = loop.call_later(wait, self._fire)

    def now(self) -> None:
        """Send a request at once, past the interval (a take marker: the export cuts the take's
        video at the keyframe this brings, so it must not wait up to ``interval``). A request
        pending for later goes now instead."""
        self.cancel()
        self._fire()

    def _fire(self) -> None:
        self._pending = None
        self._last = asyncio.get_running_loop().time()
        self.sent += 1
        asyncio.ensure_future(self._send())

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None


class Publication:
    """One published track of one performer, relayed to every subscriber."""

    def __init__(
        self,
        performer_id: str,
        track: MediaStreamTrack,
        request_keyframe: KeyframeRequester | None,
        queue_capacity: int,
    ) -> None:
        self.performer_id = performer_id
        self.kind = track.kind
        self._track = track
        self._request_keyframe = request_keyframe
        self._capacity = queue_capacity
        self._subscribers: set[RelayTrack] = set()
        self._sinks: list[PublicationSink] = []
        self.last_sender_report: tuple[int, float, float] | None = None
        #: returns the loudest audio level (dBov) since the last call, if the sender says
        self.take_audio_level: Callable[[], float | None] = lambda: None
        self._task: asyncio.Task[None] | None = None
        self.packets = 0
        self.bytes = 0
        self.keyframes = 0
        self.frame_size: tuple[int, int] | None = None
        self.last_packet_at: float | None = None
        #: audio: the pts of the latest packet relayed live
        self._live_pts: int | None = None
        self.ended = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def request_keyframe(self) -> None:
        if self._request_keyframe is not None:
            self._request_keyframe()

    def request_keyframe_now(self) -> None:
        """Ask for a keyframe past the coalescing interval (KeyframeRequester.now)."""
        if self._request_keyframe is not None:
            self._request_keyframe.now()

    def subscribe(self) -> RelayTrack:
        track = self._new_track()
        self._subscribers.add(track)
        if self.ended.is_set():
            track.end()
        elif self.kind == "video":
            self.request_keyframe()
        return track

    def _new_track(self) -> RelayTrack:
        return RelayTrack(self.kind, self._capacity, self.request_keyframe)

    def unsubscribe(self, track: RelayTrack) -> None:
        self._subscribers.discard(track)
        track.end()

    def add_sink(self, sink: PublicationSink) -> None:
        """A new sink gets the latest sender report at once: audio reports can be 5 s apart."""
        self._sinks.append(sink)
        if self.last_sender_report is not None:
            sink.sender_report(*self.last_sender_report)

    def remove_sink(self, sink: PublicationSink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    def sender_report(self, pts: int, ntp_s: float, arrival: float) -> None:
        self.last_sender_report = (pts, ntp_s, arrival)
        for sink in self._sinks:
            sink.sender_report(pts, ntp_s, arrival)

    async def _run(self) -> None:
        try:
            while True:
                packet = await self._track.recv()
                arrival = time.time()
                self.packets += 1
                self.last_packet_at = arrival
                self._relay(packet, arrival)
        except MediaStreamError:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("relay of %s %s failed", self.performer_id, self.kind)
        finally:
            self._finish()

    def _relay(self, packet: av.Packet, arrival: float) -> None:
        """One encoded packet to every subscriber and sink."""
        self.bytes += packet.size
        if self.kind == "audio":
            if self._live_pts is not None and packet.pts <= self._live_pts:
                # a retransmission that came after the call went on without it: too late for
                # the subscribers, in time for the recording (which puts audio in pts order)
                for sink in self._sinks:
                    sink.packet(packet, arrival)
                return
            self._live_pts = packet.pts
        broken = self.kind == "video" and packet.is_corrupt and not packet.is_keyframe
        if self.kind == "video" and packet.is_keyframe:
            self.keyframes += 1
            self.frame_size = vp8.frame_size(bytes(packet)) or self.frame_size
        if broken:
            # a frame was lost upstream: every decoder downstream needs a keyframe
            for sub in self._subscribers:
                sub.resync()
        else:
            for sub in self._subscribers:
                sub.push(packet)
        if self.kind == "video" and not packet.is_keyframe:
            if any(sub.waiting_for_keyframe for sub in self._subscribers):
                # a lost or unanswered request must not leave a subscriber black
                self.request_keyframe()
        # sinks see broken frames too (flagged is_corrupt) and resync themselves
        for sink in self._sinks:
            sink.packet(packet, arrival)

    def _finish(self) -> None:
        self.ended.set()
        if self._request_keyframe is not None:
            self._request_keyframe.cancel()
        for sub in self._subscribers:
            sub.end()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._finish()
