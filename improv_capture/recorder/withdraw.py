"""Consent withdrawn: a performer's media leaves a session; the manifest keeps who and when."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from improv_capture.recorder.files import fsync_dir
from improv_capture.recorder.manifest import rewrite_manifest


def withdraw_performer(session_dir: Path, performer_id: str, revoked_at: str, reason: str | None) -> bool:
    """Delete the performer's media from this session; False if they are not in it (or were
    withdrawn already)."""

    def change(manifest: dict[str, Any]) -> bool:
        performer = next(
            (p for p in manifest.get("performers", []) if p["performer_id"] == performer_id), None
        )
        if performer is None or performer.get("withdrawn"):
            return False
        entry = performer.get("file")
        paths = {entry["path"]} if entry else set()
        paths.add(f"performers/{performer_id}.webm")
        for relative in paths:
            (session_dir / relative).unlink(missing_ok=True)
        if (session_dir / "performers").exists():
            fsync_dir(session_dir / "performers")
        performer["file"] = None
        performer["tracks"] = []
        performer["capture"] = None
        performer["withdrawn"] = {"revoked_at": revoked_at, "reason": reason}
        manifest["files"] = [f for f in manifest.get("files", []) if f["path"] not in paths]
        return True

    return rewrite_manifest(session_dir, change) is not None
