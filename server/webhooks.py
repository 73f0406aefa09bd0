"""Webhook deliveries: JSON POSTs signed with HMAC-SHA256 over "<timestamp>.<body>", retried
with exponential backoff for at least an hour, each with its event id for deduplication."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import sqlite3
import time
from typing import Any

import httpx

from .db import Database, rows
from .events import EventLog
from .rooms import utc_now_iso

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Improv-Signature"
TIMESTAMP_HEADER = "X-Improv-Timestamp"
EVENT_ID_HEADER = "X-Improv-Event-Id"
MAX_DELAY_S = 600.0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class Deliverer:
    def __init__(
        self, db: Database, events: EventLog, secret: str, backoff_s: float, give_up_s: float
    ) -> None:
        self._db = db
        self._events = events
        self._secret = secret
        self._backoff_s = backoff_s
        self._give_up_s = give_up_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                due = await self._db.call(lambda c: rows(c.execute(
                    "SELECT d.id, d.url, d.attempts, d.created, e.id AS event_id, e.type,"
                    " e.data, e.created_at FROM deliveries d JOIN events e ON e.id = d.event_id"
                    " WHERE d.status='pending' AND d.next_attempt <= ? ORDER BY d.id LIMIT 50",
                    (time.time(),))))
                for delivery in due:
                    await self._attempt(client, delivery)
                wait = await self._db.call(lambda c: c.execute(
                    "SELECT MIN(next_attempt) FROM deliveries WHERE status='pending'").fetchone()[0])
                timeout = 30.0 if wait is None else max(0.05, min(30.0, wait - time.time()))
                self._events.delivery_wanted.clear()
                try:
                    await asyncio.wait_for(self._events.delivery_wanted.wait(), timeout)
                except asyncio.TimeoutError:
                    pass

    async def _attempt(self, client: httpx.AsyncClient, delivery: dict[str, Any]) -> None:
        body = json.dumps({
            "id": delivery["event_id"], "type": delivery["type"],
            "created_at": delivery["created_at"], "data": json.loads(delivery["data"]),
        }).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: str(delivery["event_id"]),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
        }
        status, error = None, None
        try:
            response = await client.post(delivery["url"], content=body, headers=headers)
            status = response.status_code
        except httpx.HTTPError as exc:
            error = str(exc) or type(exc).__name__
        attempts = delivery["attempts"] + 1
        if status is not None and 200 <= status < 300:
            update = ("UPDATE deliveries SET status='delivered', attempts=?, last_status=?,"
                      " delivered_at=? WHERE id=?", (attempts, status, utc_now_iso(), delivery["id"]))
        else:
            delay = min(self._backoff_s * 2 ** (attempts - 1), MAX_DELAY_S)
            gone = time.time() + delay - delivery["created"] > self._give_up_s
            update = ("UPDATE deliveries SET status=?, attempts=?, last_status=?, last_error=?,"
                      " next_attempt=? WHERE id=?",
                      ("failed" if gone else "pending", attempts, status, error,
                       time.time() + delay, delivery["id"]))

        def write(c: sqlite3.Connection) -> None:
            c.execute(*update)

        await self._db.call(write)

    async def list(self, limit: int = 200) -> list[dict[str, Any]]:
        return await self._db.call(lambda c: rows(c.execute(
            "SELECT id, event_id, url, status, attempts, last_status, last_error, delivered_at"
            " FROM deliveries ORDER BY id DESC LIMIT ?", (limit,))))
