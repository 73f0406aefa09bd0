"""Consent withdrawn: a performer's media leaves a session; the manifest keeps who and when."""

from __future__ import annotations

import json
from pathlib import Path

from improv_capture.recorder.files import fsync_dir, write_json_atomic
from improv_capture.recorder.finalise import write_sha256sums


def withdraw_performer(session_dir: Path, performer_id: str, revoked_at: str, reason: str | None) -> bool:
    """Delete the performer's media from this session; False if they are not in it."""
    manifest_path = session_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    performer = next(
        (p for p in manifest.get("performers", []) if p["performer_id"] == performer_id), None
    )
    if performer is None:
        return False
    entry = performer.get("file")
    paths = {entry["path"]} if entry else set()
    paths.add(f"performers/{performer_id}.webm")
    for relative in paths:
        (session_dir / relative).unlink(missing_ok=True)
    fsync_dir(session_dir / "performers") if (session_dir / "performers").exists() else None
    performer["file"] = None
    performer["tracks"] = []
    performer["capture"] = None
    performer["withdrawn"] = {"revoked_at": revoked_at, "reason": reason}
    manifest["files"] = [f for f in manifest.get("files", []) if f["path"] not in paths]
    write_json_atomic(manifest_path, manifest)
    write_sha256sums(session_dir)
    return True
