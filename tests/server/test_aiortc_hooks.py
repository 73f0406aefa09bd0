"""One test per reach into aiortc's internals (media/aiortc_hooks.py): an aiortc upgrade
that moves any of them fails here, by name."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from fractions import Fraction
from importlib.metadata import version

import av
import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, rtcrtpreceiver

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
