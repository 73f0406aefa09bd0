"""Timestamps in archives: UTC, ISO 8601, microseconds, a trailing Z."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_iso(unix: float) -> str:
    moment = datetime.fromtimestamp(unix, timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_utc(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
