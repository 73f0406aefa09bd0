"""Finalise stage: turn a session's capture into the archive (docs/archive-format.md).

Runs on stop and on recovery, always in a worker thread or its own process. Every packet is
stream-copied into performers/<performer_id>.webm at its position on the session timeline
(recorder/timeline.py); the manifest is rewritten atomically and SHA256SUMS covers every file.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from improv_capture.clock import parse_utc, utc_iso, utc_now_iso
from improv_capture.recorder.capture import CLOCK_RATES
from improv_capture.recorder.files import (
    SUMS,
    describe_error,
    file_entry,
    format_sums,
    fsync_dir,
    sha256_file,
    sums_covered,
    write_bytes_atomic,
    write_json_atomic,
)
from improv_capture.recorder.hq.entry import hq_entry
from improv_capture.recorder.timeline import ClockLog, TrackMapping, track_mappings
from improv_capture.recorder.vp8 import frame_size

logger = logging.getLogger(__name__)

MS = Fraction(1, 1000)
#: A silence longer than this inside a track is a gap in the manifest.
HOLE_S = {"video": 1.0, "audio": 0.25}
#: Gaps that mean media was lost (the session cannot be `complete`).
LOSSES = {"recorder queue full", "lost upstream", "write failed"}
#: Nothing at all from a performer for longer than this (no packet of either track, no
#: sender report) means their connection was down: an outage it rode out is `reconnected`,
#: not `no media`. A sender whose media merely stopped still reports (Chrome's video about
#: every second, aiortc every 0.5 to 1.5 s per track), so it is never this quiet.
DARK_S = 2.0
#: Frames lost as the connection came back (video waits for the keyframe the recorder asks
#: for) are the outage's, not a loss of their own: `lost upstream` gaps that start this soon
#: after the connection came back join its `reconnected` gap.
AFTER_DARK_S = 1.0


def read_clock_log(path: Path, clock_rate: int) -> ClockLog:
    log = ClockLog(clock_rate)
    if not path.exists():
        return log
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                break  # a line cut by a crash: everything before it is good
            if record[0] == "p":
                log.packets.append((int(record[1]), float(record[2])))
            elif record[0] == "sr":
                log.reports.append((int(record[1]), float(record[2]), float(record[3])))
            elif record[0] == "gap":
                log.gaps.append((float(record[1]), float(record[2]), str(record[3]), int(record[4])))
    return log


def read_capture(path: Path) -> Iterator[tuple[float, bytes, bool]]:
    """(pts in seconds of the track's RTP clock, data, keyframe), tolerating a cut-off end."""
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError):
        return
    with container:
        stream = container.streams[0]
        try:
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0:
                    continue
                yield float(packet.pts * stream.time_base), bytes(packet), bool(packet.is_keyframe)
        except (av.FFmpegError, OSError):
            return


def opus_pre_skip(stream: Any) -> int:
    """Pre-skip in samples from the stream's OpusHead (bytes 10-11, little endian)."""
    head = stream.codec_context.extradata or b""
    return int.from_bytes(head[10:12], "little") if head[:8] == b"OpusHead" else 0


@dataclass
class TrackSummary:
    kind: str
    frames: int = 0
    first: float | None = None
    last: float | None = None
    width: int | None = None
    height: int | None = None
    gaps: list[dict[str, Any]] = field(default_factory=list)
    reports: int = 0
    methods: set[str] = field(default_factory=set)

    def record(self, kind: str) -> dict[str, Any]:
        frame_s = 1 / 30 if kind == "video" else 0.02
        entry: dict[str, Any] = {
            "kind": kind,
            "codec": "vp8" if kind == "video" else "opus",
            "start_s": round(self.first, 6) if self.first is not None else None,
            "duration_s": round(self.last - self.first + frame_s, 6) if self.first is not None else 0.0,
            "frames": self.frames,
            "gaps": self.gaps,
        }
        if kind == "video":
            entry.update(width=self.width, height=self.height)
        else:
            entry.update(sample_rate=48000)
        return entry


@dataclass
class Source:
    """One track of one segment, mapped onto the session timeline."""

    kind: str
    segment: str
    mkv: Path
    mapping: TrackMapping

    def packets(self) -> Iterator[tuple[float, str, str, bytes, bool]]:
        """Audio captured before t = 0 is left out. Video must start at a keyframe, and the
        one the recording asked for may land a few ms before 0 (or be the last one the
        sender will send for a while): from the latest keyframe before 0, frames are kept
        and stamped at 0, so the file starts decodable and nothing after 0 is lost."""
        seen_keyframe = self.kind != "video"
        for pts_s, data, keyframe in read_capture(self.mkv):
            t = self.mapping(pts_s * self.mapping.clock_rate)
            if t < 0:
                if self.kind != "video":
                    continue
                t = 0.0
            seen_keyframe = seen_keyframe or keyframe
            if not seen_keyframe:
                continue
            yield t, self.kind, self.segment, data, keyframe


def dark_stretches(logs: dict[str, ClockLog]) -> list[tuple[float, float]]:
    """(last arrival before, first arrival after) of every stretch longer than DARK_S in
    which nothing of one segment arrived: no packet of any track, no sender report."""
    arrivals = sorted(
        [arrival for log in logs.values() for _, arrival in log.packets]
        + [arrival for log in logs.values() for _, _, arrival in log.reports]
    )
    return [(a, b) for a, b in itertools.pairwise(arrivals) if b - a > DARK_S]


def outage_gaps(
    log: ClockLog, dark: list[tuple[float, float]]
) -> list[tuple[float, float, str, int]]:
    """The track's gaps (arrival times) with each outage it spans as one `reconnected`
    gap, which takes in the `lost upstream` gaps across it and of its aftermath (audio that
    came back after a jump, video until its keyframe)."""
    gaps = list(log.gaps)
    arrivals = [arrival for _, arrival in log.packets]
    if not arrivals:
        return gaps
    first, last = min(arrivals), max(arrivals)
    for start, end in dark:
        if not first <= start < end <= last:
            continue  # the track had not begun, or had ended
        aftermath = [g for g in gaps if g[2] == "lost upstream"
                     and g[0] <= end + AFTER_DARK_S and g[1] >= start]
        gaps = [g for g in gaps if g not in aftermath]
        gaps.append((min([start] + [g[0] for g in aftermath]),
                     max([end] + [g[1] for g in aftermath]), "reconnected",
                     sum(g[3] for g in aftermath)))
    return sorted(gaps)


class HoleSpan:
    """Where a gap the recorder noted (in arrival times) lies on the session timeline: from
    the last packet that arrived by its start to the first that arrived from its end on, each
    placed as the file places it, so the gap is the hole it leaves in the file (arrivals and
    placed times differ by the network's delay and the sender's own errors: a bot starved of
    CPU stamps its reports late). Arrival time where there is no such packet."""

    def __init__(self, log: ClockLog, mapping: TrackMapping, started_unix: float) -> None:
        ordered = sorted((arrival, pts) for pts, arrival in log.packets)
        self._arrivals = [arrival for arrival, _ in ordered]
        self._pts = [pts for _, pts in ordered]
        self._mapping = mapping
        self._started = started_unix

    def __call__(self, start: float, end: float) -> tuple[float, float]:
        # the sidecar keeps arrivals to the microsecond; a gap's ends are a packet's arrival
        before = bisect.bisect_right(self._arrivals, start + 1e-5) - 1
        after = bisect.bisect_left(self._arrivals, end - 1e-5)
        start_s = (self._mapping(self._pts[before]) if before >= 0
                   else start - self._started)
        end_s = (self._mapping(self._pts[after]) if after < len(self._pts)
                 else end - self._started)
        return start_s, max(start_s, end_s)


def _segments(capture_dir: Path) -> list[str]:
    return sorted({p.name.split(".")[0] for p in capture_dir.glob("*.clock.jsonl")})


def finalise_performer(
    session_dir: Path, performer: dict[str, Any], started_unix: float
) -> dict[str, Any]:
    """Write performers/<id>.webm; return the manifest fields that describe it."""
    pid = performer["performer_id"]
    capture_dir = session_dir / "capture" / pid
    rtt = (performer.get("sync") or {}).get("rtt_s")
    sources: list[Source] = []
    summaries = {kind: TrackSummary(kind) for kind in ("audio", "video")}
    offsets = []
    for segment in _segments(capture_dir):
        logs = {
            kind: read_clock_log(capture_dir / f"{segment}.{kind}.clock.jsonl", rate)
            for kind, rate in CLOCK_RATES.items()
            if (capture_dir / f"{segment}.{kind}.clock.jsonl").exists()
        }
        mappings = track_mappings(logs, rtt, started_unix)
        dark = dark_stretches(logs)
        for kind, mapping in mappings.items():
            summary = summaries[kind]
            summary.methods.add(mapping.method)
            summary.reports += len(logs[kind].reports)
            if mapping.method == "sender_reports":
                offsets.append(mapping.offset_s)
            span = HoleSpan(logs[kind], mapping, started_unix)
            for start, end, reason, dropped in outage_gaps(logs[kind], dark):
                start_s, end_s = span(start, end)
                summary.gaps.append({
                    "start_s": round(start_s, 3),
                    "end_s": round(end_s, 3),
                    "reason": reason,
                    "dropped_frames": dropped,
                })
            sources.append(Source(kind, segment, capture_dir / f"{segment}.{kind}.mkv", mapping))

    out_path = session_dir / "performers" / f"{pid}.webm"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(f".{out_path.name}.tmp")
    size = None
    for source in sources:
        if source.kind == "video":
            size = next((frame_size(d) for _, d, k in read_capture(source.mkv) if k and frame_size(d)), None)
            if size:
                break
    container = av.open(str(tmp_path), "w", format="webm")
    streams: dict[str, Any] = {}
    if any(s.kind == "video" for s in sources):
        width, height = size or (640, 480)
        streams["video"] = container.add_mux_stream("vp8", width=width, height=height)
        streams["video"].time_base = MS
    if any(s.kind == "audio" for s in sources):
        streams["audio"] = container.add_stream("libopus", rate=48000, layout="stereo")
        container.start_encoding()
    # Opus decoders drop the header's pre-skip (the encoder's lookahead) and present what
    # follows that much later; stamping packets earlier by it puts the sound where it was
    # captured (RFC 7845 section 4.2). RTP timestamps carry no pre-skip.
    pre_skip_s = opus_pre_skip(streams["audio"]) / 48000 if "audio" in streams else 0.0
    last_ms: dict[str, int] = {}
    last_t: dict[str, tuple[float, str]] = {}
    try:
        merged = heapq.merge(*(s.packets() for s in sources), key=lambda item: item[0])
        for t, kind, segment, data, keyframe in merged:
            summary = summaries[kind]
            previous = last_t.get(kind)
            if previous is not None and t - previous[0] > HOLE_S[kind]:
                reason = "reconnected" if previous[1] != segment else "no media"
                if not any(g["start_s"] <= t and g["end_s"] >= previous[0] for g in summary.gaps):
                    summary.gaps.append({"start_s": round(previous[0], 3), "end_s": round(t, 3),
                                         "reason": reason, "dropped_frames": 0})
            last_t[kind] = (t, segment)
            stamp = t - pre_skip_s if kind == "audio" else t
            if stamp < 0:
                continue
            ms = max(int(round(stamp * 1000)), last_ms.get(kind, -1) + 1)
            last_ms[kind] = ms
            packet = av.Packet(data)
            packet.pts = packet.dts = ms
            packet.time_base = MS
            packet.is_keyframe = keyframe
            packet.stream = streams[kind]
            container.mux(packet)
            summary.frames += 1
            summary.first = t if summary.first is None else summary.first
            summary.last = t
            if kind == "video" and keyframe and summary.width is None and frame_size(data):
                summary.width, summary.height = frame_size(data)  # type: ignore[misc]
        container.close()
    except BaseException:
        try:
            container.close()
        except Exception:
            pass
        tmp_path.unlink(missing_ok=True)
        raise
    if tmp_path.exists() and not any(summary.frames for summary in summaries.values()):
        # a capture with none of its packets placed (all before the start, or before the first
        # keyframe, when a node died a moment after they came): a header without frames
        tmp_path.unlink()
    if not tmp_path.exists():
        # not one packet of this performer was captured (they joined but their media never
        # reached the recorder): PyAV wrote nothing, and there is no file to keep
        return {"file": None, "tracks": [], "sync": {
            "method": "none", "offset_s": None, "rtt_s": rtt, "sender_reports": {},
            "segments": len(_segments(capture_dir))}}
    with open(tmp_path, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp_path, out_path)
    fsync_dir(out_path.parent)

    tracks = [summaries[k].record(k) for k in ("audio", "video") if k in streams]
    methods = set().union(*(summaries[k].methods for k in streams)) if streams else set()
    method = methods.pop() if len(methods) == 1 else ("mixed" if methods else "none")
    return {
        "file": file_entry(session_dir, out_path),
        "tracks": tracks,
        "sync": {
            "method": method,
            "offset_s": round(min(offsets), 6) if offsets else None,
            "rtt_s": rtt,
            "sender_reports": {k: summaries[k].reports for k in streams},
            "segments": len(_segments(capture_dir)),
        },
    }


def finalise_session(session_dir: Path, reason: str | None = None) -> dict[str, Any]:
    """Finalise a session; ``reason`` (interrupted, a write error...) makes it partial."""
    manifest = json.loads((session_dir / "manifest.json").read_text())
    started_unix = parse_utc(manifest["started_at"])
    problems = [reason] if reason else []
    for performer in manifest["performers"]:
        try:
            performer.update(finalise_performer(session_dir, performer, started_unix))
            if performer["file"] is None:
                problems.append(f"{performer['performer_id']}: no media")  # joined, never recorded
        except Exception as exc:  # keep going: the others' media must not be lost
            logger.exception("finalising %s failed", performer["performer_id"])
            problems.append(f"{performer['performer_id']}: {describe_error(exc)}")
            performer.setdefault("file", None)
        for track in performer.get("tracks", []):
            for gap in track["gaps"]:
                if gap["reason"] in LOSSES:
                    problems.append(f"{performer['performer_id']} {track['kind']}: {gap['reason']}")

    if (manifest.get("profile") or {}).get("hq") is not None:
        # studio: each performer's own high-quality copy joins later (recorder/hq/place.py)
        for performer in manifest["performers"]:
            if not performer.get("hq"):
                performer["hq"] = hq_entry("uploading")

    if not manifest.get("ended_at"):
        ends = [t["start_s"] + t["duration_s"] for p in manifest["performers"]
                for t in p.get("tracks", []) if t["start_s"] is not None]
        ended_unix = started_unix + max(ends, default=0.0)
        manifest["ended_at"] = utc_iso(ended_unix)
    manifest["duration_s"] = round(parse_utc(manifest["ended_at"]) - started_unix, 6)
    failed = manifest["performers"] and all(p.get("file") is None for p in manifest["performers"])
    manifest["state"] = "failed" if failed and problems else ("partial" if problems else "complete")
    manifest["reason"] = "; ".join(dict.fromkeys(problems)) or None
    manifest["revision"] = 1  # every later change bumps it: recorder/manifest.py
    manifest["updated_at"] = utc_now_iso()

    if not failed:
        shutil.rmtree(session_dir / "capture", ignore_errors=True)
    files = [file_entry(session_dir, session_dir / "events.jsonl")] if (session_dir / "events.jsonl").exists() else []
    files += [p["file"] for p in manifest["performers"] if p.get("file")]
    files += [p["hq"]["file"] for p in manifest["performers"] if (p.get("hq") or {}).get("file")]
    manifest["files"] = files
    write_json_atomic(session_dir / "manifest.json", manifest)
    write_sha256sums(session_dir)
    return manifest


def write_sha256sums(session_dir: Path) -> None:
    """SHA256SUMS over every file it covers, hashed now."""
    digests = {name: sha256_file(path) for name, path in sums_covered(session_dir).items()}
    write_bytes_atomic(session_dir / SUMS, format_sums(digests))
