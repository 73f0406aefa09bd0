"""The recorder's timeline: each sender's RTP clock mapped to wall time by its nearest sender
report, and arrival times where a track has no report."""

from __future__ import annotations

import pytest

from improv_capture.recorder.timeline import (
    ClockLog,
    SenderClock,
    sender_offset,
    track_mappings,
)

pytestmark = pytest.mark.unit


def test_sender_clock_uses_the_nearest_report() -> None:
    # the sender's clock runs 100 ppm fast against its RTP clock: nearest beats first
    reports = [(i * 90000, 1000.0 + i * 1.0001, 0.0) for i in range(30)]
    clock = SenderClock(90000, reports)
    assert clock(29 * 90000 + 4500) == pytest.approx(1000 + 29 * 1.0001 + 0.05, abs=1e-6)
    assert clock(0) == pytest.approx(1000.0)


def test_offset_and_arrival_fallback() -> None:
    video = ClockLog(90000, packets=[(i * 3000, 50.0 + i / 30 + 0.010) for i in range(90)],
                     reports=[(0, 10.0, 50.0)])
    audio = ClockLog(48000, packets=[(i * 960, 50.0 + i / 50 + 0.030) for i in range(150)])
    assert sender_offset([video, audio], rtt_s=0.004) == pytest.approx(40.010 - 0.002)
    mappings = track_mappings({"video": video, "audio": audio}, 0.004, started_unix=49.0)
    assert mappings["video"].method == "sender_reports"
    assert mappings["audio"].method == "arrival"
    assert mappings["video"](0) == pytest.approx(1.008)
    assert mappings["audio"](0) == pytest.approx(1.028)
