"""The one clock and id helper of the server and the archive: UTC timestamps as ISO 8601 with
microseconds and a trailing Z (as every manifest and event holds them), and random ids."""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone


def utc_iso(unix: float) -> str:
    moment = datetime.fromtimestamp(unix, timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_utc(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def utc_now_iso() -> str:
    return utc_iso(time.time())


def new_id(prefix: str) -> str:
    """``<prefix>_`` and 12 random hex digits: room, performer, token and session ids."""
    return f"{prefix}_{secrets.token_hex(6)}"
