"""Errors that more than one concern raises."""

from __future__ import annotations


class LimitReached(Exception):
    """A configured cap is reached; the message names the cap and its setting (HTTP 409)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"limit reached: {what}")
