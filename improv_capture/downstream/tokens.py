"""Reader tokens for downstream jobs: shown once, stored as sha256, revocable.

A revocation reaches what the token opened as well as what it would open next: every
long-lived use of a token (an SSE stream) asks ``revoked_signal`` to be told, and ``revoke``
tells it at once. Active tokens are capped; revoked ones are listed for a retention period,
then deleted."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import sqlite3
import time
from typing import Any

from improv_capture.clock import new_id, utc_iso, utc_now_iso
from improv_capture.db import Database, rows
from improv_capture.errors import LimitReached

READER_PREFIX = "icr_"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, db: Database, max_active: int = 100, retention_s: float = 30 * 86400.0) -> None:
        self._db = db
        self._max_active = max_active
        self._retention_s = retention_s
        self._active: dict[str, str] = {}  # sha256 -> token id
        self._watchers: dict[str, set[asyncio.Event]] = {}  # token id -> revocation signals
        db.run(self._purge)
        for row in db.run(lambda c: rows(c.execute(
                "SELECT id, token_sha256 FROM tokens WHERE revoked_at IS NULL"))):
            self._active[row["token_sha256"]] = row["id"]

    def _purge(self, c: sqlite3.Connection) -> None:
        """Forget tokens revoked longer ago than the retention (timestamps compare as text),
        and all but the ``max_active`` latest revoked ones, so the list stays bounded."""
        cutoff = utc_iso(time.time() - self._retention_s)
        c.execute("DELETE FROM tokens WHERE revoked_at IS NOT NULL AND revoked_at < ?", (cutoff,))
        c.execute("DELETE FROM tokens WHERE revoked_at IS NOT NULL AND id NOT IN (SELECT id FROM"
                  " tokens WHERE revoked_at IS NOT NULL ORDER BY revoked_at DESC LIMIT ?)",
                  (self._max_active,))

    def is_reader(self, token: str) -> bool:
        """Blocking on a miss (a token another process of a cluster created): call it from a
        sync dependency, which FastAPI runs in a thread."""
        sha = digest(token)
        if sha in self._active:
            return True
        if not token.startswith(READER_PREFIX):
            return False
        found = self._db.run(lambda c: c.execute(
            "SELECT id FROM tokens WHERE token_sha256=? AND revoked_at IS NULL", (sha,)).fetchone())
        if found is not None:
            self._active[sha] = found["id"]
        return found is not None

    def revoked_signal(self, token: str) -> asyncio.Event:
        """An event set when this reader token is revoked (already set if it is not active).
        Give it back with ``forget_signal`` when the stream ends."""
        signal = asyncio.Event()
        token_id = self._active.get(digest(token))
        if token_id is None:
            signal.set()
        else:
            self._watchers.setdefault(token_id, set()).add(signal)
        return signal

    def forget_signal(self, signal: asyncio.Event) -> None:
        for token_id, signals in list(self._watchers.items()):
            signals.discard(signal)
            if not signals:
                del self._watchers[token_id]

    async def create(self, role: str, label: str) -> dict[str, Any]:
        """A new token; LimitReached when ``max_active`` tokens are not revoked."""
        token = READER_PREFIX + secrets.token_urlsafe(32)
        record = {"id": new_id("tok"), "role": role, "label": label, "created_at": utc_now_iso()}

        def insert(c: sqlite3.Connection) -> None:
            self._purge(c)
            active = c.execute("SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL").fetchone()[0]
            if active >= self._max_active:
                raise LimitReached(
                    f"at most {self._max_active} reader tokens (IMPROV_MAX_READER_TOKENS); "
                    "revoke one first")
            c.execute(
                "INSERT INTO tokens (id, role, label, token_sha256, created_at) VALUES (?,?,?,?,?)",
                (record["id"], role, label, digest(token), record["created_at"]),
            )

        await self._db.call(insert)
        self._active[digest(token)] = record["id"]
        return {**record, "token": token}

    async def list(self) -> list[dict[str, Any]]:
        def select(c: sqlite3.Connection) -> list[dict[str, Any]]:
            self._purge(c)
            return rows(c.execute(
                "SELECT id, role, label, created_at, revoked_at FROM tokens ORDER BY created_at"))

        return await self._db.call(select)

    async def revoke(self, token_id: str) -> bool:
        def update(c: sqlite3.Connection) -> int:
            self._purge(c)
            return c.execute(
                "UPDATE tokens SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                (utc_now_iso(), token_id),
            ).rowcount

        changed = await self._db.call(update)
        for sha, tid in list(self._active.items()):
            if tid == token_id:
                del self._active[sha]
        for signal in self._watchers.pop(token_id, set()):
            signal.set()
        return bool(changed)
