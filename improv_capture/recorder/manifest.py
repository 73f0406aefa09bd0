"""A finalised session changes later (a high-quality copy joins, a performer withdraws): each
change is one rewrite of manifest.json and SHA256SUMS under the session's lock, and bumps the
manifest's ``revision`` so that downstream mirrors know to fetch it again."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from improv_capture.clock import utc_now_iso
from improv_capture.recorder.files import write_json_atomic
from improv_capture.recorder.finalise import write_sha256sums

#: Lock files live beside the session directories, never inside one (SHA256SUMS covers
#: every file of a session directory).
LOCKS_DIR = ".locks"


@contextmanager
def session_lock(session_dir: Path) -> Iterator[None]:
    """Exclusive across threads and processes (``recover`` may run beside a server)."""
    locks = session_dir.parent / LOCKS_DIR
    locks.mkdir(exist_ok=True)
    fd = os.open(locks / f"{session_dir.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def read_manifest(session_dir: Path) -> dict[str, Any]:
    return dict(json.loads((session_dir / "manifest.json").read_text()))


def rewrite_manifest(
    session_dir: Path, change: Callable[[dict[str, Any]], bool | None]
) -> dict[str, Any] | None:
    """Apply ``change`` to the manifest under the session's lock. ``change`` edits the dict in
    place (and the files it names, before returning); returning False means nothing changed
    and nothing is written. Returns the manifest as written, or None."""
    with session_lock(session_dir):
        manifest = read_manifest(session_dir)
        if change(manifest) is False:
            return None
        manifest["revision"] = int(manifest.get("revision") or 1) + 1
        manifest["updated_at"] = utc_now_iso()
        write_json_atomic(session_dir / "manifest.json", manifest)
        write_sha256sums(session_dir)
        return manifest
