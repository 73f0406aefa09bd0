"""The relay's jitter buffer (RelayJitterBuffer, improv_capture/media/aiortc_hooks.py): whole
frames out at their marker, holes waited for within a timeout then skipped and flagged, audio
never held back. RTP packets built by hand, no connection."""

from __future__ import annotations

import pytest
from aiortc.rtp import RtpPacket

from improv_capture.media.aiortc_hooks import RelayJitterBuffer

pytestmark = pytest.mark.unit


def _rtp(seq: int, ts: int, payload: bytes, marker: bool = False) -> RtpPacket:
    packet = RtpPacket(payload_type=97, marker=int(marker), sequence_number=seq, timestamp=ts)
    packet.ssrc = 1234
    packet.payload = payload
    packet._data = payload[1:]  # what depayload() leaves: the VP8 bytes after the descriptor
    return packet


def test_jitter_buffer_releases_a_video_frame_at_its_marker() -> None:
    buffer = RelayJitterBuffer(capacity=128, is_video=True)
    assert buffer.add(_rtp(10, 3000, b"\x10AB")) == (False, None)
    pli, frame = buffer.add(_rtp(11, 3000, b"\x00CD", marker=True))
    assert frame is not None and frame.data == b"ABCD" and frame.timestamp == 3000
    assert frame.discontinuity is False
    assert buffer.media_ssrc == 1234


def test_jitter_buffer_skips_a_hole_that_was_not_repaired() -> None:
    buffer = RelayJitterBuffer(capacity=128, is_video=True, hole_timeout_s=0.0)
    assert buffer.add(_rtp(10, 3000, b"\x10AB"))[1] is None
    # packet 11 (end of frame 3000) and 12 (start of 6000) are lost: both frames are
    # broken; the next whole frame comes out, flagged so that subscribers resync
    pli, frame = buffer.add(_rtp(13, 6000, b"\x00EF", marker=True))
    assert frame is None
    pli, frame = buffer.add(_rtp(14, 9000, b"\x10GH", marker=True))
    assert frame is not None and frame.data == b"GH" and frame.discontinuity is True
    pli, frame = buffer.add(_rtp(15, 12000, b"\x10IJ", marker=True))
    assert frame is not None and frame.discontinuity is False


def test_jitter_buffer_waits_for_a_retransmission_within_the_timeout() -> None:
    buffer = RelayJitterBuffer(capacity=128, is_video=True, hole_timeout_s=10.0)
    assert buffer.add(_rtp(10, 3000, b"\x10AB"))[1] is None
    assert buffer.add(_rtp(12, 6000, b"\x10EF", marker=True))[1] is None
    pli, frame = buffer.add(_rtp(11, 3000, b"\x00CD", marker=True))  # NACK repaired it
    assert frame is not None and frame.data == b"ABCD" and frame.discontinuity is False


def test_jitter_buffer_releases_audio_without_prefetch_or_waiting() -> None:
    buffer = RelayJitterBuffer(capacity=16, is_video=False, hole_timeout_s=0.0)
    pli, frame = buffer.add(_rtp(1, 960, b"\x00op"))
    assert frame is not None and frame.data == b"op"
    # packet 2 is lost: audio has no NACK, so packet 3 goes out at once
    pli, frame = buffer.add(_rtp(3, 2880, b"\x00us"))
    assert frame is not None and frame.data == b"us"
