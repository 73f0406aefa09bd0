"""Uploads for tests: a WebM file cut into chunks and sent through the recorder's store as a
page would (part info, chunks with their digests, the end)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from improv_capture.recorder.hq.uploads import UploadLimits, UploadStore

LIMITS = UploadLimits(max_chunk_bytes=8 * 1024 * 1024, max_total_bytes=1 << 30)


def split_chunks(data: bytes, count: int) -> list[bytes]:
    """``data`` in ``count`` nearly equal chunks (chunk 0 starts with the EBML header)."""
    step = -(-len(data) // count)
    return [data[i : i + step] for i in range(0, len(data), step)]


def part_info(started_at_ms: float, reason: str = "start", width: int = 320, height: int = 180) -> dict[str, Any]:
    return {
        "mime_type": "video/webm;codecs=vp8,opus",
        "started_at_ms": started_at_ms,
        "reason": reason,
        "video": {"width": width, "height": height, "frame_rate": 30, "device_id": "cam"},
        "audio": {"sample_rate": 48000, "channel_count": 1, "echo_cancellation": False,
                  "noise_suppression": False, "auto_gain_control": False},
    }


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload_file(
    store: UploadStore, session_id: str, performer_id: str, part: int, path: Path,
    info: dict[str, Any], chunks: int = 5, skip: frozenset[int] = frozenset(), end: bool = True,
) -> list[bytes]:
    """Declare ``part``, send ``path`` in ``chunks`` chunks (but the ``skip`` ones), end it."""
    store.declare_part(session_id, performer_id, part, info)
    pieces = split_chunks(path.read_bytes(), chunks)
    for index, piece in enumerate(pieces):
        if index not in skip:
            store.put_chunk(session_id, performer_id, part, index, piece, sha256(piece),
                            len(pieces), LIMITS)
    if end:
        store.end_part(session_id, performer_id, part, len(pieces))
    return pieces
