"""The two facts about a VP8 frame the relay and the recorder need (RFC 6386 section 9.1)."""

from __future__ import annotations


def is_keyframe(data: bytes) -> bool:
    """The frame tag's P bit is 0 on a key frame."""
    return len(data) > 0 and (data[0] & 0x01) == 0


def frame_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a key frame's header; None for other frames."""
    if len(data) >= 10 and is_keyframe(data) and data[3:6] == b"\x9d\x01\x2a":
        width = int.from_bytes(data[6:8], "little") & 0x3FFF
        height = int.from_bytes(data[8:10], "little") & 0x3FFF
        return width, height
    return None
