"""Parsing one WebSocket frame of our sockets into a message, and the socket message budget.

Light on purpose (no aiortc, no FastAPI): the cluster router parses the same frames with the
same rule, so a frame that a lone server refuses is refused the same way through the router.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from improv_capture.close_codes import CLOSE_FLOOD, CLOSE_MALFORMED, CLOSE_TOO_LARGE


class ProtocolError(Exception):
    """A client broke the protocol; ``code`` is the WebSocket close code it gets."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def json_depth(value: object) -> int:
    """How deeply ``value`` nests lists and objects (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_message(frame: str | bytes | None, limit: int, max_depth: int) -> dict[str, Any]:
    """A text frame as a JSON object with a string ``type``, or :class:`ProtocolError`
    (4413 above ``limit`` bytes, 4400 for anything else: binary, not JSON, nested deeper
    than ``max_depth``, not an object)."""
    if frame is None or isinstance(frame, bytes):
        if frame is not None and len(frame) > limit:
            raise ProtocolError(CLOSE_TOO_LARGE, f"message over {limit} bytes")
        raise ProtocolError(CLOSE_MALFORMED, "binary frames are not accepted")
    if len(frame.encode("utf-8", "surrogatepass")) > limit:
        raise ProtocolError(CLOSE_TOO_LARGE, f"message over {limit} bytes")
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than C allows
        raise ProtocolError(CLOSE_MALFORMED, "message is not valid JSON") from exc
    if json_depth(message) > max_depth:
        raise ProtocolError(CLOSE_MALFORMED, f"message nested deeper than {max_depth}")
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError(CLOSE_MALFORMED, "message must be a JSON object with a type")
    return message


class MessageBudget:
    """A token bucket per socket: ``rate`` messages a second, ``burst`` at once.

    A message over the budget is refused (the caller answers ``rate_limited`` and drops it)
    and still costs its token, so a client that keeps sending runs into debt; once the debt
    passes ``flood_limit`` messages the socket is closed (4420). A client that slows down
    pays the debt back at ``rate`` and is served again.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        flood_limit: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._flood_limit = flood_limit
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def take(self) -> bool:
        """Whether one more message is within the budget; raises when the client floods."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= 1.0
        if self._tokens >= 0:
            return True
        if -self._tokens > self._flood_limit:
            raise ProtocolError(CLOSE_FLOOD, "too many messages")
        return False

    @property
    def retry_after_s(self) -> float:
        """When the next message would be within the budget again."""
        return max(0.0, -self._tokens + 1.0) / self._rate if self._tokens < 1 else 0.0
