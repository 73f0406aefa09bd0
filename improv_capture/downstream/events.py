"""Downstream events (session.started, session.finalized, session.updated, consent.revoked):
stored with an id, streamed as Server-Sent Events with Last-Event-ID resume, and delivered to webhooks.

Ids are given in commit order (the database's event lock), so that a reader who resumes after
id N never misses a smaller id. Every node streams every node's events: its tail reads what
was stored after the last id it streamed, woken by its own publishing, by PostgreSQL's NOTIFY
from the other nodes, or every TAIL_POLL_S at the latest."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from improv_capture.clock import utc_now_iso
from improv_capture.database.base import Database, DatabaseUnavailable, fetch, fetchval

logger = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 256
#: the NOTIFY channel of a new event (PostgreSQL)
CHANNEL = "improv_events"
#: the tail reads the database this often even without a wake-up (a lost NOTIFY, a
#: reconnecting listener)
TAIL_POLL_S = 2.0
#: events the tail reads at once
TAIL_BATCH = 1000

Listener = Callable[[dict[str, Any]], Awaitable[None]]


class TooManyStreams(Exception):
    """Every SSE slot is taken (HTTP 429: retry later)."""


class EventLog:
    def __init__(self, db: Database, webhook_urls: list[str], max_streams: int = 100) -> None:
        self._db = db
        self._webhook_urls = webhook_urls
        self._max_streams = max_streams
        self._streams = 0
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._listeners: list[Listener] = []
        self.delivery_wanted = asyncio.Event()
        self._wake = asyncio.Event()
        self._tail: asyncio.Task[None] | None = None
        self._last = 0

    async def publish(self, event_type: str, data: dict[str, Any],
                      created_at: str | None = None) -> dict[str, Any]:
        """Store an event (DatabaseUnavailable when the database cannot be reached: the
        caller's outbox keeps it, with its ``created_at``) and wake the tails."""
        created_at = created_at or utc_now_iso()
        urls = list(self._webhook_urls)
        async with self._db.transaction() as c:
            if self._db.dialect.lock_events:
                await c.fetchval(self._db.dialect.lock_events)
            event_id = int(await c.fetchval(
                "INSERT INTO events (type, data, created_at) VALUES (?,?,?) RETURNING id",
                event_type, json.dumps(data), created_at))
            for url in urls:
                await c.execute(
                    "INSERT INTO deliveries (event_id, url, status, next_attempt, created)"
                    " VALUES (?,?,'pending',0,?)", event_id, url, time.time())
            if self._db.dialect.name == "postgresql":
                await c.fetchval(f"SELECT pg_notify('{CHANNEL}', '')")
        self._wake.set()
        if urls:
            self.delivery_wanted.set()
        return {"id": event_id, "type": event_type, "created_at": created_at, "data": data}

    async def since(self, after: int, limit: int = TAIL_BATCH) -> list[dict[str, Any]]:
        found = await fetch(self._db, "SELECT id, type, data, created_at FROM events WHERE id > ?"
                            " ORDER BY id LIMIT ?", after, limit)
        return [{**r, "data": json.loads(r["data"])} for r in found]

    # the tail: every event of every node, in id order, to SSE subscribers and listeners

    def on_event(self, listener: Listener) -> None:
        """Call ``listener`` with each event stored from now on, by any node (in order; a
        listener that raises is logged and the tail goes on)."""
        self._listeners.append(listener)

    async def start(self) -> None:
        self._last = int(await fetchval(self._db, "SELECT COALESCE(MAX(id), 0) FROM events"))
        self._tail = asyncio.ensure_future(self._run_tail())

    async def stop(self) -> None:
        if self._tail is not None:
            self._tail.cancel()
            await asyncio.gather(self._tail, return_exceptions=True)

    async def _run_tail(self) -> None:
        listen = getattr(self._db, "listen", None)  # PostgreSQL: other nodes' NOTIFY
        listening: Any = None
        try:
            while True:
                if listen is not None and listening is None:
                    try:
                        listening = await listen(CHANNEL, self._wake)
                    except DatabaseUnavailable:
                        pass
                    except Exception:
                        logger.exception("event tail: cannot listen for other nodes' events")
                try:
                    await asyncio.wait_for(self._wake.wait(), TAIL_POLL_S)
                except TimeoutError:
                    pass
                self._wake.clear()
                if listening is not None and listening.is_closed():
                    listening = None
                try:
                    await self._read_on()
                except DatabaseUnavailable:
                    continue
                except Exception:
                    logger.exception("event tail: reading after id %d failed", self._last)
        finally:
            if listening is not None:
                listening.terminate()  # at once: a graceful close waits on a server that may be gone

    async def _read_on(self) -> None:
        while True:
            found = await self.since(self._last)
            for event in found:
                self._last = event["id"]
                self._fan_out(event)
                for listener in self._listeners:
                    try:
                        await listener(event)
                    except Exception:
                        logger.exception("event %s: listener failed", event["id"])
            if len(found) < TAIL_BATCH:
                return

    def _fan_out(self, event: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # a consumer this far behind reconnects and resumes from its Last-Event-ID
                self._subscribers.discard(queue)
                queue.put_nowait(None) if queue.empty() else None

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
