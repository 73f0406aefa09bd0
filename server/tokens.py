"""Reader tokens for downstream jobs: shown once, stored as sha256, revocable."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from typing import Any

from .db import Database, rows
from .rooms import new_id, utc_now_iso

READER_PREFIX = "icr_"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._active: dict[str, str] = {}  # sha256 -> token id
        for row in db.run(lambda c: rows(c.execute(
                "SELECT id, token_sha256 FROM tokens WHERE revoked_at IS NULL"))):
            self._active[row["token_sha256"]] = row["id"]

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

    async def create(self, role: str, label: str) -> dict[str, Any]:
        token = READER_PREFIX + secrets.token_urlsafe(32)
        record = {"id": new_id("tok"), "role": role, "label": label, "created_at": utc_now_iso()}

        def insert(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO tokens (id, role, label, token_sha256, created_at) VALUES (?,?,?,?,?)",
                (record["id"], role, label, digest(token), record["created_at"]),
            )

        await self._db.call(insert)
        self._active[digest(token)] = record["id"]
        return {**record, "token": token}

    async def list(self) -> list[dict[str, Any]]:
        return await self._db.call(lambda c: rows(c.execute(
            "SELECT id, role, label, created_at, revoked_at FROM tokens ORDER BY created_at")))

    async def revoke(self, token_id: str) -> bool:
        def update(c: sqlite3.Connection) -> int:
            return c.execute(
                "UPDATE tokens SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                (utc_now_iso(), token_id),
            ).rowcount

        changed = await self._db.call(update)
        for sha, tid in list(self._active.items()):
            if tid == token_id:
                del self._active[sha]
        return bool(changed)
