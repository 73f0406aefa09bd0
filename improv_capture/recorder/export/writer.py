"""How an export reaches DEST: every file is written under DEST/.export-tmp/ first and moved
into place only when the whole run has succeeded; a file whose bytes are those already in
DEST is left untouched (its mtime stays), and the files of the previous export that this run
no longer makes are removed. On any error the temp dir goes and DEST holds the previous
export as it was (or nothing, on a first export).

The previous export is known by its export.json: only files it lists are ever removed, so
DEST may hold other things."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType

from improv_capture.recorder.export import ExportError
from improv_capture.recorder.files import fsync_dir, sha256_file

TMP_DIR = ".export-tmp"
LOCK_FILE = ".export-lock"
#: The export's index (export.json): written last, lists every other file; this key marks
#: an index as one of ours (only files an index of ours lists are ever removed).
INDEX = "export.json"
VERSION_KEY = "export_version"


@dataclass(frozen=True)
class FileRecord:
    bytes: int
    sha256: str

    def entry(self) -> dict[str, object]:
        return {"bytes": self.bytes, "sha256": self.sha256}


@dataclass
class Changes:
    """What a run did to DEST."""

    rewritten: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0


def _relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or name.startswith("."):
        raise ValueError(f"not a path inside DEST: {name}")
    return path


class Staging:
    """The files of one run, staged under DEST/.export-tmp/. Use as a context manager: leaving
    it with an exception (or without :meth:`commit`) removes everything staged."""

    def __init__(self, dest: Path) -> None:
        if dest.exists() and not dest.is_dir():
            raise ExportError(f"{dest}: is a file (DEST must be a directory)")
        self.dest = dest
        self._created = not dest.exists()
        self.tmp = dest / TMP_DIR
        self.files: dict[str, FileRecord] = {}
        self._blobs: dict[FileRecord, Path] = {}  # same bytes staged twice: one hard link
        self._lock_fd: int | None = None
        self._committed = False

    def __enter__(self) -> Staging:
        self.dest.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dest / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ExportError(f"{self.dest}: another export is writing there") from None
        self._lock_fd = fd
        shutil.rmtree(self.tmp, ignore_errors=True)  # left by a run that was killed
        self.tmp.mkdir()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if not self._committed and self._created:
            shutil.rmtree(self.dest, ignore_errors=True)  # a first export leaves nothing

    def path(self, name: str) -> Path:
        """Where to write ``name`` (then call :meth:`added`)."""
        path = self.tmp / _relative(name)
        if name in self.files:
            raise ValueError(f"{name} is written twice")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def added(self, name: str) -> FileRecord:
        path = self.tmp / _relative(name)
        record = FileRecord(path.stat().st_size, sha256_file(path))
        self.files[name] = record
        return record

    def put(self, name: str, data: bytes) -> FileRecord:
        record = FileRecord(len(data), hashlib.sha256(data).hexdigest())
        path = self.path(name)
        same = self._blobs.get(record)
        try:
            if same is None:
                raise FileNotFoundError
            os.link(same, path)
        except OSError:
            path.write_bytes(data)
            self._blobs[record] = path
        self.files[name] = record
        return record

    def _previous(self) -> set[str]:
        """The files the previous export made (its index and what it lists)."""
        try:
            index = json.loads((self.dest / INDEX).read_text())
            if VERSION_KEY not in index:
                return set()  # some other tool's export.json: nothing of it is ours
            names = set(index.get("files") or {}) | {INDEX}
        except (OSError, ValueError, AttributeError, TypeError):
            return set()
        safe = set()
        for name in names:
            try:
                _relative(name)
            except ValueError:
                continue
            safe.add(name)
        return safe

    def _same(self, name: str) -> bool:
        target = self.dest / name
        record = self.files[name]
        return (target.is_file() and not target.is_symlink()
                and target.stat().st_size == record.bytes and sha256_file(target) == record.sha256)

    def commit(self) -> Changes:
        """Move every staged file whose bytes differ into place (the index last), remove the
        previous export's files that were not made again."""
        if INDEX not in self.files:
            raise ValueError(f"{INDEX} is not staged")
        for name in self.files:
            if (self.dest / name).is_dir():
                raise ExportError(f"{self.dest / name}: is a directory, where the export writes a file")
        previous = self._previous()  # before the new index replaces it
        changes = Changes()
        touched: set[Path] = set()
        for name in sorted(self.files, key=lambda n: (n == INDEX, n)):
            if self._same(name):
                changes.unchanged += 1
                continue
            staged, target = self.tmp / name, self.dest / name
            with open(staged, "rb") as f:
                os.fsync(f.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
            touched.add(target.parent)
            changes.rewritten.append(name)
        self._committed = True
        for name in sorted(previous - set(self.files)):
            target = self.dest / name
            if target.is_file() or target.is_symlink():
                target.unlink()
                changes.removed.append(name)
                touched.add(target.parent)
        for directory in sorted(touched, key=lambda p: len(p.parts), reverse=True):
            self._prune(directory)
        for directory in touched:
            if directory.exists():
                fsync_dir(directory)
        return changes

    def _prune(self, directory: Path) -> None:
        """Remove directories the removals left empty, up to DEST."""
        while directory != self.dest and self.dest in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent
