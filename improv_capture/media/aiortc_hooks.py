"""Every reach into aiortc's private internals, in one place.

aiortc has no public API for encoded frames, for forwarding keyframe requests, or for giving
each forwarded performer its own media stream. Each hook below names the private symbol it
relies on and has its own test (tests/server/test_aiortc_hooks.py), so that an aiortc upgrade
breaks loudly here and nowhere else. aiortc is pinned exactly in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import aioice.ice
import av
from aiortc import (
    RTCDtlsTransport,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    rtcrtpreceiver,
)
from aiortc.codecs import CODECS
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import NackGenerator
from aiortc.rtp import RtcpRrPacket, RtcpSrPacket, RtpPacket
from aiortc.utils import uint16_add

from improv_capture.recorder import vp8

logger = logging.getLogger(__name__)

AIORTC_VERSION = "1.16.0"

#: Opus parameters we put in every SDP: in-band FEC repairs single losses on every leg.
OPUS_FMTP = {"minptime": 10, "useinbandfec": 1}

#: Video capacity of the relay's jitter buffer, in packets (aiortc's own is 512, which can
#: stall a track for seconds behind one unrecoverable packet).
VIDEO_JITTER_CAPACITY = 128
AUDIO_JITTER_CAPACITY = 16
#: How long a video hole may wait for a NACK retransmission before the relay skips it.
VIDEO_HOLE_TIMEOUT_S = 0.15
#: A packet still missing this long after the last NACK is asked for again (a NACK or its
#: retransmission can be lost too: at 3 % loss each way, one repair in seventeen).
NACK_RETRY_S = 0.05
#: How long a lost audio packet is asked for. The live call never waits for it (audio holes
#: are skipped at once); a retransmission that comes in this time goes to the recording
#: only, which holds audio long enough to put it in its place (recorder/capture.py,
#: AUDIO_REORDER_S).
AUDIO_REPAIR_S = 0.2
#: Lost audio packets remembered, so that a late retransmission of one is recognised.
AUDIO_SKIPPED_KEPT = 64
#: A packet this many sequence numbers or fewer behind the jitter buffer's origin is late
#: (a retransmission or a duplicate) and dropped; aiortc would restart the buffer at it
#: from 100 behind, which a burst of retransmissions after an outage did, releasing old
#: frames as new ones. Further behind, the sender restarted its numbering: aiortc's reset.
LATE_WINDOW = 1024

_original_decoder_worker = rtcrtpreceiver.decoder_worker
_installed = False


def install() -> None:
    """Install the process-wide hooks; idempotent.

    Hook: ``aiortc.rtcrtpreceiver.decoder_worker``, looked up by ``RTCRtpReceiver.receive``
    when it starts the receiver's decoder thread. Receivers that were not switched to
    passthrough keep aiortc's own worker. Hook: ``aiortc.codecs.CODECS["audio"]`` (the Opus
    entry's parameters), which aiortc copies into every offer and answer.
    """
    global _installed
    if _installed:
        return
    rtcrtpreceiver.decoder_worker = _decoder_worker
    for codec in CODECS["audio"]:
        if codec.mimeType.lower() == "audio/opus":
            codec.parameters.update(OPUS_FMTP)
    _installed = True


_original_host_addresses = aioice.ice.get_host_addresses


def restrict_ice_addresses(addresses: list[str]) -> None:
    """Gather host candidates on exactly ``addresses``; with none, on every interface plus
    loopback (aioice leaves 127.0.0.1 out, which breaks a browser on the server's machine).

    Hook: ``aioice.ice.get_host_addresses`` (aiortc's ICE library), called at gathering time.
    """
    fixed = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if fixed:
            return [a for a in fixed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]
        found = _original_host_addresses(use_ipv4, use_ipv6)
        return found + (["127.0.0.1"] if use_ipv4 and "127.0.0.1" not in found else [])

    aioice.ice.get_host_addresses = host_addresses


def _vp8_frame_start(payload: bytes) -> bool:
    """S bit set and partition index 0 in the VP8 payload descriptor (RFC 7741)."""
    return len(payload) > 0 and (payload[0] & 0x10) != 0 and (payload[0] & 0x0F) == 0


class RelayJitterBuffer(JitterBuffer):
    """Releases a frame as soon as its last packet is in, instead of one frame later.

    aiortc's buffer waits for the first packet of the next frame (a whole frame interval of
    added latency for video, plus a four-frame prefetch for audio), and behind a lost packet
    it waits until 512 packets pile up. Here a video frame is complete at its marker bit and
    each Opus packet is a frame; a hole that NACK has not repaired within ``hole_timeout_s``
    is skipped to the next frame start (audio is skipped at once: the call never waits for
    sound; a late retransmission of it goes to ``on_late``, for the recording).
    The frame released after anything was skipped is
    flagged as following a discontinuity, because the relay re-packetizes frames and the
    subscriber could not see the hole itself.
    """

    def __init__(self, capacity: int, is_video: bool, hole_timeout_s: float = 0.15,
                 keyframe_after_loss: bool = False) -> None:
        super().__init__(capacity=capacity, prefetch=0, is_video=is_video)
        #: a decoding receiver (:func:`skip_lost_video`): a frame after a skipped hole asks
        #: for a keyframe, as a browser's does (the relay resyncs its subscribers itself)
        self.keyframe_after_loss = keyframe_after_loss
        self.media_ssrc: int | None = None
        self.discontinuity = False
        self.hole_timeout_s = hole_timeout_s
        self._hole_since: float | None = None
        #: loudest ssrc-audio-level (-dBov, 0 loudest, 127 silence) since it was last read
        self.loudest: int | None = None
        #: audio: sequence numbers of packets skipped as lost (oldest first, bounded)
        self._skipped: dict[int, None] = {}
        #: audio: called with a skipped packet's frame when its retransmission comes after all
        self.on_late: Callable[[JitterFrame], None] | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        self.media_ssrc = packet.ssrc
        level = packet.extensions.audio_level
        if level is not None and (self.loudest is None or level[1] < self.loudest):
            self.loudest = level[1]
        if packet.sequence_number in self._skipped:
            # too late for the call, which went on without it: only the recording takes it
            del self._skipped[packet.sequence_number]
            if self.on_late is not None:
                self.on_late(JitterFrame(data=packet._data,  # type: ignore[attr-defined]
                                         timestamp=packet.timestamp))
            return False, None
        if self._origin is not None:
            if 0 < uint16_add(self._origin, -packet.sequence_number) <= LATE_WINDOW:
                return False, None  # late: its place is gone
            if not self._is_video and self.capacity <= uint16_add(
                packet.sequence_number, -self._origin
            ) < 0x8000:
                # more audio lost at once than the buffer holds: aiortc starts over at this
                # packet without a word (it flags video only); it follows a loss all the same
                self.discontinuity = True
        pli_flag, frame = super().add(packet)
        if pli_flag:
            # aiortc threw packets away (a jump past the capacity, as after an outage, or a
            # restart of the sequence) before it released ``frame``: that frame follows the
            # hole too (flagging only the next one let an undecodable frame through)
            if frame is not None:
                frame.discontinuity = True  # type: ignore[attr-defined]
            else:
                self.discontinuity = True
        if self.keyframe_after_loss and getattr(frame, "discontinuity", False):
            pli_flag = True
        return pli_flag, frame

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        frame = self._release()
        if frame is None:
            now = time.monotonic()
            if self._hole_since is None:
                self._hole_since = now
            if now - self._hole_since >= self.hole_timeout_s and self._skip_hole():
                frame = self._release()
        return frame

    def _release(self) -> JitterFrame | None:
        """The frame at the origin if it is complete; drops it if its start was lost."""
        packets: list[RtpPacket] = []
        timestamp: int | None = None
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None:
                return None
            if timestamp is None:
                timestamp = packet.timestamp
            elif packet.timestamp != timestamp:
                # the next frame began before this one's marker: this one is broken
                self.remove(len(packets))
                self.discontinuity = True
                return self._release()
            packets.append(packet)
            if not self._is_video or packet.marker:
                break
        else:
            return None
        self._hole_since = None
        self.remove(len(packets))
        if self._is_video and not _vp8_frame_start(packets[0].payload):
            self.discontinuity = True
            return self._release()
        frame = JitterFrame(
            data=b"".join(p._data for p in packets),  # type: ignore[attr-defined]
            timestamp=timestamp,  # type: ignore[arg-type]
        )
        frame.discontinuity = self.discontinuity  # type: ignore[attr-defined]
        self.discontinuity = False
        return frame

    def _skip_hole(self) -> bool:
        """Give up on a hole: move the origin to the first frame start after it."""
        hole = None
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None:
                if hole is None:
                    hole = count
            elif hole is not None and (
                not self._is_video or _vp8_frame_start(packet.payload)
            ):
                if not self._is_video:
                    self._remember_skipped(count)
                self.remove(count)
                self.discontinuity = True
                self._hole_since = None
                return True
        return False

    def _remember_skipped(self, count: int) -> None:
        """The sequence numbers of the holes among the first ``count`` slots."""
        for offset in range(count):
            if self._packets[(self._origin + offset) % self._capacity] is None:
                self._skipped[uint16_add(self._origin, offset)] = None  # type: ignore[arg-type]
        while len(self._skipped) > AUDIO_SKIPPED_KEPT:
            del self._skipped[next(iter(self._skipped))]


class RelayNackGenerator(NackGenerator):
    """Asks again for a packet that is still missing.

    aiortc's generator NACKs a loss once, when it is seen; if that NACK or the retransmission
    is lost as well, the hole waits out the relay's timeout and the frame is lost for good.
    This one repeats the NACK every ``retry_s`` (when a packet comes in) while something is
    missing, and forgets a packet after ``give_up_s``, when asking could repair nothing.
    """

    def __init__(self, retry_s: float, give_up_s: float, max_gap: int) -> None:
        super().__init__()
        self.retry_s = retry_s
        self.give_up_s = give_up_s
        self.max_gap = max_gap
        self._missing_since: dict[int, float] = {}
        self._asked_at = -float("inf")

    def add(self, packet: RtpPacket) -> bool:
        if self.max_seq is not None and self.max_gap < uint16_add(
            packet.sequence_number, -self.max_seq
        ) < 0x8000:
            # more lost at once than the jitter buffer holds (an outage): nothing of it can
            # take its place any more, and asking for it all would only bring a burst of
            # stale packets down a link that has just come back
            self.max_seq = packet.sequence_number
            self.missing.clear()
            self._missing_since.clear()
            return False
        missed = super().add(packet)
        now = time.monotonic()
        for seq in self.missing:
            self._missing_since.setdefault(seq, now)
        for seq, since in list(self._missing_since.items()):
            if seq not in self.missing or now - since > self.give_up_s:
                del self._missing_since[seq]
                self.missing.discard(seq)
        if self.missing and (missed or now - self._asked_at >= self.retry_s):
            self._asked_at = now
            return True
        return False


def enable_passthrough(receiver: RTCRtpReceiver) -> None:
    """Make ``receiver.track`` yield encoded ``av.Packet``s instead of decoded frames.

    Must run before the receiver starts (in the peer connection's "track" event, which fires
    before the transport connects). Hooks: ``_RTCRtpReceiver__decoder_queue`` (replaced by
    :class:`InlinePassthrough`, which also tells the decoder thread to end at once),
    ``RTCRtpReceiver._track._queue``, ``_RTCRtpReceiver__started``, ``_RTCRtpReceiver__kind``
    ``_RTCRtpReceiver__jitter_buffer`` (replaced by :class:`RelayJitterBuffer`) and
    ``_RTCRtpReceiver__nack_generator`` (replaced by :class:`RelayNackGenerator`, for audio
    too: aiortc NACKs only video; senders that keep audio history repair it, and the late
    packet reaches the recording through :meth:`InlinePassthrough.put_late`).
    """
    install()
    if receiver._RTCRtpReceiver__started:  # type: ignore[attr-defined]
        raise RuntimeError("passthrough must be enabled before the receiver starts")
    track = receiver._track
    if track is None:
        raise RuntimeError("receiver has no remote track yet")
    is_video = receiver._RTCRtpReceiver__kind == "video"  # type: ignore[attr-defined]
    buffer = RelayJitterBuffer(
        capacity=VIDEO_JITTER_CAPACITY if is_video else AUDIO_JITTER_CAPACITY,
        is_video=is_video,
        hole_timeout_s=VIDEO_HOLE_TIMEOUT_S if is_video else 0.0,
    )
    passthrough = InlinePassthrough(track._queue)
    if not is_video:
        buffer.on_late = lambda frame: passthrough.put_late(
            frame, rtp_to_pts(receiver, frame.timestamp))
    receiver._RTCRtpReceiver__jitter_buffer = buffer  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__nack_generator = RelayNackGenerator(  # type: ignore[attr-defined]
        NACK_RETRY_S, VIDEO_HOLE_TIMEOUT_S if is_video else AUDIO_REPAIR_S, buffer.capacity)
    receiver._RTCRtpReceiver__decoder_queue = passthrough  # type: ignore[attr-defined]


def skip_lost_video(receiver: RTCRtpReceiver) -> None:
    """Make a decoding video receiver (the bot's) give up on a lost packet as a browser
    does: NACKed again for a while (:class:`RelayNackGenerator`), then skipped, and a keyframe
    asked for. aiortc's own buffer waits for it until 512 packets have piled up behind it:
    seconds of frozen, then late, pictures after any burst of loss. Hooks:
    ``_RTCRtpReceiver__jitter_buffer`` and ``_RTCRtpReceiver__nack_generator``.
    """
    if receiver._RTCRtpReceiver__kind != "video":  # type: ignore[attr-defined]
        return
    receiver._RTCRtpReceiver__jitter_buffer = RelayJitterBuffer(  # type: ignore[attr-defined]
        VIDEO_JITTER_CAPACITY, is_video=True, hole_timeout_s=VIDEO_HOLE_TIMEOUT_S,
        keyframe_after_loss=True)
    receiver._RTCRtpReceiver__nack_generator = RelayNackGenerator(  # type: ignore[attr-defined]
        NACK_RETRY_S, VIDEO_HOLE_TIMEOUT_S, VIDEO_JITTER_CAPACITY)


def media_ssrc(receiver: RTCRtpReceiver) -> int | None:
    """The SSRC of the media (not RTX) stream a passthrough receiver has seen."""
    buffer = receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
    return getattr(buffer, "media_ssrc", None)


def take_audio_level(receiver: RTCRtpReceiver) -> float | None:
    """The loudest audio level (dBov) the sender reported (RFC 6464 header extension) since
    the last call; None if none came. Lets the server flag a silent microphone undecoded."""
    buffer = receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
    loudest = getattr(buffer, "loudest", None)
    if loudest is None:
        return None
    buffer.loudest = None
    return -float(loudest)


async def send_pli(receiver: RTCRtpReceiver) -> bool:
    """Ask the publisher behind ``receiver`` for a keyframe. Hook: ``_send_rtcp_pli``."""
    ssrc = media_ssrc(receiver)
    if ssrc is None:
        return False
    await receiver._send_rtcp_pli(ssrc)
    return True


NTP_UNIX_OFFSET = 2208988800

#: (pts of the report's RTP time in the track's pts domain, NTP time as Unix seconds, arrival)
SenderReportCallback = Callable[[int, float, float], None]


def on_sender_report(receiver: RTCRtpReceiver, callback: SenderReportCallback) -> None:
    """Call ``callback`` for every RTCP sender report of this receiver's media.

    aiortc keeps neither the NTP time nor the RTP time of a sender report; the recorder needs
    both to place frames on the sender's capture clock. Hooks: ``_handle_rtcp_packet``
    (wrapped per instance) and ``_RTCRtpReceiver__timestamp_mapper`` (``_origin``, ``_last``:
    the report's RTP time is turned into the same pts the receiver's frames carry).
    """
    original = receiver._handle_rtcp_packet

    async def handle(packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket) and packet.ssrc == media_ssrc(receiver):
            pts = rtp_to_pts(receiver, packet.sender_info.rtp_timestamp)
            if pts is not None:
                ntp = packet.sender_info.ntp_timestamp
                unix = (ntp >> 32) - NTP_UNIX_OFFSET + (ntp & 0xFFFFFFFF) / 2**32
                try:
                    callback(pts, unix, time.time())
                except Exception:
                    logger.exception("sender report callback failed")
        await original(packet)

    receiver._handle_rtcp_packet = handle  # type: ignore[method-assign]


def rtp_to_pts(receiver: RTCRtpReceiver, rtp_timestamp: int) -> int | None:
    """Map an RTP timestamp to the receiver's frame pts (RTP time since its first frame),
    taking the 32-bit wrap nearest the latest frame."""
    mapper = receiver._RTCRtpReceiver__timestamp_mapper  # type: ignore[attr-defined]
    if mapper._origin is None or mapper._last is None:
        return None
    delta = (rtp_timestamp - mapper._last) & 0xFFFFFFFF
    if delta >= 1 << 31:
        delta -= 1 << 32
    return int(mapper._last - mapper._origin + delta)


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` when the subscriber behind ``sender`` sends a PLI or FIR.

    Hook: ``RTCRtpSender._send_keyframe``, which ``_handle_rtcp_packet`` calls on PLI/FIR and
    which otherwise only sets a flag for an encoder that passthrough never runs.
    """
    sender._send_keyframe = callback  # type: ignore[method-assign]


def on_receiver_report(sender: RTCRtpSender, callback: Callable[[float], None]) -> None:
    """Call ``callback`` with the fraction lost (0 to 1) of every report block a subscriber
    sends about what ``sender`` sends it (media/downlink.py: how much its link takes).

    aiortc keeps only the latest one, in its stats. Hooks: ``_handle_rtcp_packet`` (wrapped
    per instance) and ``_ssrc``.
    """
    original = sender._handle_rtcp_packet

    async def handle(packet: Any) -> None:
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == sender._ssrc:
                    try:
                        callback(report.fraction_lost / 256)
                    except Exception:
                        logger.exception("receiver report callback failed")
        await original(packet)

    sender._handle_rtcp_packet = handle  # type: ignore[method-assign]


#: encoder timestamps of the frames sent last, kept per sender to pair a report with one
CAPTURES_KEPT = 64


def stamp_reports_at_capture(sender: RTCRtpSender, captured_at: Callable[[], float | None]) -> None:
    """Pair each RTCP sender report's RTP time with the moment that frame was captured (a
    browser's way), not the moment aiortc sent its last packet (aiortc's): a sender slow to
    encode, or on a late event loop, otherwise reports its media later than it was captured,
    and a receiver that places media by sender reports (ours) moves it by that much. For the
    bot, whose frames have a wall-clock capture slot. ``captured_at()``: the capture time (Unix
    seconds) of the frame the track returned last, None if unknown.

    Hooks: ``_next_encoded_frame`` (wrapped per instance: it fetches and encodes one frame, after
    the previous one's packets all went out), ``_send_rtcp`` (wrapped per instance),
    ``_RTCRtpSender__rtp_timestamp`` and ``__packet_count`` (the RTP time of the last packet sent:
    with the encoder's timestamp it gives the random origin aiortc adds) and ``__lsr`` (the
    report's middle bits, matched against the receiver's reports for the round-trip time).
    """
    captures: dict[int, float] = {}
    state: dict[str, int | None] = {"origin": None, "last": None}
    fetch, send = sender._next_encoded_frame, sender._send_rtcp

    async def next_encoded_frame(codec: Any) -> Any:
        last = state["last"]
        if state["origin"] is None and last is not None and sender._RTCRtpSender__packet_count:  # type: ignore[attr-defined]
            state["origin"] = (sender._RTCRtpSender__rtp_timestamp - last) & 0xFFFFFFFF  # type: ignore[attr-defined]
        frame = await fetch(codec)
        if frame is not None:
            timestamp = frame.timestamp & 0xFFFFFFFF
            state["last"] = timestamp
            at = captured_at()
            if at is not None:
                captures[timestamp] = at
                while len(captures) > CAPTURES_KEPT:
                    del captures[next(iter(captures))]
        return frame

    async def send_rtcp(packets: list[Any]) -> None:
        origin = state["origin"]
        for packet in packets:
            if isinstance(packet, RtcpSrPacket) and origin is not None:
                at = captures.get((packet.sender_info.rtp_timestamp - origin) & 0xFFFFFFFF)
                if at is not None:
                    ntp = round((at + NTP_UNIX_OFFSET) * 2**32)
                    packet.sender_info.ntp_timestamp = ntp
                    sender._RTCRtpSender__lsr = (ntp >> 16) & 0xFFFFFFFF  # type: ignore[attr-defined]
        await send(packets)

    sender._next_encoded_frame = next_encoded_frame  # type: ignore[method-assign]
    sender._send_rtcp = send_rtcp  # type: ignore[method-assign]


def set_stream_id(sender: RTCRtpSender, stream_id: str) -> None:
    """Put ``sender`` in its own media stream (the msid in the SDP), so that the browser
    lip-syncs this performer's audio with this performer's video. Hook: ``_stream_id``."""
    sender._stream_id = stream_id


def dtls_bytes_received(transport: RTCDtlsTransport) -> int:
    """Bytes of every datagram ``transport`` has received, before decryption (aiortc's
    getStats reports RTP senders and receivers only, not a data channel's transport).
    Hook: ``RTCDtlsTransport._get_stats``."""
    stats = transport._get_stats()
    return sum(int(s.bytesReceived) for s in stats.values())


def sender_rtt(sender: RTCRtpSender) -> float | None:
    """Smoothed round-trip time to the subscriber, from its receiver reports.
    Hook: ``_RTCRtpSender__rtt``."""
    return sender._RTCRtpSender__rtt  # type: ignore[attr-defined,no-any-return]


def _decoder_worker(
    loop: asyncio.AbstractEventLoop,
    input_q: queue.Queue[Any],
    output_q: asyncio.Queue[Any],
    decode_error: threading.Event,
) -> None:
    if isinstance(input_q, InlinePassthrough):
        return  # frames reach the track on the event loop; this thread has nothing to do
    _original_decoder_worker(loop, input_q, output_q, decode_error)


class InlinePassthrough:
    """Stands in for a receiver's decoder queue. aiortc puts each reassembled frame here from
    its RTP handler, on the event loop; the frame goes to the track as an ``av.Packet`` at once.

    aiortc hands frames to a decoder thread, which hands them back with
    ``call_soon_threadsafe``: a lock, a thread wake-up and a self-pipe write per frame, about a
    tenth of the relay's loop (docs/benchmarks.md). Passthrough has nothing to do off the loop.
    """

    def __init__(self, output_q: asyncio.Queue[Any]) -> None:
        self._output_q = output_q
        self._codec: Any = None

    def put(self, task: tuple[Any, JitterFrame] | None) -> None:
        """Must never raise: aiortc's RTP handler would drop the transport's packet."""
        if task is None:  # the receiver stopped: end the track
            self._output_q.put_nowait(None)
            return
        try:
            self._codec = task[0]
            packet = to_packet(*task)
            if packet is not None:
                self._output_q.put_nowait(packet)
        except Exception:  # noqa: BLE001 - see docstring
            logger.exception("passthrough dropped a frame")

    def put_late(self, frame: JitterFrame, pts: int | None) -> None:
        """A retransmitted audio packet whose place the call has passed, at ``pts`` (older
        than the last frame's: the relay hands it to the recording only). aiortc's timestamp
        mapper must not see it (it would take the step back for a wrap), so the pts comes
        from :func:`rtp_to_pts`. Must never raise, as :meth:`put`."""
        if pts is None or self._codec is None:
            return
        try:
            packet = to_packet(self._codec, JitterFrame(data=frame.data, timestamp=pts))
            if packet is not None:
                self._output_q.put_nowait(packet)
        except Exception:  # noqa: BLE001
            logger.exception("passthrough dropped a late frame")


def to_packet(codec: Any, encoded_frame: JitterFrame) -> av.Packet | None:
    """An encoded frame as an ``av.Packet`` (pts = RTP time since the first frame)."""
    data = encoded_frame.data
    if not data:
        return None
    packet = av.Packet(data)
    packet.pts = packet.dts = encoded_frame.timestamp
    packet.time_base = Fraction(1, codec.clockRate)
    # is_corrupt: the frame follows a loss upstream (a video frame refers to a lost one; an
    # audio packet has a hole before it, unless a late retransmission fills it)
    packet.is_corrupt = bool(getattr(encoded_frame, "discontinuity", False))
    if codec.mimeType.lower().startswith("video/"):
        packet.is_keyframe = vp8.is_keyframe(data)
    else:
        packet.is_keyframe = True
    return packet


def ice_path(pc: RTCPeerConnection) -> str | None:
    """How the peer of ``pc`` reaches this server: the type of the remote candidate of the
    selected ICE pair (``host``, ``srflx``, ``prflx``, or ``relay``: through the peer's TURN
    server); None before ICE has selected a pair. aiortc reports no candidate-pair stats.
    Hook: ``RTCIceTransport._connection`` (aioice's Connection) and its ``_nominated`` pairs."""
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport or transceiver.sender.transport
        connection = getattr(dtls.transport, "_connection", None) if dtls else None
        pair = connection._nominated.get(1) if connection is not None else None
        if pair is not None:
            return str(pair.remote_candidate.type)
    return None
