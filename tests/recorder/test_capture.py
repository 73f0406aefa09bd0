"""The capture stage's policy when the disk cannot keep up: drop, record the gap, resync."""

from __future__ import annotations

import json
import threading
from fractions import Fraction
from pathlib import Path

import av
import pytest

from improv_capture.recorder.capture import SessionWriter
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
