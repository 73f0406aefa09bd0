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


def test_jitter_buffer_flags_the_frame_released_right_after_a_jump() -> None:
    """An outage: the sender went on numbering packets the network lost, so the first packet
    back lies past the buffer's capacity. The frame it completes follows the hole (it refers
    to pictures that never came) and must be flagged, or the relay and the recorder pass on a
    frame no decoder can use."""
    buffer = RelayJitterBuffer(capacity=128, is_video=True, hole_timeout_s=10.0)
    assert buffer.add(_rtp(10, 3000, b"\x10AB", marker=True))[1] is not None
    assert buffer.add(_rtp(11, 6000, b"\x10CD"))[1] is None  # its end is lost in the outage
    pli, frame = buffer.add(_rtp(11 + 400, 96000, b"\x10EF", marker=True))
    assert pli is True
    assert frame is not None and frame.data == b"EF" and frame.discontinuity is True
    pli, frame = buffer.add(_rtp(11 + 401, 99000, b"\x10GH", marker=True))
    assert frame is not None and frame.discontinuity is False


def test_a_late_audio_retransmission_goes_to_the_recording_not_the_call() -> None:
    """Audio holes are skipped at once (the call never waits); a lost packet the sender sends
    again after that comes out through ``on_late``, never as a frame of the call."""
    buffer = RelayJitterBuffer(capacity=16, is_video=False, hole_timeout_s=0.0)
    late = []
    buffer.on_late = late.append
    assert buffer.add(_rtp(1, 960, b"\x00op"))[1] is not None
    _, frame = buffer.add(_rtp(3, 2880, b"\x00us"))  # 2 is lost: the call goes on
    assert frame is not None and frame.data == b"us" and frame.discontinuity is True
    assert buffer.add(_rtp(2, 1920, b"\x00re")) == (False, None)  # repaired, too late
    assert [(f.data, f.timestamp) for f in late] == [(b"re", 1920)]
    assert buffer.add(_rtp(2, 1920, b"\x00re")) == (False, None)  # a duplicate: once only
    assert len(late) == 1
    _, frame = buffer.add(_rtp(4, 3840, b"\x00ok"))
    assert frame is not None and frame.discontinuity is False


def test_a_burst_of_stale_packets_never_restarts_the_buffer() -> None:
    """After an outage a sender may resend packets far behind: aiortc would restart its
    buffer at the first one 100 behind and release old frames as new; they are dropped."""
    buffer = RelayJitterBuffer(capacity=128, is_video=True, hole_timeout_s=10.0)
    assert buffer.add(_rtp(1000, 3000, b"\x10AB", marker=True))[1] is not None
    assert buffer.add(_rtp(1001, 6000, b"\x10CD", marker=True))[1] is not None
    for seq in range(880, 900):  # 100 to 120 behind
        assert buffer.add(_rtp(seq, 1000, b"\x10ZZ", marker=True)) == (False, None)
    _, frame = buffer.add(_rtp(1002, 9000, b"\x10EF", marker=True))
    assert frame is not None and frame.data == b"EF" and frame.discontinuity is False


def test_a_decoding_receiver_asks_for_a_keyframe_after_a_skipped_hole() -> None:
    buffer = RelayJitterBuffer(capacity=128, is_video=True, hole_timeout_s=0.0,
                               keyframe_after_loss=True)
    assert buffer.add(_rtp(10, 3000, b"\x10AB", marker=True))[0] is False
    pli, frame = buffer.add(_rtp(12, 9000, b"\x10EF", marker=True))  # 11 lost, given up
    assert frame is not None and frame.discontinuity is True and pli is True
    pli, frame = buffer.add(_rtp(13, 12000, b"\x10GH", marker=True))
    assert frame is not None and frame.discontinuity is False and pli is False


def test_audio_lost_past_the_buffer_is_flagged_too() -> None:
    """20 audio packets lost at once: aiortc starts over at the next one without a word
    (it flags only video); the recorder must still learn that it follows a loss."""
    buffer = RelayJitterBuffer(capacity=16, is_video=False, hole_timeout_s=0.0)
    assert buffer.add(_rtp(1, 960, b"\x00op"))[1] is not None
    _, frame = buffer.add(_rtp(22, 22 * 960, b"\x00us"))
    assert frame is not None and frame.data == b"us" and frame.discontinuity is True
