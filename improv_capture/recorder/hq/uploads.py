"""The chunks of high-quality copies while they upload: nothing acknowledged is ever lost.

They live outside the session directory (SHA256SUMS covers every file there), in
``<data-dir>/uploads/<session_id>/<performer_id>/``::

    upload.json          {"parts": {"0": {"info": {...}, "ended": null | {"chunks": N}}},
                          "revoked": false, "closed": null | {"state", "at"}}
    p0000/000000.chunk   one file per acknowledged chunk
    p0000/acks.jsonl     one line per acknowledgement: {"index", "bytes", "sha256", "at", "recorded"}
    .lock                flock: one writer at a time, across threads and processes

A chunk is written to a temp file, fsynced, renamed, the directory fsynced, and only then its
line is appended (and fsynced) to acks.jsonl: that line is the acknowledgement. A chunk file
without a line is a write that failed half way; the page sends it again and it is replaced.
An acknowledged chunk is never written again. Every method blocks (the server calls them in
``asyncio.to_thread``); every refusal is an :mod:`improv_capture.recorder.hq.errors` error.
"""

from __future__ import annotations

import bisect
import fcntl
import hashlib
import io
import itertools
import json
import math
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from improv_capture.clock import utc_now_iso
from improv_capture.recorder.files import (
    fsync_dir,
    write_bytes_atomic,
    write_json_atomic,
)
from improv_capture.recorder.hq.errors import (
    BadUpload,
    ChunkConflict,
    ChunkDigestError,
    NotWebm,
    Revoked,
    StorageFull,
    UploadClosed,
    UploadConflict,
    UploadTooLarge,
)

#: Every WebM (Matroska) stream starts with the EBML header's id.
EBML_MAGIC = b"\x1a\x45\xdf\xa3"
MAX_PART = 63
MAX_INDEX = 999_999
MAX_INFO_BYTES = 16 * 1024
#: Why the page started a new part (a new run of its MediaRecorder).
PART_REASONS = ("start", "device_change", "reload", "resume")
MIME_TYPE = re.compile(r"(video|audio)/(webm|x-matroska)(;.*)?", re.IGNORECASE)
#: Session and performer ids become directory names: nothing else gets through.
SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
ACKS = "acks.jsonl"
RECORD = "upload.json"
MIB = 1024 * 1024


def upload_cap_bytes(video_bitrate: float, audio_bitrate: float, duration_s: float) -> int:
    """Most a performer may upload into one session: the profile's bitrates over the take
    (or the time elapsed so far) plus 30 s, with half again as margin, plus 4 MiB."""
    seconds = max(0.0, float(duration_s)) + 30.0
    return math.ceil((video_bitrate + audio_bitrate) / 8 * seconds * 1.5) + 4 * MIB


@dataclass(frozen=True)
class UploadLimits:
    max_chunk_bytes: int
    max_total_bytes: int


@dataclass(frozen=True)
class Ack:
    index: int
    bytes: int
    sha256: str
    at: str
    recorded: int | None = None


class ChunkFile(io.RawIOBase):
    """Files read as one, without copying them (a part is its chunk files in order); seekable,
    so that a demuxer can probe and seek in it."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self._paths = paths
        self._starts = list(itertools.accumulate((p.stat().st_size for p in paths), initial=0))
        self._position = 0
        self._file: tuple[int, BinaryIO] | None = None

    @property
    def size(self) -> int:
        return self._starts[-1]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._position < self.size:
            n = bisect.bisect_right(self._starts, self._position) - 1
            if self._file is None or self._file[0] != n:
                if self._file is not None:
                    self._file[1].close()
                self._file = (n, open(self._paths[n], "rb"))
            f = self._file[1]
            f.seek(self._position - self._starts[n])
            got = f.readinto(view[done : done + self._starts[n + 1] - self._position])
            if not got:
                break
            done += got
            self._position += got
        return done

    def close(self) -> None:
        if self._file is not None:
            self._file[1].close()
            self._file = None
        super().close()


@dataclass
class Part:
    """One run of the page's recorder: its info, its end (chunk count) and its chunks."""

    number: int
    path: Path
    info: dict[str, Any]
    ended: int | None = None
    acks: dict[int, Ack] = field(default_factory=dict)

    def chunk_path(self, index: int) -> Path:
        return self.path / f"{index:06d}.chunk"

    def reader(self) -> ChunkFile:
        """The part's acknowledged prefix (:meth:`prefix`), read as one file."""
        return ChunkFile([self.chunk_path(i) for i in self.prefix()])

    def prefix(self) -> list[int]:
        """The acknowledged chunks from 0 up to the first missing one: what decodes."""
        count = 0
        while count in self.acks and (self.ended is None or count < self.ended):
            count += 1
        return list(range(count))

    @property
    def complete(self) -> bool:
        return self.ended is not None and len(self.prefix()) == self.ended

    @property
    def recorded(self) -> int:
        """Chunks the page has recorded of this part, as far as the server knows."""
        reported = [a.recorded for a in self.acks.values() if a.recorded is not None]
        highest = max(self.acks) + 1 if self.acks else 0
        return max([highest, self.ended or 0, *reported])

    def bytes(self) -> int:
        return sum(a.bytes for a in self.acks.values())


@dataclass
class Upload:
    """What is on disk of one performer's copy (read without the lock: a consistent view,
    since upload.json is replaced atomically and acknowledgements are only appended)."""

    path: Path
    parts: dict[int, Part] = field(default_factory=dict)
    revoked: bool = False
    closed: str | None = None

    @property
    def complete(self) -> bool:
        """Every declared part ended and arrived: the copy can be placed."""
        return bool(self.parts) and all(p.complete for p in self.parts.values())

    def acks(self) -> list[Ack]:
        return [a for p in self.parts.values() for a in p.acks.values()]

    def bytes(self) -> int:
        return sum(p.bytes() for p in self.parts.values())

    def state(self) -> str:
        if self.revoked:
            return "revoked"
        if self.closed:
            return self.closed
        if self.complete:
            return "uploaded"
        return "uploading" if self.acks() else "pending"


def _part_dir(upload_dir: Path, part: int) -> Path:
    return upload_dir / f"p{part:04d}"


def _load_record(upload_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((upload_dir / RECORD).read_text()))
    except FileNotFoundError:
        return {"parts": {}, "revoked": False, "closed": None}


def _read_acks(part: Part) -> dict[int, Ack]:
    """Acknowledgements whose chunk is there; a line cut by a failed write is no ack."""
    acks: dict[int, Ack] = {}
    try:
        text = (part.path / ACKS).read_text()
    except FileNotFoundError:
        return acks
    for line in text.splitlines():
        try:
            record = json.loads(line)
            ack = Ack(int(record["index"]), int(record["bytes"]), str(record["sha256"]),
                      str(record["at"]), record.get("recorded"))
        except (ValueError, KeyError, TypeError):
            continue
        acks.setdefault(ack.index, ack)
    return acks


def read_upload(upload_dir: Path) -> Upload:
    """The upload in ``upload_dir`` (an empty one if nothing was declared)."""
    record = _load_record(upload_dir)
    closed = record.get("closed")
    upload = Upload(upload_dir, revoked=bool(record.get("revoked")),
                    closed=closed["state"] if closed else None)
    for key, entry in record.get("parts", {}).items():
        number = int(key)
        ended = entry.get("ended")
        part = Part(number, _part_dir(upload_dir, number), dict(entry["info"]),
                    int(ended["chunks"]) if ended else None)
        part.acks = _read_acks(part)
        upload.parts[number] = part
    return upload


def _ranges(indices: list[int]) -> list[list[int]]:
    """[0, 1, 2, 5, 6] -> [[0, 2], [5, 6]] (inclusive)."""
    ranges: list[list[int]] = []
    for i in sorted(indices):
        if ranges and ranges[-1][1] == i - 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return ranges


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_fields(where: str, value: Any, fields: dict[str, tuple[str, Any]]) -> None:
    """``fields``: name -> (what it must be, check); every field may be absent or null."""
    if not isinstance(value, dict):
        raise BadUpload(f"part info: {where} must be an object")
    for name, (what, check) in fields.items():
        item = value.get(name)
        if item is not None and not check(item):
            raise BadUpload(f"part info: {where}.{name} must be {what}")


def _int_in(low: int, high: int) -> Any:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _text(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= 512


def _flag(v: Any) -> bool:
    return isinstance(v, bool)


def validate_part_info(info: Any) -> dict[str, Any]:
    """A part's info as the page sends it (docs/api.md, "Uploads"), or BadUpload saying what
    is wrong. Unknown keys are kept (the size bound holds them)."""
    if not isinstance(info, dict):
        raise BadUpload("part info must be a JSON object")
    if len(json.dumps(info).encode()) > MAX_INFO_BYTES:
        raise BadUpload(f"part info over {MAX_INFO_BYTES} bytes")
    mime = info.get("mime_type")
    if not isinstance(mime, str) or len(mime) > 255 or not MIME_TYPE.fullmatch(mime.strip()):
        raise BadUpload("part info: mime_type must be a WebM type (video/webm;codecs=...)")
    started = info.get("started_at_ms")
    if not _is_number(started) or started <= 0:
        raise BadUpload("part info: started_at_ms must be the recorder's start in ms since 1970 "
                        "on the page's clock")
    if info.get("reason") not in PART_REASONS:
        raise BadUpload(f"part info: reason must be one of {', '.join(PART_REASONS)}")
    if info.get("video") is None and info.get("audio") is None:
        raise BadUpload("part info: video and audio are both missing")
    if info.get("video") is not None:
        _check_fields("video", info["video"], {
            "width": ("an integer 1..16384", _int_in(1, 16384)),
            "height": ("an integer 1..16384", _int_in(1, 16384)),
            "frame_rate": ("a number 0..1000", lambda v: _is_number(v) and 0 <= v <= 1000),
            "device_id": ("a string", _text),
        })
    if info.get("audio") is not None:
        _check_fields("audio", info["audio"], {
            "sample_rate": ("an integer 1..384000", _int_in(1, 384000)),
            "channel_count": ("an integer 1..32", _int_in(1, 32)),
            "device_id": ("a string", _text),
            "echo_cancellation": ("true or false", _flag),
            "noise_suppression": ("true or false", _flag),
            "auto_gain_control": ("true or false", _flag),
        })
    return info


def _check_id(value: str) -> str:
    if not isinstance(value, str) or not SAFE_ID.fullmatch(value):
        raise BadUpload(f"not an id: {value!r}")
    return value


def _check_part(part: int) -> None:
    if isinstance(part, bool) or not isinstance(part, int) or not 0 <= part <= MAX_PART:
        raise BadUpload(f"part must be 0..{MAX_PART}")


def _check_open(upload: Upload) -> None:
    if upload.revoked:
        raise Revoked()
    if upload.closed:
        raise UploadClosed(upload.closed)


def _declared(upload: Upload, part: int) -> Part:
    found = upload.parts.get(part)
    if found is None:
        raise UploadConflict(f"part {part} is not declared: PUT its info first")
    return found


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync; a failed write is cut off again, and a line some
    earlier failure left unterminated cannot swallow this one. (Unbuffered: a buffered
    file would retry the failed bytes on truncate and on close.)"""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        line = json.dumps(record).encode() + b"\n"
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


class UploadStore:
    """Every upload of the server, under ``root`` (<data-dir>/uploads)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def performer_dir(self, session_id: str, performer_id: str) -> Path:
        return self.root / _check_id(session_id) / _check_id(performer_id)

    @contextmanager
    def _locked(self, session_id: str, performer_id: str) -> Iterator[Path]:
        path = self.performer_dir(session_id, performer_id)
        try:
            if not path.is_dir():
                path.mkdir(parents=True, exist_ok=True)
                fsync_dir(path.parent)
                fsync_dir(path.parent.parent)
            fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageFull(exc.strerror) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield path
        finally:
            os.close(fd)

    def _save(self, path: Path, record: dict[str, Any]) -> None:
        try:
            write_json_atomic(path / RECORD, record)
        except OSError as exc:
            raise StorageFull(exc.strerror) from exc

    # --- the protocol ------------------------------------------------------------------------

    def declare_part(
        self, session_id: str, performer_id: str, part: int, info: Any
    ) -> dict[str, Any]:
        """A part's info: {"part", "repeat"}; the same info again is a repeat, different info
        for a declared part a conflict."""
        _check_part(part)
        info = validate_part_info(info)
        with self._locked(session_id, performer_id) as path:
            upload = read_upload(path)
            _check_open(upload)
            known = upload.parts.get(part)
            if known is not None:
                if known.info != json.loads(json.dumps(info)):
                    raise UploadConflict(f"part {part} was declared with different info")
                return {"part": part, "repeat": True}
            record = _load_record(path)
            record.setdefault("parts", {})[str(part)] = {
                "info": info, "ended": None, "declared_at": utc_now_iso()}
            self._save(path, record)
            return {"part": part, "repeat": False}

    def put_chunk(
        self,
        session_id: str,
        performer_id: str,
        part: int,
        index: int,
        data: bytes,
        sha256_hex: str,
        recorded_chunks: int | None,
        limits: UploadLimits,
    ) -> dict[str, Any]:
        """Store one chunk durably, then acknowledge it: {"part", "index", "bytes", "sha256",
        "repeat"} (``repeat``: the same body was acknowledged before; nothing was written)."""
        _check_part(part)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= MAX_INDEX:
            raise BadUpload(f"index must be 0..{MAX_INDEX}")
        claimed = (sha256_hex or "").strip().lower()
        if not SHA256_HEX.fullmatch(claimed) or hashlib.sha256(data).hexdigest() != claimed:
            raise ChunkDigestError()
        with self._locked(session_id, performer_id) as path:
            upload = read_upload(path)
            _check_open(upload)
            known = _declared(upload, part)
            ack = {"part": part, "index": index, "bytes": len(data), "sha256": claimed}
            earlier = known.acks.get(index)
            if earlier is not None:
                if earlier.sha256 != claimed:
                    raise ChunkConflict(part, index)
                return {**ack, "repeat": True}
            if known.ended is not None and index >= known.ended:
                raise UploadConflict(f"part {part} ended with {known.ended} chunks")
            if index == 0 and not data.startswith(EBML_MAGIC):
                raise NotWebm()
            if len(data) > limits.max_chunk_bytes:
                raise UploadTooLarge(f"chunk over {limits.max_chunk_bytes} bytes")
            if upload.bytes() + len(data) > limits.max_total_bytes:
                raise UploadTooLarge(f"upload cap of {limits.max_total_bytes} bytes reached")
            line = {"index": index, "bytes": len(data), "sha256": claimed, "at": utc_now_iso(),
                    "recorded": recorded_chunks if isinstance(recorded_chunks, int) else None}
            try:
                new_dir = not known.path.is_dir()
                write_bytes_atomic(known.chunk_path(index), data)
                if new_dir:
                    fsync_dir(path)
                _append_line(known.path / ACKS, line)
            except OSError as exc:
                raise StorageFull(exc.strerror) from exc
            return {**ack, "repeat": False}

    def end_part(self, session_id: str, performer_id: str, part: int, chunks: int) -> dict[str, Any]:
        """The part has exactly chunks 0..chunks-1: {"part", "chunks", "complete", "repeat"}."""
        _check_part(part)
        if isinstance(chunks, bool) or not isinstance(chunks, int) or not 0 <= chunks <= MAX_INDEX + 1:
            raise BadUpload(f"chunks must be 0..{MAX_INDEX + 1}")
        with self._locked(session_id, performer_id) as path:
            upload = read_upload(path)
            _check_open(upload)
            known = _declared(upload, part)
            beyond = [i for i in known.acks if i >= chunks]
            if beyond:
                raise UploadConflict(
                    f"part {part} cannot end at {chunks} chunks: chunk {max(beyond)} is acknowledged")
            repeat = known.ended is not None
            if repeat and known.ended != chunks:
                raise UploadConflict(f"part {part} ended with {known.ended} chunks already")
            if not repeat:
                record = _load_record(path)
                record["parts"][str(part)]["ended"] = {"chunks": chunks, "at": utc_now_iso()}
                self._save(path, record)
                known.ended = chunks
            return {"part": part, "chunks": chunks, "complete": known.complete, "repeat": repeat}

    def status(
        self, session_id: str, performer_id: str, limits: UploadLimits | None = None
    ) -> dict[str, Any]:
        """What the server holds: the page resumes from it, the consoles show it. ``acked``
        lists inclusive index ranges ([[0, 11], [13, 20]]); ``complete``: ready to place."""
        upload = read_upload(self.performer_dir(session_id, performer_id))
        acks = upload.acks()
        times = sorted(a.at for a in acks)
        return {
            "state": upload.state(),
            "complete": upload.complete,
            "parts": [
                {"part": p.number, "acked": _ranges(list(p.acks)), "ended": p.ended is not None,
                 "chunks": p.ended, "recorded": p.recorded, "bytes": p.bytes()}
                for p in sorted(upload.parts.values(), key=lambda p: p.number)
            ],
            "acked_chunks": len(acks),
            "recorded_chunks": sum(p.recorded for p in upload.parts.values()) if upload.parts else None,
            "bytes": upload.bytes(),
            "max_bytes": limits.max_total_bytes if limits else None,
            "first_chunk_at": times[0] if times else None,
            "last_chunk_at": times[-1] if times else None,
        }

    # --- the end of an upload ------------------------------------------------------------------

    def settle(self, session_id: str, performer_id: str, state: str) -> None:
        """The copy was placed (``state``: complete, incomplete, rejected): its chunks go, the
        record stays, and every later request gets UploadClosed(state)."""
        with self._locked(session_id, performer_id) as path:
            record = _load_record(path)
            if record.get("revoked"):
                return
            record["closed"] = {"state": state, "at": utc_now_iso()}
            self._save(path, record)
            for chunk in path.glob("p*/*.chunk"):
                chunk.unlink(missing_ok=True)

    def delete(self, session_id: str, performer_id: str | None = None) -> None:
        """Consent revoked (or the session deleted): every chunk of this performer (of every
        performer of the session when None) goes; what is left is a marker that answers
        Revoked to every later request."""
        if performer_id is None:
            session = self.root / _check_id(session_id)
            performers = sorted(p.name for p in session.iterdir() if p.is_dir()) if session.is_dir() else []
        else:
            performers = [performer_id]
        for pid in performers:
            with self._locked(session_id, pid) as path:
                for part in path.glob("p[0-9]*"):
                    shutil.rmtree(part, ignore_errors=True)
                self._save(path, {"parts": {}, "revoked": True, "closed": None,
                                  "revoked_at": utc_now_iso()})

    def revoke_performer(self, performer_id: str) -> list[str]:
        """:meth:`delete` in every session this performer uploaded into; their session ids."""
        sessions = sorted(p.parent.name for p in self.root.glob(f"*/{_check_id(performer_id)}")
                          if p.is_dir())
        for session_id in sessions:
            self.delete(session_id, performer_id)
        return sessions

    def pending(self) -> Iterator[tuple[str, str]]:
        """(session_id, performer_id) of every upload not placed, closed or revoked yet."""
        for path in sorted(self.root.glob(f"*/*/{RECORD}")):
            try:
                record = _load_record(path.parent)
            except (OSError, ValueError):
                continue
            if not record.get("revoked") and not record.get("closed"):
                yield path.parent.parent.name, path.parent.name
