"""A subscriber's downlink (media/downlink.py): its receiver reports pause the videos sent to
it when its link is overloaded, and bring them back one at a time, each from a keyframe, with
a longer wait after each failed try. Real relay tracks; the clock is the test's."""

from __future__ import annotations

from fractions import Fraction

import av
import pytest

from improv_capture.media.downlink import FIRST_WAIT_S, PROBE_S, DownlinkGuard
from improv_capture.media.relay import RelayTrack

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def frame(keyframe: bool) -> av.Packet:
    packet = av.Packet(b"\x00" * 10 if keyframe else b"\x01" * 10)
    packet.pts, packet.time_base, packet.is_keyframe = 0, Fraction(1, 90000), keyframe
    return packet


def tracks(count: int) -> tuple[list[RelayTrack], list[int]]:
    requests: list[int] = []
    made = [RelayTrack("video", 120, lambda n=n: requests.append(n)) for n in range(count)]
    for track in made:
        track.push(frame(keyframe=True))
    requests.clear()
    return made, requests


def test_an_overloaded_link_freezes_every_video_and_queues_nothing() -> None:
    clock = Clock()
    guard = DownlinkGuard(clock)
    videos, requests = tracks(3)
    audio = RelayTrack("audio", 50, lambda: None)
    for track in [*videos, audio]:
        guard.add(track)
    guard.report(0.02)
    assert not any(t.paused for t in videos)
    guard.report(0.6)  # most of what it was sent was lost
    assert all(t.paused and t.queued == 0 for t in videos) and guard.overloads == 1
    for track in videos:
        track.push(frame(keyframe=False))
        assert track.queued == 0  # nothing piles up for a link that cannot take it
    audio.push(frame(keyframe=True))
    assert audio.queued == 1 and not audio.paused  # the sound goes on
    assert requests == []


def test_videos_come_back_one_at_a_time_from_a_keyframe() -> None:
    clock = Clock()
    guard = DownlinkGuard(clock)
    videos, requests = tracks(2)
    for track in videos:
        guard.add(track)
    guard.report(0.5)
    clock.now = 0.5
    guard.report(0.0)  # clear from here on
    clock.now = 0.5 + FIRST_WAIT_S
    guard.report(0.0)
    first, second = videos
    assert not first.paused and second.paused
    assert first.waiting_for_keyframe and requests == [0]  # from a keyframe, asked for
    first.push(frame(keyframe=False))
    assert first.queued == 0
    first.push(frame(keyframe=True))
    assert first.queued == 1
    clock.now += PROBE_S  # the first one kept the link clear: it stays; the next one's turn
    guard.report(0.0)
    clock.now += FIRST_WAIT_S
    guard.report(0.0)
    assert not first.paused and not second.paused and requests == [0, 1]


def test_a_video_that_overloads_the_link_again_waits_longer() -> None:
    clock = Clock()
    guard = DownlinkGuard(clock)
    videos, _ = tracks(1)
    guard.add(videos[0])
    guard.report(0.5)
    guard.report(0.0)
    clock.now = FIRST_WAIT_S
    guard.report(0.0)
    assert not videos[0].paused
    clock.now += 1.0
    guard.report(0.4)  # the try failed
    assert videos[0].paused and guard.wait_s == 2 * FIRST_WAIT_S
    guard.report(0.0)
    clock.now += FIRST_WAIT_S
    guard.report(0.0)
    assert videos[0].paused  # not yet: it waits twice as long now
    clock.now += FIRST_WAIT_S
    guard.report(0.0)
    assert not videos[0].paused


def test_a_keyframe_request_while_paused_asks_nothing_of_the_publisher() -> None:
    """A subscriber whose video is paused may still send PLIs (its decoder waits): the relay
    must not make the publisher send keyframes nobody will be sent."""
    videos, requests = tracks(1)
    videos[0].pause()
    videos[0].resync()
    assert requests == [] and not videos[0].waiting_for_keyframe
