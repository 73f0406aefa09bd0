"""What one subscriber's downlink can take.

The relay forwards each publisher's packets as they are: it cannot send one subscriber a
smaller stream. A subscriber whose link carries less than the room sends it would lose a
share of every stream at random, and a receiver waiting for lost packets stalls, then shows
late, broken pictures. Instead, when its receiver reports say it lost more than
``OVERLOAD_LOSS`` of what it was sent, every video sent to it is paused (the pictures freeze,
the sound goes on, nothing queues), and once its reports have been clear for a while the
videos are resumed one at a time, each from a keyframe. A video that brings the loss back is
paused again, and the wait before the next try doubles (up to ``MAX_WAIT_S``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from improv_capture.media.relay import RelayTrack

#: A receiver report losing more than this (fraction of the packets of its interval) means
#: the link is overloaded: a link that merely loses packets at random loses far less.
OVERLOAD_LOSS = 0.25
#: Reports at or under this are clear.
CLEAR_LOSS = 0.05
#: Clear this long before the first paused video is tried again (doubled after a failed try).
FIRST_WAIT_S = 2.0
MAX_WAIT_S = 30.0
#: A video tried again that keeps the reports clear this long stays.
PROBE_S = 3.0


class DownlinkGuard:
    """Pauses and resumes the video forwards of one subscriber from its receiver reports."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._active: list[RelayTrack] = []
        self._paused: list[RelayTrack] = []
        self._probe: tuple[RelayTrack, float] | None = None
        self._clear_since: float | None = None
        self.wait_s = FIRST_WAIT_S
        #: times everything was paused (for the API's receiving stats and tests)
        self.overloads = 0

    def add(self, track: RelayTrack) -> None:
        if track.kind == "video":
            self._active.append(track)

    def remove(self, track: RelayTrack) -> None:
        for tracks in (self._active, self._paused):
            if track in tracks:
                tracks.remove(track)
        if self._probe is not None and self._probe[0] is track:
            self._probe = None

    def report(self, fraction_lost: float) -> None:
        """One receiver report block (any track of this subscriber)."""
        now = self._clock()
        if fraction_lost > OVERLOAD_LOSS:
            self._overloaded()
        elif fraction_lost > CLEAR_LOSS:
            self._clear_since = None
        else:
            self._clear(now)

    def _overloaded(self) -> None:
        self._clear_since = None
        if self._probe is not None:
            track = self._probe[0]
            self._probe = None
            self._pause(track)
            self.wait_s = min(self.wait_s * 2, MAX_WAIT_S)
        elif self._active:
            self.overloads += 1
            for track in list(self._active):
                self._pause(track)

    def _clear(self, now: float) -> None:
        if self._clear_since is None:
            self._clear_since = now
        if self._probe is not None:
            if now - self._probe[1] >= PROBE_S:
                self._probe = None
                self.wait_s = FIRST_WAIT_S
                self._clear_since = now
        elif self._paused and now - self._clear_since >= self.wait_s:
            track = self._paused.pop(0)
            self._active.append(track)
            self._probe = (track, now)
            track.resume()

    def _pause(self, track: RelayTrack) -> None:
        if track in self._active:
            self._active.remove(track)
        self._paused.append(track)
        track.pause()
