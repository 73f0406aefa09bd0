"""Which sessions SRC holds, and whether each can be exported: finished, and every file it
lists present and matching its sha256 (SHA256SUMS and the manifest's ``files[]``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from improv_capture.recorder.export import ExportError
from improv_capture.recorder.files import (
    SUMS,
    SumsError,
    read_sums,
    safe_path,
    sha256_file,
)
from improv_capture.recorder.hq.uploads import SAFE_ID

MANIFEST = "manifest.json"
#: States an export takes (`partial`: lossy or interrupted, every file still decodes; its
#: gaps are in the samples' flags). `failed` sessions are skipped with a note; a session still
#: `recording` stops the export (it may be running, or need `improv-capture recover`).
EXPORTED_STATES = ("complete", "partial")
SKIPPED_STATES = ("failed",)


@dataclass
class Session:
    """One checked session archive."""

    path: Path
    manifest: dict[str, Any]
    #: performers in manifest order, withdrawn ones left out (they never appear anywhere)
    performers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        return str(self.manifest["session_id"])

    @property
    def revision(self) -> int:
        return int(self.manifest.get("revision") or 1)

    @property
    def duration_s(self) -> float:
        return float(self.manifest.get("duration_s") or 0.0)


def archive_name(path: Path) -> str:
    """A performer file as messages name it: ``<session_id>/performers/<file>``."""
    return "/".join(path.parts[-3:])


def session_dirs(src: Path) -> list[Path]:
    """SRC is a session directory (it has manifest.json), a data dir (it has ``sessions/``)
    or a fetch mirror (session directories directly inside); names starting with ``.`` are
    the tools' own (locks, partial downloads) and never sessions."""
    if (src / MANIFEST).is_file():
        return [src]
    parent = src / "sessions" if (src / "sessions").is_dir() else src
    found = []
    if parent.is_dir():
        found = sorted(p for p in parent.iterdir()
                       if not p.name.startswith(".") and (p / MANIFEST).is_file())
    if not found:
        raise ExportError(f"{src}: no session here (a session directory with manifest.json, "
                          "a data dir with sessions/, or a fetch mirror)")
    return found


def listed_files(manifest: dict[str, Any]) -> dict[str, str]:
    """{path: sha256} of every file the manifest names: ``files[]`` and each performer's copies."""
    entries = list(manifest.get("files") or [])
    for performer in manifest.get("performers") or []:
        entries += [performer.get("file"), (performer.get("hq") or {}).get("file")]
    return {e["path"]: e["sha256"] for e in entries if e}


def check_files(session_dir: Path, manifest: dict[str, Any]) -> None:
    """Every file SHA256SUMS or the manifest lists is there and has its digest (each file
    hashed once); the manifest itself is covered by SHA256SUMS."""
    name = session_dir.name
    if not (session_dir / SUMS).is_file():
        raise ExportError(f"missing file: {name}/{SUMS}")
    try:
        sums = read_sums(session_dir)
    except SumsError as exc:
        raise ExportError(f"corrupt archive: {name}/{exc}") from None
    wanted = listed_files(manifest)
    for path in sorted(set(sums) | set(wanted)):
        if not safe_path(path):
            raise ExportError(f"corrupt archive: {name}/{path}: a path outside the session")
        full = session_dir / path
        if not full.is_file():
            raise ExportError(f"missing file: {name}/{path}")
        if path not in sums:
            raise ExportError(f"corrupt archive: {name}/{path}: not in {SUMS}")
        digest = sha256_file(full)
        if digest != sums[path] or digest != wanted.get(path, digest):
            raise ExportError(f"corrupt archive: {name}/{path}: sha256 mismatch")


def load_session(session_dir: Path) -> Session | str:
    """The checked session, or why it is skipped (a note). Raises ExportError when the export
    cannot go on."""
    name = session_dir.name
    try:
        manifest = json.loads((session_dir / MANIFEST).read_text())
    except ValueError as exc:
        raise ExportError(f"corrupt archive: {name}/{MANIFEST}: not JSON ({exc})") from None
    if not isinstance(manifest, dict) or not all(isinstance(p, dict) for p in manifest.get("performers") or []):
        raise ExportError(f"corrupt archive: {name}/{MANIFEST}: not a session manifest")
    state = manifest.get("state")
    if state == "recording":
        raise ExportError(f"{name}: still recording (a running recording, or an interrupted one: "
                          "`improv-capture recover` finalises it)")
    if state in SKIPPED_STATES:
        return f"{name}: skipped, state {state} ({manifest.get('reason')})"
    if state not in EXPORTED_STATES:
        raise ExportError(f"{name}: unknown state {state!r}")
    # ids become file names in DEST: plain names only (a crafted manifest must not write
    # outside it)
    ids = [manifest.get("session_id")] + [p.get("performer_id") for p in manifest.get("performers") or []]
    bad = next((i for i in ids if not isinstance(i, str) or not SAFE_ID.fullmatch(i)), None)
    if bad is not None:
        raise ExportError(f"corrupt archive: {name}/{MANIFEST}: id {bad!r} is not a plain name "
                          "(letters, digits, _ and -)")
    check_files(session_dir, manifest)
    performers = [p for p in manifest.get("performers") or [] if not p.get("withdrawn")]
    return Session(session_dir, manifest, performers)
