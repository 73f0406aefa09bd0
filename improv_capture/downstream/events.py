"""Downstream events (session.started, session.finalized, session.updated, consent.revoked):
stored with an id, streamed as Server-Sent Events with Last-Event-ID resume, and delivered to webhooks."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from typing import Any

from improv_capture.clock import utc_now_iso
from improv_capture.db import Database, rows

logger = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 256


class TooManyStreams(Exception):
    """Every SSE slot is taken (HTTP 429: retry later)."""


class EventLog:
    def __init__(self, db: Database, webhook_urls: list[str], max_streams: int = 100) -> None:
        self._db = db
        self._webhook_urls = webhook_urls
        self._max_streams = max_streams
        self._streams = 0
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.delivery_wanted = asyncio.Event()

    async def publish(self, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
        created_at = utc_now_iso()
        urls = list(self._webhook_urls)

        def insert(c: sqlite3.Connection) -> int:
            event_id = c.execute(
                "INSERT INTO events (type, data, created_at) VALUES (?,?,?)",
                (event_type, json.dumps(data), created_at),
            ).lastrowid
            for url in urls:
                c.execute(
                    "INSERT INTO deliveries (event_id, url, status, next_attempt, created)"
                    " VALUES (?,?,'pending',0,strftime('%s','now'))",
                    (event_id, url),
                )
            return int(event_id or 0)

        event_id = await self._db.call(insert)
        event = {"id": event_id, "type": event_type, "created_at": created_at, "data": data}
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # a consumer this far behind reconnects and resumes from its Last-Event-ID
                self._subscribers.discard(queue)
                queue.put_nowait(None) if queue.empty() else None
        if urls:
            self.delivery_wanted.set()
        return event

    async def since(self, after: int, limit: int = 1000) -> list[dict[str, Any]]:
        found = await self._db.call(lambda c: rows(c.execute(
            "SELECT id, type, data, created_at FROM events WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit))))
        return [{**r, "data": json.loads(r["data"])} for r in found]

    def open_stream(self) -> None:
        """Take one of ``max_streams`` SSE slots (TooManyStreams when none is left); give it
        back with ``close_stream``. A slot is held for the whole stream, backlog included."""
        if self._streams >= self._max_streams:
            raise TooManyStreams(f"at most {self._max_streams} event streams at once "
                                 "(IMPROV_MAX_EVENT_STREAMS); retry later")
        self._streams += 1

    def close_stream(self) -> None:
        self._streams -= 1

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._subscribers.discard(queue)


def sse(event: dict[str, Any]) -> str:
    body = json.dumps({"id": event["id"], "type": event["type"],
                       "created_at": event["created_at"], "data": event["data"]})
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {body}\n\n"
