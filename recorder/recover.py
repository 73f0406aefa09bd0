"""Sessions a crash left in `recording` are finalised as `partial` (reason: interrupted)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .finalise import finalise_session

logger = logging.getLogger(__name__)

INTERRUPTED = "interrupted"


def interrupted_sessions(sessions_dir: Path) -> list[Path]:
    found = []
    for manifest_path in sorted(sessions_dir.glob("*/manifest.json")):
        try:
            state = json.loads(manifest_path.read_text()).get("state")
        except (OSError, ValueError):
            logger.error("unreadable manifest %s", manifest_path)
            continue
        if state == "recording":
            found.append(manifest_path.parent)
    return found


def recover_sessions(sessions_dir: Path) -> list[dict[str, Any]]:
    """Finalise every interrupted session; returns their new manifests."""
    recovered = []
    for session_dir in interrupted_sessions(sessions_dir):
        try:
            recovered.append(finalise_session(session_dir, reason=INTERRUPTED))
        except Exception:
            logger.exception("could not recover %s", session_dir)
    return recovered
