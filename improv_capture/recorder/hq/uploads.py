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
An acknowledged chunk is never written again. A line is one once its newline is written: a
write that failed is cut off again, and one a crash cut short is ended by the next line's
leading newline (an ack if it was whole, else a line that is skipped). Every method blocks
(the server calls them in ``asyncio.to_thread``); every refusal is an
:mod:`improv_capture.recorder.hq.errors` error.

A page sends thousands of chunks per take, so a chunk must not cost a read of all the others:
the store keeps what it parsed of each upload (:class:`Upload`, bounded by ``cache_acks``) and
brings it up to date under the upload's lock at each use, from the disk, which stays the one
truth (a restarted server, or another process sharing the data dir, reads the same files):
upload.json is read again only when its (inode, size, mtime, ctime) changed, and of each
acks.jsonl only what was appended since.
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
import threading
from collections import OrderedDict
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
    UploadError,
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
#: Acknowledgements the store keeps parsed in memory, over all its uploads (about 32 bytes
#: each; an upload counts one more). Past it the least recently used upload is dropped and
#: read again from disk when next asked for. A million is some 17 performer-hours of a
#: 4 Mbit/s copy in the page's 32 KiB chunks: far more than are ever uploading at once.
CACHE_ACKS = 1_000_000


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
    """One line of acks.jsonl."""

    index: int
    bytes: int
    sha256: str
    at: str
    recorded: int | None = None

    @classmethod
    def parse(cls, line: bytes) -> Ack | None:
        """The line's acknowledgement, or None for a line that is none (cut by a crash)."""
        try:
            record = json.loads(line)
            ack = cls(int(record["index"]), int(record["bytes"]), str(record["sha256"]),
                      str(record["at"]), record.get("recorded"))
        except (ValueError, KeyError, TypeError):
            return None
        return ack if ack.index >= 0 and SHA256_HEX.fullmatch(ack.sha256) else None


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


class AckLog:
    """A part's acks.jsonl as far as it was parsed (``offset`` bytes of whole lines), with what
    a chunk request and the progress need kept up to date line by line: each chunk's digest
    (32 bytes each in one array while they come in order, a dict for those past a hole), the
    bytes, the highest index, the page's recorded count, the first and last times."""

    def __init__(self, inode: int = 0) -> None:
        self.inode = inode
        self.offset = 0
        #: the file went on past ``offset`` without a newline at the last look
        self.cut = False
        self._in_order = bytearray()
        self._beyond: dict[int, bytes] = {}
        self.bytes = 0
        self.highest = -1
        self.reported = 0
        self.first_at: str | None = None
        self.last_at: str | None = None

    @property
    def contiguous(self) -> int:
        """Chunks acknowledged from 0 up to the first missing one."""
        return len(self._in_order) // 32

    def __len__(self) -> int:
        return self.contiguous + len(self._beyond)

    def __contains__(self, index: object) -> bool:
        return (isinstance(index, int) and 0 <= index < self.contiguous) or index in self._beyond

    def __iter__(self) -> Iterator[int]:
        yield from range(self.contiguous)
        yield from sorted(self._beyond)

    def digest(self, index: int) -> str | None:
        if 0 <= index < self.contiguous:
            return self._in_order[32 * index : 32 * index + 32].hex()
        found = self._beyond.get(index)
        return found.hex() if found is not None else None

    def add(self, ack: Ack) -> None:
        """The first line of an index is its acknowledgement; a later one changes nothing."""
        if ack.index in self:
            return
        digest = bytes.fromhex(ack.sha256)
        if ack.index == self.contiguous:
            self._in_order += digest
            while self.contiguous in self._beyond:
                self._in_order += self._beyond.pop(self.contiguous)
        else:
            self._beyond[ack.index] = digest
        self.bytes += ack.bytes
        self.highest = max(self.highest, ack.index)
        if isinstance(ack.recorded, int) and not isinstance(ack.recorded, bool):
            self.reported = max(self.reported, ack.recorded)
        # one fixed ISO format (improv_capture.clock): text order is time order
        self.first_at = ack.at if self.first_at is None else min(self.first_at, ack.at)
        self.last_at = ack.at if self.last_at is None else max(self.last_at, ack.at)

    def ranges(self) -> list[list[int]]:
        """Inclusive index ranges: [[0, 11], [13, 20]]."""
        head = [[0, self.contiguous - 1]] if self.contiguous else []
        return head + _ranges(list(self._beyond))


@dataclass
class Part:
    """One run of the page's recorder: its info, its end (chunk count) and its chunks."""

    number: int
    path: Path
    info: dict[str, Any]
    ended: int | None = None
    acks: AckLog = field(default_factory=AckLog)

    def chunk_path(self, index: int) -> Path:
        return self.path / f"{index:06d}.chunk"

    def read_acks(self) -> int:
        """Parse what was appended to acks.jsonl since the last look (all of it if the file is
        another one now); the bytes read. A last line without its newline is left for later."""
        acks, path = self.acks, self.path / ACKS
        try:
            known = os.stat(path)
            if known.st_ino == acks.inode and known.st_size == acks.offset:
                return 0
            with open(path, "rb") as f:
                current = os.fstat(f.fileno())
                if current.st_ino != acks.inode or current.st_size < acks.offset:
                    self.acks = acks = AckLog(current.st_ino)  # another file: from its start
                f.seek(acks.offset)
                data = f.read()
        except FileNotFoundError:
            if acks.inode:
                self.acks = AckLog()
            return 0
        whole = data.rfind(b"\n") + 1
        for line in data[:whole].split(b"\n")[:-1]:
            ack = Ack.parse(line)
            if ack is not None:
                acks.add(ack)
        acks.offset += whole
        acks.cut = whole < len(data)
        return len(data)

    def end_cut_line(self) -> int:
        """Under the lock (no write is half way then): a last line a crash cut short gets its
        newline, and is read (an acknowledgement if it was whole, else a line skipped), so
        that a chunk is never written again under an index such a line acknowledges."""
        if not self.acks.cut:
            return 0
        try:
            fd = os.open(self.path / ACKS, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StorageFull(exc.strerror) from exc
        return self.read_acks()

    def reader(self) -> ChunkFile:
        """The part's acknowledged prefix (:meth:`prefix`), read as one file."""
        return ChunkFile([self.chunk_path(i) for i in self.prefix()])

    def prefix(self) -> list[int]:
        """The acknowledged chunks from 0 up to the first missing one: what decodes."""
        count = self.acks.contiguous
        return list(range(count if self.ended is None else min(count, self.ended)))

    @property
    def complete(self) -> bool:
        return self.ended is not None and min(self.acks.contiguous, self.ended) == self.ended

    @property
    def recorded(self) -> int:
        """Chunks the page has recorded of this part, as far as the server knows."""
        return max(self.acks.highest + 1, self.ended or 0, self.acks.reported)

    def bytes(self) -> int:
        return self.acks.bytes


@dataclass
class Upload:
    """What is on disk of one performer's copy, as of its last :meth:`refresh` (a consistent
    view without the lock too: upload.json is replaced atomically, acknowledgements are only
    appended)."""

    path: Path
    parts: dict[int, Part] = field(default_factory=dict)
    revoked: bool = False
    closed: str | None = None
    #: upload.json as read, and what it was read at: (inode, size, mtime, ctime)
    record: dict[str, Any] = field(default_factory=dict, repr=False)
    signature: tuple[int, ...] | None = field(default=None, repr=False)
    #: what this view read so far: upload.json reads, and bytes of acks.jsonl
    records_read: int = field(default=0, repr=False)
    acks_read: int = field(default=0, repr=False)

    def refresh(self, mend: bool = False) -> Upload:
        """Up to date with the disk: upload.json if it changed, each part's new lines (and
        with ``mend``, under the lock, a line a crash cut short ended: Part.end_cut_line)."""
        self.read_record()
        for part in self.parts.values():
            self.acks_read += part.read_acks()
            if mend:
                self.acks_read += part.end_cut_line()
        return self

    def read_record(self) -> None:
        path = self.path / RECORD
        try:
            known = os.stat(path)
        except FileNotFoundError:
            self._apply({}, None)
            return
        if _signature(known) == self.signature:
            return
        try:
            with open(path, "rb") as f:
                signature, text = _signature(os.fstat(f.fileno())), f.read()
        except FileNotFoundError:  # replaced just now: the next look reads the new one
            return
        self.records_read += 1
        self._apply(dict(json.loads(text)), signature)

    def _apply(self, record: dict[str, Any], signature: tuple[int, ...] | None) -> None:
        closed = record.get("closed")
        self.record, self.signature = record, signature
        self.revoked = bool(record.get("revoked"))
        self.closed = closed["state"] if closed else None
        parts: dict[int, Part] = {}
        for key, entry in record.get("parts", {}).items():
            number = int(key)
            part = self.parts.get(number) or Part(number, _part_dir(self.path, number), {})
            ended = entry.get("ended")
            part.info, part.ended = dict(entry["info"]), int(ended["chunks"]) if ended else None
            parts[number] = part
        self.parts = parts

    @property
    def complete(self) -> bool:
        """Every declared part ended and arrived: the copy can be placed."""
        return bool(self.parts) and all(p.complete for p in self.parts.values())

    @property
    def acked_chunks(self) -> int:
        return sum(len(p.acks) for p in self.parts.values())

    @property
    def first_chunk_at(self) -> str | None:
        return min((p.acks.first_at for p in self.parts.values() if p.acks.first_at), default=None)

    @property
    def last_chunk_at(self) -> str | None:
        return max((p.acks.last_at for p in self.parts.values() if p.acks.last_at), default=None)

    def bytes(self) -> int:
        return sum(p.bytes() for p in self.parts.values())

    def state(self) -> str:
        if self.revoked:
            return "revoked"
        if self.closed:
            return self.closed
        if self.complete:
            return "uploaded"
        return "uploading" if self.acked_chunks else "pending"

    def summary(self) -> dict[str, Any]:
        """What the consoles show of it (and what decides when it is placed)."""
        return {
            "state": self.state(),
            "complete": self.complete,
            "acked_chunks": self.acked_chunks,
            "recorded_chunks": sum(p.recorded for p in self.parts.values()) if self.parts else None,
            "bytes": self.bytes(),
            "first_chunk_at": self.first_chunk_at,
            "last_chunk_at": self.last_chunk_at,
        }


def _signature(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _part_dir(upload_dir: Path, part: int) -> Path:
    return upload_dir / f"p{part:04d}"


def _load_record(upload_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((upload_dir / RECORD).read_text()))
    except FileNotFoundError:
        return {"parts": {}, "revoked": False, "closed": None}


def read_upload(upload_dir: Path) -> Upload:
    """The upload in ``upload_dir`` (an empty one if nothing was declared), read afresh."""
    return Upload(upload_dir).refresh()


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
    """Every upload of the server, under ``root`` (<data-dir>/uploads).

    Each upload's :class:`Upload` is kept between requests and only used under the upload's
    flock, so that one look at a time brings it up to date; at most ``cache_acks``
    acknowledgements are kept over all uploads (an upload counts one more), the least recently
    used upload dropped first. ``records_read`` and ``acks_read`` count what the store read
    (upload.json reads, bytes of acks.jsonl): a chunk costs its own line."""

    def __init__(self, root: Path, cache_acks: int = CACHE_ACKS) -> None:
        self.root = root
        self.cache_acks = cache_acks
        self._cache: OrderedDict[Path, tuple[Upload, int]] = OrderedDict()
        self._cached = 0
        self._cache_lock = threading.Lock()
        self.records_read = 0
        self.acks_read = 0

    def performer_dir(self, session_id: str, performer_id: str) -> Path:
        return self.root / _check_id(session_id) / _check_id(performer_id)

    @contextmanager
    def _locked(self, session_id: str, performer_id: str, create: bool = True) -> Iterator[Path | None]:
        """The upload's directory, under its flock (None: it does not exist, and ``create``
        is false)."""
        path = self.performer_dir(session_id, performer_id)
        if not create and not path.is_dir():
            yield None
            return
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

    @contextmanager
    def _upload(self, session_id: str, performer_id: str, create: bool = True) -> Iterator[Upload]:
        """The upload, up to date, under its flock: the kept one (out of the cache while in
        use), or one read afresh. It goes back in unless something failed unforeseen."""
        with self._locked(session_id, performer_id, create) as path:
            if path is None:  # nothing there: nothing to keep
                yield Upload(self.performer_dir(session_id, performer_id))
                return
            with self._cache_lock:
                kept, weight = self._cache.pop(path, (None, 0))
                self._cached -= weight
            upload = kept if kept is not None else Upload(path)
            read = (upload.records_read, upload.acks_read)
            try:
                yield upload.refresh(mend=create)
            except UploadError:
                self._keep(path, upload, read)
                raise
            except BaseException:
                self._keep(None, upload, read)
                raise
            self._keep(path, upload, read)

    def _keep(self, path: Path | None, upload: Upload, read: tuple[int, int]) -> None:
        """Count what ``upload`` read; keep it (unless ``path`` is None) as the most recently
        used, and drop the least recently used others while over the bound."""
        weight = 1 + sum(len(p.acks) for p in upload.parts.values())
        with self._cache_lock:
            self.records_read += upload.records_read - read[0]
            self.acks_read += upload.acks_read - read[1]
            if path is None:
                return
            self._cache[path] = (upload, weight)
            self._cached += weight
            while self._cached > self.cache_acks and len(self._cache) > 1:
                _, (_, dropped) = self._cache.popitem(last=False)
                self._cached -= dropped

    def _forget(self, path: Path) -> None:
        with self._cache_lock:
            _, weight = self._cache.pop(path, (None, 0))
            self._cached -= weight

    def _save(self, upload: Upload, record: dict[str, Any]) -> None:
        """upload.json replaced; the kept view reads it back (its signature changed)."""
        try:
            write_json_atomic(upload.path / RECORD, record)
        except OSError as exc:
            raise StorageFull(exc.strerror) from exc
        upload.refresh()

    # --- the protocol ------------------------------------------------------------------------

    def declare_part(
        self, session_id: str, performer_id: str, part: int, info: Any
    ) -> dict[str, Any]:
        """A part's info: {"part", "repeat", "upload"}; the same info again is a repeat,
        different info for a declared part a conflict. (``upload``: :meth:`Upload.summary`
        after it, for the progress the consoles show.)"""
        _check_part(part)
        info = validate_part_info(info)
        with self._upload(session_id, performer_id) as upload:
            _check_open(upload)
            known = upload.parts.get(part)
            if known is not None:
                if known.info != json.loads(json.dumps(info)):
                    raise UploadConflict(f"part {part} was declared with different info")
                return {"part": part, "repeat": True, "upload": upload.summary()}
            record = {"parts": {}, "revoked": False, "closed": None, **upload.record}
            record["parts"] = {**record["parts"],
                               str(part): {"info": info, "ended": None, "declared_at": utc_now_iso()}}
            self._save(upload, record)
            return {"part": part, "repeat": False, "upload": upload.summary()}

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
        "repeat", "upload"} (``repeat``: the same body was acknowledged before; nothing was
        written. ``upload``: :meth:`Upload.summary` after it)."""
        _check_part(part)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= MAX_INDEX:
            raise BadUpload(f"index must be 0..{MAX_INDEX}")
        claimed = (sha256_hex or "").strip().lower()
        if not SHA256_HEX.fullmatch(claimed) or hashlib.sha256(data).hexdigest() != claimed:
            raise ChunkDigestError()
        with self._upload(session_id, performer_id) as upload:
            _check_open(upload)
            known = _declared(upload, part)
            ack = {"part": part, "index": index, "bytes": len(data), "sha256": claimed}
            earlier = known.acks.digest(index)
            if earlier is not None:
                if earlier != claimed:
                    raise ChunkConflict(part, index)
                return {**ack, "repeat": True, "upload": upload.summary()}
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
                    fsync_dir(upload.path)
                _append_line(known.path / ACKS, line)
            except OSError as exc:
                raise StorageFull(exc.strerror) from exc
            upload.acks_read += known.read_acks()  # our own line (after one a crash cut, if any)
            return {**ack, "repeat": False, "upload": upload.summary()}

    def end_part(self, session_id: str, performer_id: str, part: int, chunks: int) -> dict[str, Any]:
        """The part has exactly chunks 0..chunks-1: {"part", "chunks", "complete", "repeat",
        "upload"} (``upload``: :meth:`Upload.summary` after it)."""
        _check_part(part)
        if isinstance(chunks, bool) or not isinstance(chunks, int) or not 0 <= chunks <= MAX_INDEX + 1:
            raise BadUpload(f"chunks must be 0..{MAX_INDEX + 1}")
        with self._upload(session_id, performer_id) as upload:
            _check_open(upload)
            known = _declared(upload, part)
            if known.acks.highest >= chunks:
                raise UploadConflict(f"part {part} cannot end at {chunks} chunks: "
                                     f"chunk {known.acks.highest} is acknowledged")
            repeat = known.ended is not None
            if repeat and known.ended != chunks:
                raise UploadConflict(f"part {part} ended with {known.ended} chunks already")
            if not repeat:
                record = json.loads(json.dumps(upload.record))
                record["parts"][str(part)]["ended"] = {"chunks": chunks, "at": utc_now_iso()}
                self._save(upload, record)
                known = upload.parts[part]
            return {"part": part, "chunks": chunks, "complete": known.complete, "repeat": repeat,
                    "upload": upload.summary()}

    def summary(self, session_id: str, performer_id: str) -> dict[str, Any]:
        """:meth:`Upload.summary` of the upload as it is now."""
        with self._upload(session_id, performer_id, create=False) as upload:
            return upload.summary()

    def status(
        self, session_id: str, performer_id: str, limits: UploadLimits | None = None
    ) -> dict[str, Any]:
        """What the server holds: the page resumes from it, the consoles show it. ``acked``
        lists inclusive index ranges ([[0, 11], [13, 20]]); ``complete``: ready to place."""
        with self._upload(session_id, performer_id, create=False) as upload:
            return {
                **upload.summary(),
                "parts": [
                    {"part": p.number, "acked": p.acks.ranges(), "ended": p.ended is not None,
                     "chunks": p.ended, "recorded": p.recorded, "bytes": p.bytes()}
                    for p in sorted(upload.parts.values(), key=lambda p: p.number)
                ],
                "max_bytes": limits.max_total_bytes if limits else None,
            }

    def revoked(self, session_id: str, performer_id: str) -> bool:
        """Whether consent was revoked for this upload (:meth:`delete` left its marker): one
        small read, without the lock (upload.json is replaced atomically)."""
        return bool(_load_record(self.performer_dir(session_id, performer_id)).get("revoked"))

    # --- the end of an upload ------------------------------------------------------------------

    def settle(self, session_id: str, performer_id: str, state: str) -> None:
        """The copy was placed (``state``: complete, incomplete, rejected): its chunks go, the
        record stays, and every later request gets UploadClosed(state)."""
        with self._locked(session_id, performer_id) as path:
            assert path is not None
            self._forget(path)
            record = _load_record(path)
            if record.get("revoked"):
                return
            record["closed"] = {"state": state, "at": utc_now_iso()}
            try:
                write_json_atomic(path / RECORD, record)
            except OSError as exc:
                raise StorageFull(exc.strerror) from exc
            for chunk in path.glob("p*/*.chunk"):
                chunk.unlink(missing_ok=True)

    def delete(self, session_id: str, performer_id: str | None = None) -> None:
        """Consent revoked (or the session deleted): every chunk of this performer (of every
        performer of the session when None) goes; what is left is a marker that answers
        Revoked to every later request (made also where nothing was uploaded yet). Made once:
        a revocation heard again (every node hears its own) keeps the first marker."""
        if performer_id is None:
            session = self.root / _check_id(session_id)
            performers = sorted(p.name for p in session.iterdir() if p.is_dir()) if session.is_dir() else []
        else:
            performers = [performer_id]
        for pid in performers:
            with self._locked(session_id, pid) as path:
                assert path is not None
                self._forget(path)
                if _load_record(path).get("revoked"):
                    continue
                for part in path.glob("p[0-9]*"):
                    shutil.rmtree(part, ignore_errors=True)
                try:
                    write_json_atomic(path / RECORD, {"parts": {}, "revoked": True, "closed": None,
                                                      "revoked_at": utc_now_iso()})
                except OSError as exc:
                    raise StorageFull(exc.strerror) from exc

    def revoke_performer(self, performer_id: str, also: tuple[str, ...] = ()) -> list[str]:
        """:meth:`delete` in every session this performer uploaded into, and in the sessions
        ``also`` (still taking uploads, where nothing of theirs may have arrived yet): the
        session ids."""
        found = {p.parent.name for p in self.root.glob(f"*/{_check_id(performer_id)}") if p.is_dir()}
        sessions = sorted(found | set(also))
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
