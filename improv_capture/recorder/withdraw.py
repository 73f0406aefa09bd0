"""Consent withdrawn: a performer's media leaves a session; the manifest keeps who and when."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from improv_capture.recorder.files import fsync_dir
from improv_capture.recorder.hq.entry import hq_entry, hq_relative_path
from improv_capture.recorder.hq.uploads import UploadStore
from improv_capture.recorder.manifest import rewrite_manifest


def withdraw_performer(
    session_dir: Path,
    performer_id: str,
    revoked_at: str,
    reason: str | None,
    uploads_root: Path | None = None,
) -> bool:
    """Delete the performer's media from this session: the live copy, the high-quality copy,
    the part recorded on a node that died, and (with ``uploads_root``, <data-dir>/uploads)
    every chunk of it still uploading, which also refuses later chunks. False if they are not
    in the session (or were withdrawn already)."""
    if uploads_root is not None:
        UploadStore(uploads_root).delete(session_dir.name, performer_id)

    def change(manifest: dict[str, Any]) -> bool:
        performer = next(
            (p for p in manifest.get("performers", []) if p["performer_id"] == performer_id), None
        )
        if performer is None or performer.get("withdrawn"):
            return False
        paths = {f"performers/{performer_id}.webm", hq_relative_path(performer_id)}
        # and the part recorded on a node that died, once it joined (recorder/continued.py)
        earlier = performer.get("earlier") or {}
        for entry in (performer.get("file"), (performer.get("hq") or {}).get("file"),
                      earlier.get("file"), (earlier.get("hq") or {}).get("file")):
            if entry:
                paths.add(entry["path"])
        for relative in paths:
            (session_dir / relative).unlink(missing_ok=True)
        # a placement in progress leaves its temp file; it sees the withdrawal and stops
        for temp in (session_dir / "performers").glob(f".{performer_id}.hq.webm*"):
            temp.unlink(missing_ok=True)
        if (session_dir / "performers").exists():
            fsync_dir(session_dir / "performers")
        performer["file"] = None
        performer["tracks"] = []
        performer["capture"] = None
        if performer.get("hq"):
            performer["hq"] = hq_entry("withdrawn", "consent revoked")
        if earlier:
            performer["earlier"] = {"file": None, "tracks": [], "withdrawn": True}
        performer["withdrawn"] = {"revoked_at": revoked_at, "reason": reason}
        manifest["files"] = [f for f in manifest.get("files", []) if f["path"] not in paths]
        return True

    return rewrite_manifest(session_dir, change) is not None
