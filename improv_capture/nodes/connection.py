"""Redis clients for the nodes, and the one rule for calling them: bounded, one error type.

Every call goes through `bounded()`: it cannot take longer than its timeout (a Redis that
hangs must not hang a heartbeat or an operator's request), and whatever went wrong with the
connection comes out as `RedisUnavailable`, the one exception callers handle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

#: Default bound on one Redis call (connect included), in seconds.
DEFAULT_TIMEOUT_S = 1.0

T = TypeVar("T")


class RedisUnavailable(ConnectionError):
    """Redis could not be reached, or did not answer within the timeout."""


def connect(url: str, timeout_s: float = DEFAULT_TIMEOUT_S,
            read_timeout_s: float | None = None) -> Redis:
    """A client that answers str (not bytes) and retries a failed command once, at once.

    The one retry is for the pooled connection that a Redis restart left dead: the next command
    reconnects instead of failing. Longer outages are the callers' business (their own bounded
    backoff), not hidden inside a call. read_timeout_s is for blocking reads (XREAD BLOCK),
    which must be allowed to wait longer than timeout_s.
    """
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=timeout_s,
        socket_timeout=read_timeout_s if read_timeout_s is not None else timeout_s,
        retry=Retry(NoBackoff(), 1),
    )


def client_from(redis_or_url: Redis | str, timeout_s: float) -> tuple[Redis, bool]:
    """(client, owned): a URL gets a new client that the caller must close; a client is shared."""
    if isinstance(redis_or_url, str):
        return connect(redis_or_url, timeout_s), True
    return redis_or_url, False


async def bounded(call: Awaitable[T], timeout_s: float) -> T:
    """Awaits call for at most timeout_s; a connection failure or timeout is RedisUnavailable."""
    try:
        async with asyncio.timeout(timeout_s):
            return await call
    except (TimeoutError, OSError, redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError) as e:
        raise RedisUnavailable(f"redis: {type(e).__name__}: {e}".rstrip(": ")) from e
