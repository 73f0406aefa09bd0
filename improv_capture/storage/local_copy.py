"""The local copy of a stored session, removed when IMPROV_S3_KEEP_LOCAL=false.

Only the media files go (every file manifest.json lists); manifest.json and SHA256SUMS stay,
so the catalog is still rebuilt from the data dir, the session API still reads its manifest,
and a later revision (a performer withdraws) still rewrites them under the session's lock.
A session whose high-quality copy may still arrive keeps its media: placing the copy reads
the live recording; so does one whose earlier part is still to join (its manifest and sums
are rewritten over the files then)."""

from __future__ import annotations

import json
from pathlib import Path

from improv_capture.recorder.continued import waiting_for
from improv_capture.recorder.files import fsync_dir, safe_path
from improv_capture.recorder.manifest import session_lock


def remove_local_media(session_dir: Path, stored_revision: int) -> bool:
    """Remove the media of ``session_dir`` if its current revision is the stored one and no
    high-quality copy is still uploading; True when the local copy is (now) only metadata."""
    with session_lock(session_dir):
        manifest = json.loads((session_dir / "manifest.json").read_text())
        if int(manifest.get("revision") or 1) != stored_revision:
            return False  # changed since it was stored: the next upload comes first
        if any((p.get("hq") or {}).get("state") == "uploading" for p in manifest.get("performers", [])):
            return False
        if waiting_for(manifest) is not None:
            return False  # its earlier part joins it later (recorder/continued.py)
        dirs = set()
        for entry in manifest.get("files", []):
            if safe_path(entry["path"]):
                path = session_dir / entry["path"]
                path.unlink(missing_ok=True)
                dirs.add(path.parent)
        for directory in dirs:
            if directory.exists():
                fsync_dir(directory)
    return True


def local_media_missing(session_dir: Path, manifest: dict[str, object]) -> bool:
    """Whether any file the manifest lists is absent here (removed after upload)."""
    files = manifest.get("files") or []
    assert isinstance(files, list)
    return any(not (session_dir / f["path"]).is_file() for f in files)
