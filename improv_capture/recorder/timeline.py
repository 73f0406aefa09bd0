"""Placing captured frames on the session timeline (t = 0 at the recording start).

A browser stamps audio and video with RTP times on one capture clock and sends RTCP sender
reports pairing that clock's NTP time with an RTP time. Through the reports, every frame gets
its capture instant on the sender's clock; the audio and video of one sender then line up
exactly as the sender captured them, which is what any WebRTC receiver lip-syncs to. One
offset per sender moves its clock onto the server's: the smallest (arrival - capture time)
over its packets is the offset plus the smallest one-way delay, which we take as half the
round-trip time. A track with no sender report falls back to its own arrival times.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass
class ClockLog:
    """What a track's clock sidecar holds."""

    clock_rate: int
    packets: list[tuple[int, float]] = field(default_factory=list)  # (pts, arrival)
    reports: list[tuple[int, float, float]] = field(default_factory=list)  # (pts, ntp_s, arrival)
    gaps: list[tuple[float, float, str, int]] = field(default_factory=list)  # arrivals, why, dropped


class SenderClock:
    """RTP pts -> sender capture time (seconds), through the nearest sender report."""

    def __init__(self, clock_rate: int, reports: list[tuple[int, float, float]]) -> None:
        ordered = sorted({(pts, ntp) for pts, ntp, _ in reports})
        self._pts = [pts for pts, _ in ordered]
        self._ntp = [ntp for _, ntp in ordered]
        self._rate = clock_rate

    def __bool__(self) -> bool:
        return bool(self._pts)

    def __call__(self, pts: float) -> float:
        i = bisect.bisect_left(self._pts, pts)
        if i == len(self._pts) or (i > 0 and pts - self._pts[i - 1] < self._pts[i] - pts):
            i -= 1
        return self._ntp[i] + (pts - self._pts[i]) / self._rate


@dataclass
class TrackMapping:
    """pts -> session time for one track."""

    method: str  # sender_reports | arrival
    clock_rate: int
    sender_clock: SenderClock | None
    offset_s: float  # sender clock (or pts/clock_rate for arrival) -> server clock
    started_unix: float

    def __call__(self, pts: float) -> float:
        if self.sender_clock is not None:
            return self.sender_clock(pts) + self.offset_s - self.started_unix
        return pts / self.clock_rate + self.offset_s - self.started_unix


def sender_offset(logs: list[ClockLog], rtt_s: float | None) -> float | None:
    """Sender clock -> server clock, from every track of one sender that has reports."""
    best: float | None = None
    for log in logs:
        clock = SenderClock(log.clock_rate, log.reports)
        if not clock:
            continue
        for pts, arrival in log.packets:
            delay = arrival - clock(pts)
            if best is None or delay < best:
                best = delay
    if best is None:
        return None
    return best - (rtt_s or 0.0) / 2


def track_mappings(
    logs: dict[str, ClockLog], rtt_s: float | None, started_unix: float
) -> dict[str, TrackMapping]:
    offset = sender_offset(list(logs.values()), rtt_s)
    mappings = {}
    for kind, log in logs.items():
        clock = SenderClock(log.clock_rate, log.reports)
        if clock and offset is not None:
            mappings[kind] = TrackMapping("sender_reports", log.clock_rate, clock, offset, started_unix)
        else:
            base = min((a - p / log.clock_rate for p, a in log.packets), default=started_unix)
            base -= (rtt_s or 0.0) / 2
            mappings[kind] = TrackMapping("arrival", log.clock_rate, None, base, started_unix)
    return mappings
