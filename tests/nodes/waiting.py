"""Bounded polling: wait for a condition instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from improv_capture.nodes.connection import RedisUnavailable


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str,
                     timeout_s: float = 5.0, interval_s: float = 0.05) -> float:
    """Seconds until condition() was true; fails the test past timeout_s. A Redis that is
    unreachable for a moment (a restart) counts as 'not yet'."""
    started = time.monotonic()
    while True:
        try:
            if await condition():
                return time.monotonic() - started
        except RedisUnavailable:
            pass
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(interval_s)
