"""A high-quality copy joins its finalised session: performers/<pid>.hq.webm.

Every part the page uploaded (a run of its recorder) is read from its acknowledged chunks,
checked to be WebM/Matroska with Opus and VP8 or VP9 (anything else is never written into the
session), measured against the live copy (align.py), and stream-copied into one file: each
packet's time shifted by its stream's offset, 1 ms resolution, strictly increasing per track.
The manifest's ``hq`` entry says what arrived, where it sits and how well that is known
(docs/archive-format.md, "High-quality copies"); manifest.json and SHA256SUMS are rewritten
under the session's lock (recorder/manifest.py).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from improv_capture.clock import parse_utc
from improv_capture.recorder.files import describe_error, fsync_dir, sha256_file
from improv_capture.recorder.hq.align import measure, media_streams, open_media
from improv_capture.recorder.hq.entry import hq_entry, hq_relative_path
from improv_capture.recorder.hq.errors import UploadNotReady
from improv_capture.recorder.hq.uploads import ChunkFile, Part, Upload, read_upload
from improv_capture.recorder.manifest import read_manifest, rewrite_manifest

logger = logging.getLogger(__name__)

MS = Fraction(1, 1000)
CODECS = {"audio": ("opus",), "video": ("vp8", "vp9")}
CONTAINERS = ("matroska", "webm")
#: Video frames held from a keyframe before the part's first kept frame (memory bound; a
#: longer run is dropped and the video starts at its next keyframe).
MAX_HELD = 600


class Unusable(Exception):
    """A part that cannot go into the archive; the message is the manifest's reason."""


@dataclass
class PlacedPart:
    part: Part
    reader: ChunkFile
    codecs: dict[str, str]
    coarse_s: float
    offsets: dict[str, float] = field(default_factory=dict)
    alignment: dict[str, Any] = field(default_factory=dict)
    coverage: tuple[float, float] | None = None


def probe(reader: ChunkFile) -> tuple[dict[str, str], dict[str, Any]]:
    """The part's codecs per kind and the video's size and audio's rate, or Unusable."""
    try:
        with open_media(reader) as container:
            if not any(name in CONTAINERS for name in container.format.name.split(",")):
                raise Unusable(f"not a WebM stream ({container.format.name})")
            streams = media_streams(container)
            codecs = {kind: s.codec_context.name for kind, s in streams.items()}
            for kind, name in codecs.items():
                if name not in CODECS[kind]:
                    raise Unusable(f"{kind} codec {name} (expected {' or '.join(CODECS[kind])})")
            if not codecs:
                raise Unusable("no audio or video stream")
            params: dict[str, Any] = {}
            if "video" in streams:
                params.update(width=streams["video"].codec_context.width,
                              height=streams["video"].codec_context.height)
            if "audio" in streams:
                params.update(audio_rate=streams["audio"].codec_context.sample_rate)
            return codecs, params
    except av.FFmpegError as exc:
        raise Unusable(f"not a WebM stream ({exc.strerror or exc})") from None


def _stream_offset(kind: str, measured: dict[str, Any], coarse_s: float) -> tuple[float, dict[str, Any]]:
    """The offset a stream is placed at: measured, else the other stream's (one recorder, so
    the same clock), else the page's clock."""
    other = "video" if kind == "audio" else "audio"
    if measured.get(kind):
        return measured[kind]["offset_s"], measured[kind]
    if measured.get(other):
        offset = measured[other]["offset_s"]
        return offset, {"offset_s": offset, "error_ms": None, "windows": [], "drift_ms": None,
                        "method": f"from {other}"}
    return coarse_s, {"offset_s": round(coarse_s, 6), "error_ms": None, "windows": [],
                      "drift_ms": None, "method": "page clock"}


def _remux(parts: list[PlacedPart], path: Path) -> dict[str, Any]:
    """Stream-copy every part into ``path``; returns frame counts and durations per kind."""
    counts = {"audio": 0, "video": 0}
    spans = {"audio": 0.0, "video": 0.0}
    output = av.open(str(path), "w", format="webm")
    try:
        out_streams: dict[str, Any] = {}
        last_ms: dict[str, int] = {}
        for placed in parts:
            with open_media(placed.reader) as container:
                streams = media_streams(container)
                for kind, stream in streams.items():
                    if kind not in out_streams:
                        out_streams[kind] = output.add_stream_from_template(stream)
                        out_streams[kind].time_base = MS
                bases = {s.index: (kind, float(s.time_base)) for kind, s in streams.items()}
                need_key = {"video": True, "audio": False}
                # video left out (before the session's start, or where the previous part has
                # media) from its latest keyframe on: what the first frame kept needs to decode
                held: list[tuple[Any, float, int]] = []
                seen: set[str] = set()
                first: float | None = None
                end: float | None = None
                part_span: dict[str, list[float]] = {}
                try:
                    for packet in container.demux(*streams.values()):
                        if packet.pts is None or packet.size == 0 or packet.is_corrupt:
                            continue
                        kind, base = bases[packet.stream_index]
                        t = packet.pts * base + placed.offsets[kind]
                        ms = int(round(t * 1000))
                        if ms < 0 or (kind not in seen and ms <= last_ms.get(kind, -1)):
                            if kind == "video" and (packet.is_keyframe or held):
                                held = [] if packet.is_keyframe else held
                                # too long a run: none of it, the video waits for a keyframe
                                held = [*held, (packet, t, ms)] if len(held) < MAX_HELD else []
                            continue  # before the session, or where the previous part has media
                        if kind == "video" and need_key[kind] and not packet.is_keyframe:
                            if not held:
                                continue  # video starts decodable
                            # stamped from the first free ms on: references, shown for a moment
                            pending, held = [*held, (packet, t, ms)], []
                        else:
                            pending = [(packet, t, ms)]
                        need_key[kind] = False
                        seen.add(kind)
                        for packet, t, ms in pending:
                            ms = max(ms, last_ms.get(kind, -1) + 1)
                            last_ms[kind] = ms
                            duration = (packet.duration or 0) * base
                            packet.pts = packet.dts = ms
                            packet.duration = int(round(duration * 1000))
                            packet.time_base = MS
                            packet.stream = out_streams[kind]
                            output.mux(packet)
                            counts[kind] += 1
                            t = max(t, ms / 1000)
                            first = t if first is None else min(first, t)
                            end = max(end or t, t + duration)
                            span = part_span.setdefault(kind, [t, t])
                            span[1] = t + duration
                except av.FFmpegError:
                    pass  # a part cut short (its prefix ends inside a cluster): keep what came
                if first is not None and end is not None:
                    placed.coverage = (first, end)
                for kind, (start, stop) in part_span.items():
                    spans[kind] += stop - start
        output.close()
    except BaseException:
        try:
            output.close()
        except Exception:
            pass
        raise
    return {"counts": counts, "spans": spans}


def _upload_record(upload: Upload) -> dict[str, Any]:
    return {
        "parts": len(upload.parts),
        "chunks": upload.acked_chunks,
        "bytes": upload.bytes(),
        "first_chunk_at": upload.first_chunk_at,
        "last_chunk_at": upload.last_chunk_at,
    }


def place_hq(session_dir: Path, performer_id: str, upload_dir: Path, final: bool) -> dict[str, Any] | None:
    """Place the performer's uploaded copy into the session; returns the manifest's new
    ``hq`` entry, or None when nothing changed (the copy is settled already, the performer
    withdrew, or the upload was revoked). ``final`` (the deadline passed): place what did
    arrive; otherwise every declared part must have ended and arrived (UploadNotReady)."""
    manifest = read_manifest(session_dir)
    performer = next((p for p in manifest.get("performers", []) if p["performer_id"] == performer_id), None)
    if performer is None:
        raise ValueError(f"{performer_id} is not in session {manifest.get('session_id')}")
    if performer.get("withdrawn") or (performer.get("hq") or {}).get("state", "uploading") != "uploading":
        return None
    upload = read_upload(upload_dir)
    if upload.revoked:
        return None
    if not final and not upload.complete:
        raise UploadNotReady("the upload is not complete yet")

    started_unix = parse_utc(manifest["started_at"])
    sync_offset = (performer.get("sync") or {}).get("offset_s")
    live_entry = performer.get("file")
    live = session_dir / live_entry["path"] if live_entry else None
    live = live if live is not None and live.exists() else None
    live_spans = {t["kind"]: (t["start_s"], t["start_s"] + t["duration_s"])
                  for t in performer.get("tracks", []) if t.get("start_s") is not None} or None

    problems: list[str] = []
    rejected = False
    placed: list[PlacedPart] = []
    params: dict[str, Any] = {}
    for number in sorted(upload.parts):
        part = upload.parts[number]
        if not part.prefix():
            if part.ended != 0:
                problems.append(f"part {number}: nothing arrived")
            continue
        if not part.complete:
            problems.append(f"part {number}: {len(part.prefix())} of "
                            f"{part.ended if part.ended is not None else 'an unknown number of'} chunks")
        reader = part.reader()
        try:
            codecs, part_params = probe(reader)
            if placed and codecs != placed[0].codecs:
                raise Unusable(f"codecs {codecs} differ from the first part's {placed[0].codecs}")
        except Unusable as exc:
            problems.append(f"part {number} rejected: {exc}")
            rejected = True
            reader.close()
            continue
        coarse = float(part.info["started_at_ms"]) / 1000 + (sync_offset or 0.0) - started_unix
        candidate = PlacedPart(part, reader, codecs, coarse)
        measured = measure(live, reader, coarse, live_spans=live_spans) if live is not None else {}
        if measured.get("decode_errors") and not (measured.get("audio") or measured.get("video")):
            problems.append(f"part {number} rejected: its media does not decode")
            rejected = True
            reader.close()
            continue
        for kind in codecs:
            candidate.offsets[kind], candidate.alignment[kind] = _stream_offset(kind, measured, coarse)
        params = params or part_params
        placed.append(candidate)

    # one temp file per process: two processes placing the same copy never write one file
    temp = session_dir / "performers" / f".{performer_id}.hq.webm.{os.getpid()}.tmp"
    relative = hq_relative_path(performer_id)
    file_record: dict[str, Any] | None = None
    entry = hq_entry("uploading")
    try:
        if placed:
            temp.parent.mkdir(parents=True, exist_ok=True)
            muxed = _remux(placed, temp)
            with open(temp, "rb") as f:
                os.fsync(f.fileno())
            file_record = {"path": relative, "bytes": temp.stat().st_size, "sha256": sha256_file(temp)}
            video_frames, video_s = muxed["counts"]["video"], muxed["spans"]["video"]
            entry.update(
                codecs=placed[0].codecs,
                width=params.get("width"),
                height=params.get("height"),
                frame_rate=round(video_frames / video_s, 3) if video_frames and video_s else None,
                audio_rate=params.get("audio_rate"),
                coverage=[{"start_s": round(p.coverage[0], 3), "end_s": round(p.coverage[1], 3)}
                          for p in placed if p.coverage],
            )
        entry["alignment"] = {
            "method": "cross-correlation" if live is not None else "page clock",
            "parts": [
                {"part": p.part.number, "coarse_s": round(p.coarse_s, 6),
                 "audio": p.alignment.get("audio"), "video": p.alignment.get("video"),
                 "drift_ms": (p.alignment.get("audio") or p.alignment.get("video") or {}).get("drift_ms")}
                for p in placed
            ],
        }
        if live is None:
            problems.append("no live copy to align against: placed by the page's clock")
        if not placed:
            entry["state"] = "rejected" if rejected else "incomplete"
            if not upload.parts:
                problems.append("nothing was uploaded")
        else:
            missing = rejected or any(not p.complete for p in upload.parts.values())
            entry["state"] = "incomplete" if missing else "complete"
        entry["reason"] = "; ".join(problems) or None
        entry["upload"] = _upload_record(upload)
        entry["file"] = file_record

        def change(manifest: dict[str, Any]) -> bool:
            current = next((p for p in manifest.get("performers", [])
                            if p["performer_id"] == performer_id), None)
            if current is None or current.get("withdrawn") or (
                    current.get("hq") or {}).get("state", "uploading") != "uploading":
                return False
            if file_record is not None:
                os.replace(temp, session_dir / relative)
                fsync_dir(temp.parent)
            current["hq"] = entry
            files = [f for f in manifest.get("files", []) if f["path"] != relative]
            manifest["files"] = files + ([file_record] if file_record else [])
            return True

        written = rewrite_manifest(session_dir, change)
    except Exception as exc:
        logger.error("placing the high-quality copy of %s failed: %s", performer_id, describe_error(exc))
        raise
    finally:
        temp.unlink(missing_ok=True)
        for p in placed:
            p.reader.close()
    return entry if written is not None else None
