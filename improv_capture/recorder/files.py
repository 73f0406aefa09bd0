"""Durable file writes: a crash leaves the old file or the new one, never half of one. And a
session's SHA256SUMS, read and written here only (the recorder, fetch, export and the S3
archive all use these)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

#: A session directory's checksums: ``sha256sum`` format over every other file of it
#: (docs/archive-format.md).
SUMS = "SHA256SUMS"
#: A line as written (``sha256sum`` text mode): lowercase hex digest, two spaces, the path.
SUMS_LINE = re.compile(r"([0-9a-f]{64})  (.+)")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Path, data: object) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(session_dir: Path, path: Path) -> dict[str, object]:
    """A manifest file entry: path relative to the session directory, size and digest."""
    return {
        "path": path.relative_to(session_dir).as_posix(),
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def describe_error(exc: BaseException) -> str:
    """An error as a manifest reason: what failed and on which file, no server paths."""
    if isinstance(exc, OSError) and exc.strerror:
        name = Path(str(exc.filename)).name if exc.filename else None
        return f"{exc.strerror} ({name})" if name else exc.strerror
    return str(exc) or type(exc).__name__


class SumsError(ValueError):
    """A SHA256SUMS that cannot be trusted: a line not as written, a path outside the
    session directory, a path listed twice. The message names the line."""


def safe_path(path: str) -> bool:
    """A path that stays inside the session directory (a manifest's or SHA256SUMS' path, a
    session id): relative, no empty, ``.`` or ``..`` part, no backslash or NUL."""
    return bool(path) and not path.startswith("/") and "\\" not in path and "\x00" not in path \
        and all(part not in ("", ".", "..") for part in path.split("/"))


def parse_sums(data: bytes) -> dict[str, str]:
    """SHA256SUMS as {path: sha256}, in file order. Hostile input (another tool's file, a
    crafted mirror) is refused whole rather than skipped line by line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SumsError(f"{SUMS}: not UTF-8 text") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the last line's end
    listed: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        match = SUMS_LINE.fullmatch(line)
        if match is None:
            raise SumsError(f"{SUMS} line {number}: not '<sha256>  <path>'")
        digest, path = match.groups()
        if not safe_path(path):
            raise SumsError(f"{SUMS} line {number}: {path}: a path outside the session")
        if path in listed:
            raise SumsError(f"{SUMS} line {number}: {path}: listed twice")
        listed[path] = digest
    return listed


def read_sums(session_dir: Path, missing_ok: bool = False) -> dict[str, str]:
    """``session_dir``'s SHA256SUMS (parse_sums); {} when there is none and ``missing_ok``,
    else FileNotFoundError."""
    path = session_dir / SUMS
    if missing_ok and not path.exists():
        return {}
    return parse_sums(path.read_bytes())


def format_sums(digests: Mapping[str, str]) -> bytes:
    """SHA256SUMS of {path: sha256}, sorted by path: the same files give the same bytes."""
    return "".join(f"{digests[path]}  {path}\n" for path in sorted(digests)).encode("utf-8")


def sums_covered(session_dir: Path) -> dict[str, Path]:
    """{path: file} of every file SHA256SUMS covers: all but itself and hidden files (temp
    files of atomic writes)."""
    return {path.relative_to(session_dir).as_posix(): path
            for path in session_dir.rglob("*")
            if path.is_file() and not path.name.startswith(".") and path != session_dir / SUMS}
