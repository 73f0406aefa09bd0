"""The relay's queue policy, with real VP8 and Opus-sized packets."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import av
import pytest
from aiortc.mediastreams import AudioStreamTrack

from improv_capture.media.relay import KeyframeRequester, Publication, RelayTrack
from tests.media import EncodedVideoTrack, encode_vp8_clip

pytestmark = pytest.mark.unit


def vp8_packets() -> list[av.Packet]:
    packets = []
    for i, data in enumerate(encode_vp8_clip(30)):
        packet = av.Packet(data)
        packet.pts, packet.time_base = i * 3000, Fraction(1, 90000)
        packet.is_keyframe = data[0] & 1 == 0
        packets.append(packet)
    return packets


async def test_a_new_video_subscriber_starts_at_a_keyframe() -> None:
    packets = vp8_packets()
    requests: list[int] = []
    track = RelayTrack("video", capacity=100, request_keyframe=lambda: requests.append(1))
    for packet in packets[1:]:  # the clip's first keyframe is missed
        track.push(packet)
    first = await track.recv()
    assert first.is_keyframe and first.pts == packets[15].pts  # gop of 15
    assert track.packets_dropped == 14
    # waiting for its first keyframe is not falling behind: no request per dropped packet
    # (the publication asks once, when the subscriber joins)
    assert requests == []


async def test_a_new_video_subscriber_asks_the_publisher_for_a_keyframe() -> None:
    asked: list[str] = []

    async def send() -> None:
        asked.append("keyframe")

    video = Publication("p1", EncodedVideoTrack(encode_vp8_clip(30)), KeyframeRequester(send, 10), 100)
    video.subscribe()
    await asyncio.sleep(0)  # the request goes out as a task
    assert asked == ["keyframe"]
    audio = Publication("p1", AudioStreamTrack(), KeyframeRequester(send, 10), 100)
    audio.subscribe()
    await asyncio.sleep(0)
    assert asked == ["keyframe"]  # audio needs none


async def test_a_slow_video_subscriber_drops_to_the_next_keyframe() -> None:
    packets = vp8_packets()
    requests: list[int] = []
    track = RelayTrack("video", capacity=5, request_keyframe=lambda: requests.append(1))
    for packet in packets[:6]:  # nobody drains: the sixth packet overflows
        track.push(packet)
    assert track.queued == 0 and track.waiting_for_keyframe and requests == [1]
    for packet in packets[6:16]:
        track.push(packet)
    assert track.queued == 1  # only the keyframe at 15 is kept
    assert (await track.recv()).pts == packets[15].pts


async def test_a_slow_audio_subscriber_loses_its_oldest_packets() -> None:
    track = RelayTrack("audio", capacity=3, request_keyframe=lambda: None)
    for i in range(5):
        packet = av.Packet(b"\xfc" + bytes([i]))
        packet.pts = i * 960
        track.push(packet)
    assert [(await track.recv()).pts for _ in range(3)] == [2 * 960, 3 * 960, 4 * 960]
    assert track.packets_dropped == 2


async def test_keyframe_requests_are_coalesced() -> None:
    sent: list[float] = []

    async def send() -> None:
        sent.append(asyncio.get_running_loop().time())

    request = KeyframeRequester(send, interval=0.2)
    for _ in range(10):
        request()
    await asyncio.sleep(0.05)
    assert len(sent) == 1  # the first goes out at once, the rest wait for the interval
    await asyncio.sleep(0.3)
    assert len(sent) == 2 and sent[1] - sent[0] >= 0.19


async def test_a_keyframe_request_now_goes_past_the_interval() -> None:
    """A take marker's request (rooms/recording.py) does not wait for the interval, and the
    request that was waiting goes with it."""
    sent: list[float] = []

    async def send() -> None:
        sent.append(asyncio.get_running_loop().time())

    request = KeyframeRequester(send, interval=0.2)
    request()
    request()  # waits for the interval
    await asyncio.sleep(0.02)
    request.now()
    await asyncio.sleep(0.02)
    assert len(sent) == 2 and sent[1] - sent[0] < 0.1
    await asyncio.sleep(0.3)
    assert len(sent) == 2  # the waiting one went with it
