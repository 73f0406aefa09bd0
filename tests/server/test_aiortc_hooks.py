"""One test per reach into aiortc's internals (media/aiortc_hooks.py): an aiortc upgrade
that moves any of them fails here, by name."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from fractions import Fraction
from importlib.metadata import version

import av
import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, rtcrtpreceiver
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from improv_capture.media import aiortc_hooks
from improv_capture.media.connections import rtc_configuration
from tests.helpers import wait_for_async
from tests.media import EncodedVideoTrack, encode_vp8_clip

pytestmark = pytest.mark.process  # most tests connect two aiortc peers over loopback


@pytest.fixture(autouse=True)
def hooks() -> None:
    aiortc_hooks.install()
    aiortc_hooks.restrict_ice_addresses(["127.0.0.1"])


class Pair:
    """A real aiortc sender and receiver connected over loopback."""

    def __init__(self) -> None:
        self.clip = encode_vp8_clip()
        self.tx = RTCPeerConnection(rtc_configuration([]))
        self.rx = RTCPeerConnection(rtc_configuration([]))
        self.track = EncodedVideoTrack(self.clip)
        self.sender: RTCRtpSender = self.tx.addTrack(self.track)
        self.receiver: RTCRtpReceiver | None = None
        self.passthrough = True

        @self.rx.on("track")
        def on_track(track: object) -> None:
            self.receiver = self.rx.getTransceivers()[0].receiver
            if self.passthrough:
                aiortc_hooks.enable_passthrough(self.receiver)

    async def connect(self) -> None:
        await self.tx.setLocalDescription(await self.tx.createOffer())
        await self.rx.setRemoteDescription(self.tx.localDescription)
        await self.rx.setLocalDescription(await self.rx.createAnswer())
        await self.tx.setRemoteDescription(self.rx.localDescription)

    async def close(self) -> None:
        await self.tx.close()
        await self.rx.close()


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    p = Pair()
    try:
        yield p
    finally:
        await p.close()


def test_aiortc_is_the_pinned_version() -> None:
    assert version("aiortc") == aiortc_hooks.AIORTC_VERSION


def test_install_replaces_the_decoder_worker() -> None:
    assert rtcrtpreceiver.decoder_worker is aiortc_hooks._decoder_worker


async def test_opus_offers_carry_inband_fec() -> None:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio")
    sdp = (await pc.createOffer()).sdp
    await pc.close()
    assert re.search(r"a=fmtp:\d+ .*useinbandfec=1", sdp), sdp


async def test_restrict_ice_addresses_gathers_only_loopback() -> None:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    candidates = re.findall(r"a=candidate:\S+ \d \S+ \d+ (\S+) ", pc.localDescription.sdp)
    await pc.close()
    assert candidates and set(candidates) == {"127.0.0.1"}


async def test_passthrough_receiver_yields_the_encoded_frames(pair: Pair) -> None:
    await pair.connect()
    assert pair.receiver is not None
    track = pair.receiver.track
    packets = [await asyncio.wait_for(track.recv(), 5) for _ in range(20)]
    first = pair.clip.index(bytes(packets[0]))
    for i, packet in enumerate(packets):
        assert bytes(packet) == pair.clip[(first + i) % len(pair.clip)]
        assert packet.time_base == Fraction(1, 90000)
        assert packet.pts == packets[0].pts + 3000 * i
        assert packet.is_keyframe == (bytes(packet)[0] & 1 == 0)
    assert any(p.is_keyframe for p in packets)
    # the hook knows the media SSRC, which the receiver also reports publicly
    ssrcs = {s.source for s in pair.receiver.getSynchronizationSources()}
    assert aiortc_hooks.media_ssrc(pair.receiver) in ssrcs


async def test_passthrough_frames_reach_the_track_on_the_event_loop(pair: Pair) -> None:
    """Hook: ``_RTCRtpReceiver__decoder_queue``. aiortc still starts its decoder thread, which
    sees our stand-in and ends at once; every frame is put on the track by the RTP handler."""
    await pair.connect()
    assert pair.receiver is not None
    packet = await asyncio.wait_for(pair.receiver.track.recv(), 5)
    assert packet.pts is not None and len(bytes(packet)) > 0
    stand_in = pair.receiver._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
    assert isinstance(stand_in, aiortc_hooks.InlinePassthrough)
    thread = pair.receiver._RTCRtpReceiver__decoder_thread  # type: ignore[attr-defined]
    assert thread is not None and not thread.is_alive()
    await pair.receiver.stop()  # aiortc puts None: the track ends
    while (item := await asyncio.wait_for(pair.receiver.track._queue.get(), 5)) is not None:
        assert isinstance(item, av.Packet)


async def test_passthrough_is_refused_once_the_receiver_runs(pair: Pair) -> None:
    await pair.connect()
    assert pair.receiver is not None
    await asyncio.wait_for(pair.receiver.track.recv(), 5)
    with pytest.raises(RuntimeError):
        aiortc_hooks.enable_passthrough(pair.receiver)


async def test_other_receivers_keep_decoding(pair: Pair) -> None:
    pair.passthrough = False
    await pair.connect()
    assert pair.receiver is not None
    frame = await asyncio.wait_for(pair.receiver.track.recv(), 5)
    assert (frame.width, frame.height) == (320, 240)


async def test_pli_from_the_relay_reaches_the_sender_keyframe_hook(pair: Pair) -> None:
    requests: list[float] = []
    aiortc_hooks.on_keyframe_request(pair.sender, lambda: requests.append(1.0))
    await pair.connect()
    assert pair.receiver is not None
    await asyncio.wait_for(pair.receiver.track.recv(), 5)
    before = len(requests)
    assert await aiortc_hooks.send_pli(pair.receiver)
    await wait_for_async(lambda: len(requests) > before, 1, "the keyframe request", every=0.02)


async def test_set_stream_id_puts_the_sender_in_its_own_stream() -> None:
    pc = RTCPeerConnection()
    audio, video = pc.addTransceiver("audio"), pc.addTransceiver("video")
    aiortc_hooks.set_stream_id(audio.sender, "perf-a.1")
    aiortc_hooks.set_stream_id(video.sender, "perf-a.1")
    sdp = (await pc.createOffer()).sdp
    await pc.close()
    assert len(re.findall(r"a=msid:perf-a\.1 ", sdp)) == 2


async def test_sender_rtt_comes_from_receiver_reports(pair: Pair) -> None:
    await pair.connect()
    assert aiortc_hooks.sender_rtt(pair.sender) is None
    await wait_for_async(lambda: aiortc_hooks.sender_rtt(pair.sender) is not None, 6,
                         "a receiver report")
    rtt = aiortc_hooks.sender_rtt(pair.sender)
    assert rtt is not None and 0 <= rtt < 0.5


async def test_ice_path_is_the_remote_candidate_type_of_the_selected_pair(pair: Pair) -> None:
    """Loopback host candidates here; `relay` through coturn: tests/network/test_turn.py."""
    assert aiortc_hooks.ice_path(pair.rx) is None
    await pair.connect()
    await wait_for_async(lambda: aiortc_hooks.ice_path(pair.rx) is not None, 6, "a selected pair")
    assert aiortc_hooks.ice_path(pair.rx) == aiortc_hooks.ice_path(pair.tx) == "host"


def _rtp(seq: int) -> RtpPacket:
    packet = RtpPacket(payload_type=97, sequence_number=seq, timestamp=seq * 3000)
    packet.ssrc = 1234
    return packet


def test_relay_nack_generator_asks_again_until_it_gives_up() -> None:
    """Hook: ``_RTCRtpReceiver__nack_generator`` (installed by enable_passthrough and
    skip_lost_video). aiortc's own asks once; a lost NACK or retransmission lost the frame."""
    nacks = aiortc_hooks.RelayNackGenerator(retry_s=0.05, give_up_s=0.3, max_gap=128)
    assert nacks.add(_rtp(1)) is False
    assert nacks.add(_rtp(3)) is True and nacks.missing == {2}  # seen missing: asked
    assert nacks.add(_rtp(4)) is False  # asked a moment ago
    time.sleep(0.06)
    assert nacks.add(_rtp(5)) is True and nacks.missing == {2}  # still missing: asked again
    time.sleep(0.3)
    assert nacks.add(_rtp(6)) is False and nacks.missing == set()  # too late to repair
    # an outage: more lost at once than the jitter buffer holds is not asked for at all
    assert nacks.add(_rtp(6 + 500)) is False and nacks.missing == set()
    assert nacks.add(_rtp(6 + 502)) is True and nacks.missing == {6 + 501}


async def test_passthrough_receivers_get_the_relay_nack_generator(pair: Pair) -> None:
    await pair.connect()
    assert pair.receiver is not None
    generator = pair.receiver._RTCRtpReceiver__nack_generator  # type: ignore[attr-defined]
    assert isinstance(generator, aiortc_hooks.RelayNackGenerator)
    await asyncio.wait_for(pair.receiver.track.recv(), 5)  # and media flows through it


async def test_late_audio_reaches_the_track_at_its_own_pts() -> None:
    """``InlinePassthrough.put_late``: the pts comes from the caller (``rtp_to_pts``), never
    from aiortc's timestamp mapper, which would take the step back for a wrap."""
    output: asyncio.Queue[av.Packet] = asyncio.Queue()
    passthrough = aiortc_hooks.InlinePassthrough(output)
    opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2)
    passthrough.put((opus, JitterFrame(data=b"\x78\x01", timestamp=1920)))
    passthrough.put_late(JitterFrame(data=b"\x78\x02", timestamp=123456), pts=960)
    first, late = output.get_nowait(), output.get_nowait()
    assert (first.pts, late.pts, bytes(late)) == (1920, 960, b"\x78\x02")
    assert late.time_base == Fraction(1, 48000)


async def test_receiver_reports_reach_the_downlink_hook(pair: Pair) -> None:
    losses: list[float] = []
    aiortc_hooks.on_receiver_report(pair.sender, losses.append)
    await pair.connect()
    await wait_for_async(lambda: losses, 6, "a receiver report")
    assert all(0.0 <= loss <= 1.0 for loss in losses)
    # aiortc's own handling still runs: the RTT comes from the same reports
    await wait_for_async(lambda: aiortc_hooks.sender_rtt(pair.sender) is not None, 6, "an RTT")


async def test_skip_lost_video_gives_a_decoding_receiver_the_relay_buffer(pair: Pair) -> None:
    pair.passthrough = False

    @pair.rx.on("track")
    def on_track(track: object) -> None:
        aiortc_hooks.skip_lost_video(pair.rx.getTransceivers()[0].receiver)

    await pair.connect()
    assert pair.receiver is not None
    buffer = pair.receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
    assert isinstance(buffer, aiortc_hooks.RelayJitterBuffer) and buffer.keyframe_after_loss
    assert isinstance(pair.receiver._RTCRtpReceiver__nack_generator,  # type: ignore[attr-defined]
                      aiortc_hooks.RelayNackGenerator)
    frame = await asyncio.wait_for(pair.receiver.track.recv(), 5)  # still decoding
    assert (frame.width, frame.height) == (320, 240)


async def test_dtls_bytes_received_counts_a_data_channel_s_datagrams() -> None:
    """The network check's wire count (api/network_probe.py)."""
    tx, rx = RTCPeerConnection(rtc_configuration([])), RTCPeerConnection(rtc_configuration([]))
    try:
        channel = tx.createDataChannel("probe")
        got: list[bytes] = []
        rx.on("datachannel", lambda c: c.on("message", got.append))
        await tx.setLocalDescription(await tx.createOffer())
        await rx.setRemoteDescription(tx.localDescription)
        await rx.setLocalDescription(await rx.createAnswer())
        await tx.setRemoteDescription(rx.localDescription)
        await wait_for_async(lambda: channel.readyState == "open", 10, "the channel")
        assert rx.sctp is not None
        before = aiortc_hooks.dtls_bytes_received(rx.sctp.transport)
        channel.send(b"\0" * 50_000)
        await wait_for_async(lambda: got, 10, "the message")
        assert 50_000 < aiortc_hooks.dtls_bytes_received(rx.sctp.transport) - before < 60_000
    finally:
        await tx.close()
        await rx.close()


class SlowEncodedVideoTrack(EncodedVideoTrack):
    """A camera whose frames leave 100 ms after their capture (a slow encoder, a busy loop)."""

    def __init__(self, frames: list[bytes]) -> None:
        super().__init__(frames)
        self.captured_at: float | None = None
        self.captures: dict[int, float] = {}

    async def recv(self) -> av.Packet:
        packet = await super().recv()
        self.captured_at = self.captures[int(packet.pts)] = time.time()
        await asyncio.sleep(0.1)
        return packet


async def test_stamp_reports_at_capture_pairs_rtp_time_with_the_capture() -> None:
    pair = Pair()
    track = SlowEncodedVideoTrack(pair.clip)
    pair.sender.replaceTrack(track)
    aiortc_hooks.stamp_reports_at_capture(pair.sender, lambda: track.captured_at)
    reports: list[tuple[int, float]] = []

    @pair.rx.on("track")
    def on_track(_: object) -> None:
        assert pair.receiver is not None
        aiortc_hooks.on_sender_report(pair.receiver, lambda pts, unix, _: reports.append((pts, unix)))

    try:
        await pair.connect()
        await wait_for_async(lambda: len(reports) >= 2, 8, "two sender reports")
    finally:
        await pair.close()
    for pts, unix in reports:  # the receiver's pts count from the first frame, as the track's
        assert abs(unix - track.captures[pts]) < 0.005, (pts, unix, track.captures.get(pts))
