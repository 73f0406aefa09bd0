"""One sample per performer per take: its sound and video cut from the archive, which copy
each came from, its speech turns and quality flags, and the JSON that says all of it (the
same JSON in every format: docs/export.md, "The sample JSON")."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from improv_capture.recorder.export.audio import AudioTrack, Stretch, complement, merge, wav_bytes
from improv_capture.recorder.export.source import Session
from improv_capture.recorder.export.takes import Take
from improv_capture.recorder.export.video import Clip, VideoTrack
from improv_capture.recorder.hq.align import RATE

#: ``--copy``: which copy of a performer a sample is cut from (:func:`choose_sources`).
COPIES = ("auto", "hq", "live")
#: Coverage ranges of a high-quality copy that meet within this much are one stretch, and a
#: range covers a take's end within it (placed times are kept to the microsecond).
COVER_SLACK_S = 1e-6


def sample_key(take: Take, performer_id: str) -> str:
    return f"{take.take_id}_{performer_id}"


def _seconds(samples: int) -> float:
    return round(samples / RATE, 6)


@dataclass
class Sources:
    """Which copy gives the video, and which gives the sound over each stretch of a take."""

    video: str | None
    audio: list[tuple[float, float, str]]
    note: str | None = None

    def record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "video": self.video,
            "audio": [{"start_s": round(a, 6), "end_s": round(b, 6), "copy": c} for a, b, c in self.audio],
        }
        if self.note:
            record["note"] = self.note
        return record


def _covered(coverage: list[tuple[float, float]], start: float, end: float) -> list[tuple[float, float]]:
    """The parts of [start, end) the coverage ranges cover, merged."""
    parts: list[tuple[float, float]] = []
    for a, b in sorted(coverage):
        a, b = max(a, start), min(b, end)
        if b <= a:
            continue
        if parts and a <= parts[-1][1] + COVER_SLACK_S:
            parts[-1] = (parts[-1][0], max(parts[-1][1], b))
        else:
            parts.append((a, b))
    if parts and parts[-1][1] >= end - COVER_SLACK_S:
        parts[-1] = (parts[-1][0], end)
    if parts and parts[0][0] <= start + COVER_SLACK_S:
        parts[0] = (start, parts[0][1])
    return parts


def choose_sources(performer: dict[str, Any], take: Take, copy: str) -> Sources:
    """``auto``: the high-quality copy where it covers the take and the live copy elsewhere
    (video from the high-quality copy only when it covers the whole take); ``hq`` and
    ``live`` force one copy (``hq`` falls back to live, with a note, for a performer without
    one)."""
    start, end = take.start_s, take.end_s
    hq_file = (performer.get("hq") or {}).get("file")
    live_file = performer.get("file")
    if copy == "live" or hq_file is None:
        note = "no high-quality copy: the live copy is used" if copy == "hq" else None
        return Sources("live" if live_file else None, [(start, end, "live")] if live_file else [], note)
    if copy == "hq" or live_file is None:
        return Sources("hq", [(start, end, "hq")])
    coverage = [(float(c["start_s"]), float(c["end_s"])) for c in (performer["hq"].get("coverage") or [])]
    covered = _covered(coverage, start, end)
    if covered == [(start, end)]:
        return Sources("hq", [(start, end, "hq")])
    stretches: list[tuple[float, float, str]] = []
    at = start
    for a, b in covered:
        if a > at:
            stretches.append((at, a, "live"))
        stretches.append((a, b, "hq"))
        at = b
    if at < end:
        stretches.append((at, end, "live"))
    return Sources("live", stretches)


class PerformerMedia:
    """A performer's copies in one session, each read front to back once over all takes."""

    def __init__(self, session: Session, performer: dict[str, Any]) -> None:
        self.performer = performer
        self.paths: dict[str, Path] = {}
        if performer.get("file"):
            self.paths["live"] = session.path / performer["file"]["path"]
        hq_file = (performer.get("hq") or {}).get("file")
        if hq_file:
            self.paths["hq"] = session.path / hq_file["path"]
        self._audio: dict[str, AudioTrack] = {}
        self._video: dict[str, VideoTrack] = {}

    def audio(self, copy: str) -> AudioTrack:
        if copy not in self._audio:
            self._audio[copy] = AudioTrack(self.paths[copy])
        return self._audio[copy]

    def video(self, copy: str) -> VideoTrack:
        if copy not in self._video:
            self._video[copy] = VideoTrack(self.paths[copy])
        return self._video[copy]

    def close(self) -> None:
        for track in [*self._audio.values(), *self._video.values()]:
            track.close()


@dataclass
class Sample:
    """A performer's take: sound (s16, from ``first``, a sample index on the session clock),
    video clip, and what the export says about them."""

    key: str
    session: Session
    take: Take
    performer: dict[str, Any]
    first: int
    pcm: np.ndarray
    silence: list[Stretch]
    clip: Clip | None
    has_video_track: bool
    sources: Sources
    #: speech turns in seconds from the first sample (None without VAD)
    turns: list[tuple[float, float]] | None = None
    quality: dict[str, Any] = field(default_factory=dict)

    @property
    def performer_id(self) -> str:
        return str(self.performer["performer_id"])

    @property
    def start_s(self) -> float:
        return self.first / RATE

    @property
    def duration_s(self) -> float:
        return self.pcm.size / RATE

    def session_turns(self) -> list[list[float]] | None:
        """The turns on the session clock."""
        if self.turns is None:
            return None
        return [[round(self.start_s + a, 6), round(self.start_s + b, 6)] for a, b in self.turns]

    @property
    def flagged(self) -> list[str]:
        return sorted(name for name, flag in self.quality.items() if flag.get("flagged"))

    def wav(self) -> bytes:
        return wav_bytes(self.pcm)

    def webm(self) -> bytes | None:
        if self.clip is None:
            return None
        buffer = io.BytesIO()
        self.clip.webm(buffer)
        return buffer.getvalue()

    def meta(self, display_names: bool) -> dict[str, Any]:
        """The sample's JSON (keys sorted when written)."""
        performer = self.performer
        consent = performer.get("consent") or {}
        archive: dict[str, Any] = {}
        copies = {c for _, _, c in self.sources.audio} | ({self.sources.video} if self.clip else set())
        for copy, entry in (("live", performer.get("file")), ("hq", (performer.get("hq") or {}).get("file"))):
            if entry and copy in copies:
                archive[copy] = {"path": entry["path"], "sha256": entry["sha256"]}
        meta: dict[str, Any] = {
            "key": self.key,
            "session_id": self.session.session_id,
            "session_revision": self.session.revision,
            "take": self.take.fields(),
            "performer_id": self.performer_id,
            "consent": {"version": consent.get("version"), "text_sha256": consent.get("text_sha256"),
                        "accepted_at": consent.get("accepted_at")},
            "audio": {
                "file": f"{self.key}.wav", "sample_rate": RATE, "samples": int(self.pcm.size),
                "start_s": _seconds(self.first), "end_s": _seconds(self.first + self.pcm.size),
                "silence_filled": [[_seconds(self.first + a), _seconds(self.first + b)] for a, b in self.silence],
            },
            "video": self.clip.record(f"{self.key}.webm") if self.clip else None,
            "sources": self.sources.record(),
            "turns": self.session_turns(),
            "quality": self.quality,
            "archive": archive,
        }
        if display_names:
            meta["display_name"] = performer.get("display_name")
        return meta


def cut_sample(session: Session, media: PerformerMedia, take: Take, copy: str) -> Sample | None:
    """The performer's sound and video of the take; None when they have no media in it
    (they joined later, or left before)."""
    sources = choose_sources(media.performer, take, copy)
    first = int(round(take.start_s * RATE))
    count = int(round(take.end_s * RATE)) - first
    pcm = np.zeros(count, dtype=np.int16)
    covered: list[Stretch] = []
    for name in sorted({c for _, _, c in sources.audio}):
        stretches = [(int(round(a * RATE)) - first, int(round(b * RATE)) - first)
                     for a, b, c in sources.audio if c == name]
        covered += media.audio(name).cut(first, count, pcm, stretches)
    clip = media.video(sources.video).clip(take.start_s, take.end_s) if sources.video else None
    has_video = bool(sources.video) and media.video(sources.video).has_video
    covered = merge(covered)
    if not covered and clip is None:
        return None
    return Sample(
        key=sample_key(take, str(media.performer["performer_id"])), session=session, take=take,
        performer=media.performer, first=first, pcm=pcm, silence=complement(covered, count),
        clip=clip, has_video_track=has_video, sources=sources,
    )
