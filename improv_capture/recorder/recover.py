"""Sessions a crash left in `recording` are finalised as `partial` (reason: interrupted)."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

from improv_capture.recorder.finalise import finalise_session

logger = logging.getLogger(__name__)

INTERRUPTED = "interrupted"


def interrupted_sessions(sessions_dir: Path, skip_rooms: Collection[str] = ()) -> list[Path]:
    """Sessions left in `recording`, except those of ``skip_rooms`` (live in another process)."""
    found = []
    for manifest_path in sorted(sessions_dir.glob("*/manifest.json")):
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            logger.error("unreadable manifest %s", manifest_path)
            continue
        if manifest.get("state") == "recording" and manifest.get("room_id") not in skip_rooms:
            found.append(manifest_path.parent)
    return found


def recover_sessions(sessions_dir: Path, skip_rooms: Collection[str] = ()) -> list[dict[str, Any]]:
    """Finalise every interrupted session; returns their new manifests."""
    recovered = []
    for session_dir in interrupted_sessions(sessions_dir, skip_rooms):
        try:
            recovered.append(finalise_session(session_dir, reason=INTERRUPTED))
        except Exception:
            logger.exception("could not recover %s", session_dir)
    return recovered
