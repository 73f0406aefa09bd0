"""`improv-capture verify`: is this archive whole, decodable, and in sync?

Checks SHA256SUMS against every file, decodes every frame of every performer file, reports
durations and gaps, and measures the A/V offset of every performer whose media carries the
flash and beep pattern (a white frame and a tone starting at the same instant). A
high-quality copy is decoded too, its coverage checked against its packets, and its place on
the timeline measured again against the live copy (recorder/hq/align.py).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import av
import numpy as np

from improv_capture.recorder.files import (
    SUMS,
    SumsError,
    read_sums,
    sha256_file,
    sums_covered,
)
from improv_capture.recorder.hq.align import measure, scan_audio, spans

FLASH_CONTRAST = 80  # luma levels between a flash and the ordinary picture
BEEP_QUIET_S = 0.2  # silence before a beep onset
MAX_FRAME_STEPS = 2.5  # a longer step between two frames means frames are missing
#: A placed high-quality copy measured this far (ms) from the live copy is misplaced.
HQ_TOLERANCE_MS = {"audio": 5.0, "video": 10.0}
#: How far a coverage range's ends may be from the packets that make it.
COVERAGE_SLACK_S = 0.1


def check_sums(session_dir: Path) -> list[str]:
    """Defects: a file SHA256SUMS does not list, a listed one missing or changed, or a
    SHA256SUMS that cannot be read (then nothing else is checked against it)."""
    try:
        listed = read_sums(session_dir)
    except FileNotFoundError:
        return [f"{SUMS} is missing"]
    except SumsError as exc:
        return [str(exc)]
    unlisted = sums_covered(session_dir).keys() - listed.keys()
    defects = [f"{name} is not in {SUMS}" for name in sorted(unlisted)]
    for name, digest in sorted(listed.items()):
        path = session_dir / name
        if not path.is_file():
            defects.append(f"{name} is missing")
        elif sha256_file(path) != digest:
            defects.append(f"{name}: sha256 mismatch")
    return defects


def flash_times(times: list[float], lumas: list[float]) -> list[float]:
    """Onsets of flashes seen to start: a lit frame right after a dark one.

    A file that starts lit, or a lit frame after missing frames, may have cut into the flash,
    which would put its onset late; such frames make no onset.
    """
    if not lumas:
        return []
    base, top = float(np.percentile(lumas, 10)), max(lumas)
    if top - base < FLASH_CONTRAST:
        return []
    threshold = (base + top) / 2
    steps = np.diff(np.asarray(times, dtype=float))
    steps = steps[np.isfinite(steps) & (steps > 0)]
    max_step = MAX_FRAME_STEPS * float(np.median(steps)) if steps.size else float("inf")
    onsets = []
    for i in range(1, len(times)):
        if lumas[i] > threshold >= lumas[i - 1] and times[i] - times[i - 1] <= max_step:
            onsets.append(times[i])
    return onsets


def beep_times(
    start: float, samples: np.ndarray, rate: int, unheard: list[tuple[int, int]] | None = None
) -> list[float]:
    """Onsets of tones after at least BEEP_QUIET_S of heard quiet, to the sample.

    The stream's start and the ``unheard`` sample ranges (gaps, filled with silence) may have cut
    into a tone, which would put its onset late: a tone needs quiet heard before it.
    """
    if samples.size == 0:
        return []
    peak = float(np.max(np.abs(samples)))
    if peak < 0.02:
        return []
    threshold = 0.25 * peak
    quiet_needed = int(BEEP_QUIET_S * rate)
    gap_ends = sorted(end for _, end in unheard or [])  # a tone cannot sound inside a gap
    onsets = []
    last_blocked = -1  # the last sample that was loud or not heard at all
    next_gap = 0
    for index in np.flatnonzero(np.abs(samples) > threshold):
        while next_gap < len(gap_ends) and gap_ends[next_gap] <= index:
            last_blocked = max(last_blocked, gap_ends[next_gap] - 1)
            next_gap += 1
        if index - last_blocked > quiet_needed:
            onsets.append(start + index / rate)
        last_blocked = index
    return onsets


def decode_file(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"video_frames": 0, "audio_frames": 0, "decode_errors": 0}
    times: list[float] = []
    lumas: list[float] = []
    chunks: list[np.ndarray] = []
    unheard: list[tuple[int, int]] = []
    have = 0  # audio samples in chunks
    audio_start: float | None = None
    rate = 48000
    video_end = audio_end = None
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        try:
            for packet in container.demux(*streams):
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    result["decode_errors"] += 1
                    continue
                for frame in frames:
                    t = float(frame.pts * frame.time_base) if frame.pts is not None else None
                    if packet.stream.type == "video":
                        result["video_frames"] += 1
                        plane = frame.planes[0]
                        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
                        lumas.append(float(luma[::8, : frame.width : 8].mean()))
                        times.append(t if t is not None else float("nan"))
                        video_end = t
                    else:
                        result["audio_frames"] += 1
                        rate = frame.sample_rate
                        data = frame.to_ndarray().astype(np.float32)
                        if frame.format.name.startswith("s16"):
                            data /= 32768.0
                        channels = len(frame.layout.channels)
                        mono = data[0] if frame.format.is_planar else data.reshape(-1, channels)[:, 0]
                        if audio_start is None:
                            audio_start = t or 0.0
                        expected = int(round(((t or 0.0) - audio_start) * rate))
                        if expected > have:  # a gap: keep the timeline with silence
                            chunks.append(np.zeros(expected - have, np.float32))
                            unheard.append((have, expected))
                            have = expected
                        chunks.append(mono)
                        have += mono.size
                        audio_end = (t or 0.0) + frame.samples / rate
        except av.FFmpegError:
            result["decode_errors"] += 1
    result["video_end_s"] = video_end
    result["audio_end_s"] = audio_end
    flashes = flash_times(times, lumas)
    samples = np.concatenate(chunks) if chunks else np.zeros(0)
    beeps = beep_times(audio_start or 0.0, samples, rate, unheard)
    result["flashes_s"] = [round(t, 4) for t in flashes]
    result["beeps_s"] = [round(t, 4) for t in beeps]
    offsets = []
    for flash in flashes:
        nearest = min(beeps, key=lambda b: abs(b - flash), default=None)
        if nearest is not None and abs(nearest - flash) < 0.5:
            offsets.append((nearest - flash) * 1000)
    result["av_offset_ms"] = (
        {
            "pairs": len(offsets),
            "median": round(statistics.median(offsets), 2),
            "min": round(min(offsets), 2),
            "max": round(max(offsets), 2),
            "values": [round(o, 2) for o in offsets],
        }
        if offsets
        else None
    )
    return result


def onset_errors_ms(live: Path, hq: Path) -> dict[str, list[Any]]:
    """Flash and beep onsets of the high-quality copy minus those of the live copy, pair by
    pair (each hq onset with the live onset nearest it, within half a second): the issue's
    measure of the alignment, with the hq onsets' times (``video_at``, ``audio_at``) to see
    drift along a take, and each copy's median A/V offset (beep minus flash)."""
    live_media, hq_media = decode_file(live), decode_file(hq)
    errors: dict[str, list[Any]] = {}
    for kind, key in (("video", "flashes_s"), ("audio", "beeps_s")):
        pairs = []
        for onset in hq_media[key]:
            nearest = min(live_media[key], key=lambda t: abs(t - onset), default=None)
            if nearest is not None and abs(nearest - onset) < 0.5:
                pairs.append((float(onset), round(float(onset - nearest) * 1000, 2)))
        errors[kind] = [e for _, e in pairs]
        errors[f"{kind}_at"] = [t for t, _ in pairs]
    errors["av_offset_ms"] = [
        float(m["av_offset_ms"]["median"]) if m["av_offset_ms"] else None for m in (live_media, hq_media)]
    return errors


def packet_spans(path: Path) -> list[tuple[float, float]]:
    """(start, end) of every audio and video packet, demuxed (nothing decoded)."""
    found = []
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        for packet in container.demux(*streams):
            if packet.pts is not None and packet.size:
                t = float(packet.pts * packet.time_base)
                found.append((t, t + float((packet.duration or 0) * packet.time_base)))
    return found


def coverage_defects(name: str, packets: list[tuple[float, float]], coverage: list[dict[str, float]]) -> list[str]:
    """Each coverage range has media from its start to its end, and nothing lies outside."""
    defects = []
    for r in coverage:
        inside = [p for p in packets if r["start_s"] - COVERAGE_SLACK_S <= p[0] <= r["end_s"] + COVERAGE_SLACK_S]
        if not inside:
            defects.append(f"{name}: no media in its coverage {r['start_s']}-{r['end_s']} s")
        elif (min(p[0] for p in inside) > r["start_s"] + COVERAGE_SLACK_S
              or max(p[1] for p in inside) < r["end_s"] - COVERAGE_SLACK_S):
            defects.append(f"{name}: media does not fill its coverage {r['start_s']}-{r['end_s']} s")
    outside = [p for p in packets if not any(
        r["start_s"] - COVERAGE_SLACK_S <= p[0] <= r["end_s"] + COVERAGE_SLACK_S for r in coverage)]
    if outside:
        defects.append(f"{name}: {len(outside)} packets outside its coverage")
    return defects


def audio_scan(
    live: Path, hq: Path, start: float, end: float, expected_s: float = 0.0
) -> tuple[dict[str, Any], list[str]]:
    """The copy's sound against the live copy's, window after window over [start, end]: the
    placement measured a few windows, and a stretch where one copy's own clock slipped (a
    browser's recorder that caught up with the microphone seconds later, or a starved sender
    whose live stamps stepped) sits between them. Returns the report and one warning per
    stretch of windows more than the tolerance from ``expected_s`` (the range's measured
    offset: a copy misplaced as a whole is a defect, said elsewhere). A warning, not a defect:
    which of the two copies slipped, the archive cannot tell."""
    tolerance = HQ_TOLERANCE_MS["audio"]
    windows = scan_audio(live, hq, start, end, expected_s)
    off = [(s, e, o * 1000) for s, e, o in windows
           if o is not None and abs(o - expected_s) * 1000 > tolerance]
    stretches: list[list[tuple[float, float, float]]] = []
    for window in off:
        if stretches and abs(window[0] - stretches[-1][-1][1]) < 1e-3:
            stretches[-1].append(window)
        else:
            stretches.append([window])
    warnings = []
    for stretch in stretches:
        off_ms = statistics.median(o for _, _, o in stretch)
        slip_ms = off_ms - expected_s * 1000
        warnings.append(f"audio slips {abs(slip_ms):.1f} ms {'late' if slip_ms < 0 else 'early'} against "
                        f"the live copy in {stretch[0][0]}-{stretch[-1][1]} s ({len(stretch)} of "
                        f"{len(windows)} windows; tolerance {tolerance} ms): one of the copies slipped")
    report = {"windows": len(windows), "measured": sum(o is not None for *_, o in windows),
              "off": [{"start_s": s, "end_s": e, "offset_ms": round(o, 3)} for s, e, o in off]}
    return report, warnings


def verify_hq(
    session_dir: Path, performer: dict[str, Any]
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Decode the performer's high-quality copy, check its coverage, and measure it again
    against the live copy: placed, both should sit at offset 0. Returns the report, the
    defects and the warnings."""
    hq = performer["hq"]
    name = hq["file"]["path"]
    path = session_dir / name
    if not path.exists():
        return {"file": name, "state": hq.get("state")}, [f"{name} is missing"], []
    defects, warnings = [], []
    try:
        decoded = decode_file(path)
        packets = packet_spans(path)
    except (av.FFmpegError, OSError) as exc:
        return {"file": name, "state": hq.get("state")}, [f"{name}: cannot be read: {exc}"], []
    if decoded["decode_errors"]:
        defects.append(f"{name}: {decoded['decode_errors']} packets failed to decode")
    coverage = hq.get("coverage") or []
    defects += coverage_defects(name, packets, coverage)
    alignment = []
    live_entry = performer.get("file")
    live = session_dir / live_entry["path"] if live_entry else None
    if live is not None and live.exists():
        live_spans = spans(live)
        for r in coverage:
            measured = measure(live, path, 0.0, hq_span=(r["start_s"], r["end_s"]), live_spans=live_spans)
            found: dict[str, Any] = {"start_s": r["start_s"], "end_s": r["end_s"]}
            for kind, tolerance in HQ_TOLERANCE_MS.items():
                m = measured.get(kind)
                found[f"{kind}_offset_ms"] = round(m["offset_s"] * 1000, 3) if m else None
                off_ms = m["offset_s"] * 1000 if m else 0.0
                if abs(off_ms) > tolerance:  # it belongs at hq time + offset
                    defects.append(f"{name}: {kind} is {abs(off_ms):.1f} ms {'late' if off_ms < 0 else 'early'} "
                                   f"against the live copy in {r['start_s']}-{r['end_s']} s "
                                   f"(tolerance {tolerance} ms)")
            found["matched_frames"] = (measured.get("video") or {}).get("matched_frames")
            found["audio_scan"], slips = audio_scan(live, path, r["start_s"], r["end_s"],
                                                    (measured.get("audio") or {}).get("offset_s", 0.0))
            warnings += [f"{name}: {slip}" for slip in slips]
            alignment.append(found)
    return {"file": name, "state": hq.get("state"), **decoded, "coverage": coverage,
            "alignment": alignment if live is not None and live.exists() else None}, defects, warnings


def verify_live_file(session_dir: Path, name: str, entry: dict[str, Any]
                     ) -> tuple[dict[str, Any] | None, list[str]]:
    """A performer's live copy (``entry``: its manifest entry, with ``file``, ``tracks`` and
    ``sync``) decoded and checked against its tracks: its report (None when it cannot be read)
    and its defects."""
    path_name = entry["file"]["path"]
    path = session_dir / path_name
    if not path.exists():
        return None, [f"{path_name} is missing"]
    try:
        decoded = decode_file(path)
    except (av.FFmpegError, OSError) as exc:
        return None, [f"{path_name}: cannot be read: {exc}"]
    defects = []
    if decoded["decode_errors"]:
        defects.append(f"{path_name}: {decoded['decode_errors']} packets failed to decode")
    for track in entry.get("tracks", []):
        count = decoded["video_frames"] if track["kind"] == "video" else None
        if count is not None and count != track["frames"]:
            defects.append(f"{name} video: {count} frames decoded, manifest says {track['frames']}")
    return {
        "file": path_name,
        **decoded,
        "tracks": [
            {k: t.get(k) for k in ("kind", "start_s", "duration_s", "frames", "gaps")}
            for t in entry.get("tracks", [])
        ],
        "sync": entry.get("sync"),
    }, defects


def verify_session(session_dir: Path) -> dict[str, Any]:
    defects: list[str] = []
    warnings: list[str] = []
    manifest_path = session_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        return {"session_dir": str(session_dir), "ok": False, "defects": [f"manifest: {exc}"]}
    defects += check_sums(session_dir)
    if manifest.get("state") in ("recording", "failed"):
        defects.append(f"session state is {manifest.get('state')}: {manifest.get('reason')}")
    performers = {}
    for performer in manifest.get("performers", []):
        pid = performer["performer_id"]
        entry = performer.get("file")
        if performer.get("withdrawn"):
            continue  # consent withdrawn: the media is gone on purpose
        if (performer.get("hq") or {}).get("file"):
            hq_report, hq_defects, hq_warnings = verify_hq(session_dir, performer)
            defects += hq_defects
            warnings += hq_warnings
            performers[pid] = {"hq": hq_report}
        earlier = performer.get("earlier") or {}
        if earlier.get("file"):  # the part recorded on a node that died (recorder/continued.py)
            report, found = verify_live_file(session_dir, f"{pid} (earlier part)", earlier)
            defects += found
            if report is not None:
                performers.setdefault(pid, {})["earlier"] = report
        if not entry:
            if not earlier.get("file"):
                defects.append(f"{pid}: no media file")
            continue
        report, found = verify_live_file(session_dir, pid, performer)
        defects += found
        if report is not None:
            performers[pid] = {**performers.get(pid, {}), **report}
    return {
        "session_id": manifest.get("session_id"),
        "state": manifest.get("state"),
        "reason": manifest.get("reason"),
        "duration_s": manifest.get("duration_s"),
        "ok": not defects,
        "defects": defects,
        "warnings": warnings,
        "performers": performers,
    }


def _sync_text(offset: dict[str, Any] | None) -> str:
    if not offset:
        return "no flash/beep pattern"
    return f"A/V offset median {offset['median']} ms over {offset['pairs']} flash/beep pairs"


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"session {report.get('session_id')}: {report.get('state')}"
        f" ({report.get('duration_s')} s){' - ' + report['reason'] if report.get('reason') else ''}"
    ]
    for pid, p in report.get("performers", {}).items():
        if "video_frames" in p:
            gaps = sum(len(t["gaps"]) for t in p["tracks"])
            lines.append(
                f"  {pid}: {p['video_frames']} video frames, {p['audio_frames']} audio frames, "
                f"{gaps} gaps, {_sync_text(p['av_offset_ms'])}"
            )
        hq = p.get("hq")
        if hq and "video_frames" in hq:
            placed = "; ".join(
                f"{a['start_s']}-{a['end_s']} s: audio {a['audio_offset_ms']} ms, video {a['video_offset_ms']} ms"
                for a in hq["alignment"] or []) or "not measured"
            lines.append(
                f"  {pid} high quality: {hq['video_frames']} video frames, {hq['audio_frames']} audio "
                f"frames, {_sync_text(hq['av_offset_ms'])}; against the live copy: {placed}"
            )
    lines += [f"  DEFECT: {d}" for d in report["defects"]]
    lines += [f"  WARNING: {w}" for w in report.get("warnings", [])]
    lines.append("OK" if report["ok"] else "DEFECTS FOUND")
    return "\n".join(lines)
