"""What downstream jobs rely on: the catalog, events (SSE and webhooks) and consent
revocation, wired to the recording lifecycle: a session starts, is finalised, and may change
later (``session_updated``: each change is a new manifest revision)."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

from improv_capture.clock import utc_now_iso
from improv_capture.db import Database, rows
from improv_capture.downstream.catalog import Catalog, summary
from improv_capture.downstream.events import EventLog
from improv_capture.downstream.tokens import TokenStore
from improv_capture.downstream.webhooks import Deliverer
from improv_capture.recorder.withdraw import withdraw_performer
from improv_capture.settings import Settings
from improv_capture.storage.uploader import ArchiveUploader

logger = logging.getLogger(__name__)


def updated_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    """The session's part of a ``session.updated`` event."""
    listed = summary(manifest)
    return {k: listed[k] for k in ("session_id", "room_id", "revision", "updated_at", "state", "reason")}


class Downstream:
    def __init__(self, settings: Settings, webhook_secret: str) -> None:
        self.db = Database(settings.data_dir / "index.sqlite3")
        self.tokens = TokenStore(self.db, settings.max_reader_tokens,
                                 settings.revoked_token_retention_s)
        self.catalog = Catalog(self.db, settings.sessions_dir)
        self.events = EventLog(self.db, settings.webhook_urls, settings.max_event_streams)
        self.deliverer = Deliverer(
            self.db, self.events, webhook_secret, settings.webhook_backoff_s,
            settings.webhook_give_up_s, settings.webhook_allow_private,
        )
        #: sessions into S3-compatible storage (IMPROV_S3_URL), None without a store (boto3 is
        #: imported only then)
        self.archive: ArchiveUploader | None = None
        if settings.s3_url and settings.is_primary:
            self.archive = ArchiveUploader(settings, self.catalog)

    async def start(self) -> None:
        changes = await asyncio.to_thread(self.catalog.sync)
        if changes:
            logger.info("session catalog: %d sessions indexed from disk", changes)
        self.deliverer.start()
        if self.archive is not None:
            await self.archive.start()

    async def stop(self) -> None:
        if self.archive is not None:
            await self.archive.stop()
        await self.deliverer.stop()

    def _stored_again(self, session_dir: Path) -> None:
        """A new revision of the session is due in the store (when there is one)."""
        if self.archive is not None:
            self.archive.wake(session_dir.name)

    async def session_started(self, session_id: str, room_id: str, started_at: str) -> None:
        await self.events.publish(
            "session.started", {"session_id": session_id, "room_id": room_id, "started_at": started_at}
        )

    async def session_finalised(self, session_dir: Path) -> None:
        await self._apply_known_revocations(session_dir)
        await self.catalog.index(session_dir)
        manifest = json.loads(await asyncio.to_thread((session_dir / "manifest.json").read_text))
        await self.events.publish("session.finalized", {
            "session_id": manifest["session_id"], "room_id": manifest.get("room_id"),
            "state": manifest["state"], "reason": manifest.get("reason"),
            "duration_s": manifest.get("duration_s"),
        })
        self._stored_again(session_dir)

    async def session_updated(self, session_dir: Path, detail: dict[str, Any]) -> None:
        """A finalised session changed (its manifest was rewritten: a new revision): index it
        again and tell downstream jobs. ``detail`` says what changed (e.g. ``{"performer_id":
        ..., "hq": {"state": ...}}``); the session's own fields win over it."""
        await self.catalog.index(session_dir)
        manifest = json.loads(await asyncio.to_thread((session_dir / "manifest.json").read_text))
        await self.events.publish("session.updated", {**detail, **updated_fields(manifest)})
        self._stored_again(session_dir)

    async def revoke(self, performer_id: str, reason: str | None) -> dict[str, Any]:
        revoked_at = utc_now_iso()
        touched = []
        for session_id in await self.catalog.sessions_with(performer_id):
            session_dir = self.catalog.sessions_dir / session_id
            if await asyncio.to_thread(withdraw_performer, session_dir, performer_id, revoked_at, reason):
                # a new revision: its summary (revision, updated_at) is what mirrors compare;
                # the change is announced once, by consent.revoked (its ``sessions``)
                await self.catalog.index(session_dir)
                # the store loses the performer's objects with the next upload, at once
                self._stored_again(session_dir)
                touched.append(session_id)

        def insert(c: sqlite3.Connection) -> int:
            return int(c.execute(
                "INSERT INTO revocations (performer_id, reason, revoked_at, sessions) VALUES (?,?,?,?)",
                (performer_id, reason, revoked_at, json.dumps(touched)),
            ).lastrowid or 0)

        revocation_id = await self.db.call(insert)
        record = {"id": revocation_id, "performer_id": performer_id, "reason": reason,
                  "revoked_at": revoked_at, "sessions": touched}
        await self.events.publish("consent.revoked", record)
        return record

    async def revocations(self, after: int, limit: int) -> dict[str, Any]:
        found = await self.db.call(lambda c: rows(c.execute(
            "SELECT id, performer_id, reason, revoked_at, sessions FROM revocations"
            " WHERE id > ? ORDER BY id LIMIT ?", (after, limit + 1))))
        items = [{**r, "sessions": json.loads(r["sessions"])} for r in found[:limit]]
        return {"items": items, "next": items[-1]["id"] if len(found) > limit else None}

    async def _apply_known_revocations(self, session_dir: Path) -> None:
        """A session finalised after a revocation (it was recording) loses that media too."""
        revoked = await self.db.call(lambda c: rows(c.execute(
            "SELECT performer_id, reason, revoked_at FROM revocations")))
        for row in revoked:
            await asyncio.to_thread(
                withdraw_performer, session_dir, row["performer_id"], row["revoked_at"], row["reason"]
            )
