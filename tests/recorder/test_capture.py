"""The capture stage's policy when the disk cannot keep up: drop, record the gap, resync."""

from __future__ import annotations

import json
import threading
from fractions import Fraction
from pathlib import Path

import av
import pytest

from improv_capture.recorder.capture import KEYFRAME_REASK_S, SessionWriter
from improv_capture.recorder.synthetic import vp8_loop

pytestmark = pytest.mark.unit


def test_overflow_becomes_a_gap_and_video_restarts_at_a_keyframe(tmp_path: Path) -> None:
    writer = SessionWriter(tmp_path / "ses", queue_size=8)
    gate = threading.Event()
    handle = writer._handle
    writer._handle = lambda item: (gate.wait(10), handle(item))  # type: ignore[method-assign]
    requests: list[int] = []
    recorder = writer.track(("p1", "s001", "video"), lambda: requests.append(1))
    assert requests == [1]  # video starts by asking for a keyframe
    frames = vp8_loop(64, 48, frames=30)

    def send(i: int) -> None:
        packet = av.Packet(frames[i % 30])
        packet.pts, packet.time_base = i * 3000, Fraction(1, 90000)
        packet.is_keyframe = i % 30 == 0
        recorder.packet(packet, 100.0 + i / 30)

    for i in range(12):  # the disk is stuck: one item in hand, 8 queued, then overflow
        send(i)
    assert len(requests) == 2 and recorder.waiting_for_keyframe
    gate.set()
    for i in range(12, 40):  # the disk keeps up again
        while writer._queue.qsize():
            threading.Event().wait(0.005)
        send(i)
    recorder.close()
    writer.close()
    lines = [json.loads(x) for x in (tmp_path / "ses/capture/p1/s001.video.clock.jsonl").open()]
    written = [r[1] for r in lines if r[0] == "p"]
    (gap,) = [r for r in lines if r[0] == "gap"]
    assert gap[3] == "recorder queue full" and gap[4] > 0
    before = written.index(30 * 3000)  # 8 queued, plus the one in the writer's hands if taken
    assert before in (8, 9) and written[:before] == [i * 3000 for i in range(before)]
    assert written[before:] == [i * 3000 for i in range(30, 40)]  # from the next keyframe on


def test_video_waiting_for_a_keyframe_asks_again_until_one_comes(tmp_path: Path) -> None:
    """A first request lost (or sent before the browser's encoder ran): the recorder asks
    again every KEYFRAME_REASK_S of frames that cannot start the file, and stops once one can."""
    writer = SessionWriter(tmp_path / "ses", queue_size=64)
    requests: list[float] = []
    frames = vp8_loop(64, 48, frames=30)
    arrival = [100.0]
    recorder = writer.track(("p1", "s001", "video"), lambda: requests.append(arrival[0]))
    for i in range(1, 61):  # two seconds of inter frames, their keyframe never sent
        arrival[0] = 100.0 + i / 30
        packet = av.Packet(frames[i % 30 or 1])
        packet.pts, packet.time_base = i * 3000, Fraction(1, 90000)
        recorder.packet(packet, arrival[0])
    asked = requests[1:]
    assert len(asked) == int(2.0 // KEYFRAME_REASK_S) - 1, requests  # the first frame starts the clock
    assert all(b - a >= KEYFRAME_REASK_S - 1e-9 for a, b in zip(asked, asked[1:])), requests
    key = av.Packet(frames[0])
    key.pts, key.time_base, key.is_keyframe = 61 * 3000, Fraction(1, 90000), True
    recorder.packet(key, 102.1)
    for i in range(62, 92):  # the keyframe came: no more requests
        packet = av.Packet(frames[i % 30 or 1])
        packet.pts, packet.time_base = i * 3000, Fraction(1, 90000)
        recorder.packet(packet, 100.0 + i / 30)
    assert len(requests) == 1 + len(asked) and not recorder.waiting_for_keyframe
    recorder.close()
    writer.close()
