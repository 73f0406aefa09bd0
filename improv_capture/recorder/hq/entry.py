"""The ``hq`` entry of a performer of a studio session in manifest.json
(docs/archive-format.md, "High-quality copies"): one shape wherever it is written."""

from __future__ import annotations

from typing import Any

#: The states of a copy: uploading until it is placed (complete or incomplete), rejected when
#: nothing of it could be placed, withdrawn with the rest of the performer's media.
STATES = ("uploading", "complete", "incomplete", "rejected", "withdrawn")


def hq_relative_path(performer_id: str) -> str:
    return f"performers/{performer_id}.hq.webm"


def hq_entry(state: str, reason: str | None = None) -> dict[str, Any]:
    """An entry with nothing placed yet."""
    if state not in STATES:
        raise ValueError(f"not a state of a high-quality copy: {state}")
    return {
        "state": state,
        "reason": reason,
        "file": None,
        "codecs": None,
        "width": None,
        "height": None,
        "frame_rate": None,
        "audio_rate": None,
        "coverage": [],
        "alignment": None,
        "upload": None,
    }
