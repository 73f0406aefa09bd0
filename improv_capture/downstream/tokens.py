"""Reader tokens for downstream jobs: shown once, stored as sha256, revocable.

A revocation reaches what the token opened as well as what it would open next, on every node:
a node trusts what it knows of a token for RECHECK_S at most, then asks the database again;
every long-lived use of a token (an SSE stream) asks ``revoked_signal`` to be told, and a
watcher sets it within RECHECK_S of a revocation anywhere (at once on the node that revoked).
Active tokens are capped; revoked ones are listed for a retention period, then deleted."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from typing import Any

from improv_capture.clock import new_id, utc_iso, utc_now_iso
from improv_capture.database.base import (
    Connection,
    Database,
    DatabaseUnavailable,
    fetch,
)
from improv_capture.errors import LimitReached

logger = logging.getLogger(__name__)

READER_PREFIX = "icr_"
#: how long a node trusts a token it checked (another node may revoke it meanwhile)
RECHECK_S = 2.0


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, db: Database, max_active: int = 100, retention_s: float = 30 * 86400.0) -> None:
        self._db = db
        self._max_active = max_active
        self._retention_s = retention_s
        self._checked: dict[str, tuple[str, float]] = {}  # sha256 -> (token id, when checked)
        self._watchers: dict[str, set[asyncio.Event]] = {}  # token id -> revocation signals
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        async with self._db.transaction() as c:
            await self._purge(c)
        self._watch = asyncio.ensure_future(self._watch_revocations())

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)

    async def _purge(self, c: Connection) -> None:
        """Forget tokens revoked longer ago than the retention (timestamps compare as text),
        and all but the ``max_active`` latest revoked ones, so the list stays bounded."""
        cutoff = utc_iso(time.time() - self._retention_s)
        await c.execute("DELETE FROM tokens WHERE revoked_at IS NOT NULL AND revoked_at < ?", cutoff)
        await c.execute("DELETE FROM tokens WHERE revoked_at IS NOT NULL AND id NOT IN (SELECT id FROM"
                        " tokens WHERE revoked_at IS NOT NULL ORDER BY revoked_at DESC LIMIT ?)",
                        self._max_active)

    async def is_reader(self, token: str) -> bool:
        """Whether ``token`` is an active reader token. With the database unavailable, what
        was checked before still holds (a revocation cannot be stored meanwhile either)."""
        if not token.startswith(READER_PREFIX):
            return False
        sha = digest(token)
        known = self._checked.get(sha)
        if known is not None and time.monotonic() - known[1] < RECHECK_S:
            return True
        try:
            found = await fetch(self._db, "SELECT id FROM tokens WHERE token_sha256=? AND revoked_at IS NULL", sha)
        except DatabaseUnavailable:
            if known is not None:
                return True
            raise
        if found:
            self._checked[sha] = (found[0]["id"], time.monotonic())
        else:
            self._checked.pop(sha, None)
        return bool(found)

    def revoked_signal(self, token: str) -> asyncio.Event:
        """An event set when this reader token is revoked (already set if it is not known to
        be active: ask ``is_reader`` first). Give it back with ``forget_signal``."""
        signal = asyncio.Event()
        known = self._checked.get(digest(token))
        if known is None:
            signal.set()
        else:
            self._watchers.setdefault(known[0], set()).add(signal)
        return signal

    def forget_signal(self, signal: asyncio.Event) -> None:
        for token_id, signals in list(self._watchers.items()):
            signals.discard(signal)
            if not signals:
                del self._watchers[token_id]

    async def _watch_revocations(self) -> None:
        """Every RECHECK_S, the watched tokens that some node revoked end their streams."""
        while True:
            await asyncio.sleep(RECHECK_S)
            watched = list(self._watchers)
            if not watched:
                continue
            marks = ",".join("?" * len(watched))
            try:
                active = {r["id"] for r in await fetch(
                    self._db, f"SELECT id FROM tokens WHERE revoked_at IS NULL AND id IN ({marks})",
                    *watched)}
            except DatabaseUnavailable:
                continue
            for token_id in set(watched) - active:
                self._revoked_here(token_id)

    def _revoked_here(self, token_id: str) -> None:
        for sha, (tid, _) in list(self._checked.items()):
            if tid == token_id:
                del self._checked[sha]
        for signal in self._watchers.pop(token_id, set()):
            signal.set()

    async def create(self, role: str, label: str) -> dict[str, Any]:
        """A new token; LimitReached when ``max_active`` tokens are not revoked."""
        token = READER_PREFIX + secrets.token_urlsafe(32)
        record = {"id": new_id("tok"), "role": role, "label": label, "created_at": utc_now_iso()}
        async with self._db.transaction() as c:
            await self._purge(c)
            active = await c.fetchval("SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL")
            if active >= self._max_active:
                raise LimitReached(
                    f"at most {self._max_active} reader tokens (IMPROV_MAX_READER_TOKENS); "
                    "revoke one first")
            await c.execute(
                "INSERT INTO tokens (id, role, label, token_sha256, created_at) VALUES (?,?,?,?,?)",
                record["id"], role, label, digest(token), record["created_at"])
        self._checked[digest(token)] = (record["id"], time.monotonic())
        return {**record, "token": token}

    async def list(self) -> list[dict[str, Any]]:
        async with self._db.transaction() as c:
            await self._purge(c)
            return await c.fetch(
                "SELECT id, role, label, created_at, revoked_at FROM tokens ORDER BY created_at")

    async def revoke(self, token_id: str) -> bool:
        async with self._db.transaction() as c:
            await self._purge(c)
            changed = await c.execute(
                "UPDATE tokens SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                utc_now_iso(), token_id)
        self._revoked_here(token_id)
        return bool(changed)
