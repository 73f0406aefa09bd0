"""What downstream jobs rely on: the catalog, events (SSE and webhooks) and consent
revocation, wired to the recording lifecycle: a session starts, is finalised, and may change
later (``session_updated``: each change is a new manifest revision).

Catalog writes and events of the lifecycle go through the outbox: while the database is
unavailable they wait on disk and catch up, and the recording never waits for them. A
revocation reaches every node: each withdraws the performer from the sessions in its own data
dir when the ``consent.revoked`` event reaches it (its event tail)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from improv_capture.clock import utc_now_iso
from improv_capture.database import open_database
from improv_capture.database.base import fetch
from improv_capture.downstream.catalog import Catalog, Node, summary
from improv_capture.downstream.events import EventLog
from improv_capture.downstream.outbox import Outbox
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
        self.db = open_database(settings)
        self.tokens = TokenStore(self.db, settings.max_reader_tokens,
                                 settings.revoked_token_retention_s)
        self.catalog = Catalog(self.db, settings.sessions_dir, Node(settings.node_id, settings.base_url))
        self.events = EventLog(self.db, settings.webhook_urls, settings.max_event_streams)
        self.deliverer = Deliverer(
            self.db, self.events, webhook_secret, settings.webhook_backoff_s,
            settings.webhook_give_up_s, settings.webhook_allow_private,
        )
        self.outbox = Outbox(settings.data_dir / "outbox.jsonl", self._apply,
                             settings.outbox_max_bytes, settings.outbox_retry_s)
        #: sessions into S3-compatible storage (IMPROV_S3_URL), None without a store (boto3 is
        #: imported only then)
        self.archive: ArchiveUploader | None = None
        if settings.s3_url and settings.is_primary:
            self.archive = ArchiveUploader(settings, self.catalog)

    async def open(self) -> None:
        """What every process needs: the database and the reader tokens (a cluster's worker
        checks reader tokens; the primary does the rest: ``start``)."""
        await self.db.start()
        await self.tokens.start()

    async def start(self) -> None:
        await self.open()
        changes = await self.catalog.sync()
        if changes:
            logger.info("session catalog: %d sessions indexed from disk", changes)
        self.events.on_event(self._on_event)
        await self.events.start()
        await self.outbox.start()
        self.deliverer.start()
        if self.archive is not None:
            await self.archive.start()

    async def stop(self) -> None:
        if self.archive is not None:
            await self.archive.stop()
        await self.deliverer.stop()
        await self.outbox.stop()
        await self.events.stop()
        await self.tokens.stop()

    async def close(self) -> None:
        await self.db.close()

    def _stored_again(self, session_dir: Path) -> None:
        """A new revision of the session is due in the store (when there is one)."""
        if self.archive is not None:
            self.archive.wake(session_dir.name)

    async def _apply(self, entry: dict[str, Any]) -> None:
        """One outbox entry: a session (re)indexed from its directory, or an event stored."""
        if entry["op"] == "index":
            session_dir = self.catalog.sessions_dir / entry["session_id"]
            if session_dir.is_dir():
                await self._apply_known_revocations(session_dir)
                await self.catalog.index(session_dir)
        elif entry["op"] == "publish":
            await self.events.publish(entry["type"], entry["data"], entry["created_at"])

    async def _index(self, session_dir: Path) -> None:
        await self.outbox.submit({"op": "index", "session_id": session_dir.name})

    async def _publish(self, event_type: str, data: dict[str, Any]) -> None:
        await self.outbox.submit({"op": "publish", "type": event_type, "data": data,
                                  "created_at": utc_now_iso()})

    async def session_started(self, session_id: str, room_id: str, started_at: str) -> None:
        await self._publish(
            "session.started", {"session_id": session_id, "room_id": room_id, "started_at": started_at}
        )

    async def session_finalised(self, session_dir: Path) -> None:
        await self._index(session_dir)
        manifest = json.loads(await asyncio.to_thread((session_dir / "manifest.json").read_text))
        await self._publish("session.finalized", {
            "session_id": manifest["session_id"], "room_id": manifest.get("room_id"),
            "state": manifest["state"], "reason": manifest.get("reason"),
            "duration_s": manifest.get("duration_s"),
        })
        self._stored_again(session_dir)

    async def session_updated(self, session_dir: Path, detail: dict[str, Any]) -> None:
        """A finalised session changed (its manifest was rewritten: a new revision): index it
        again and tell downstream jobs. ``detail`` says what changed (e.g. ``{"performer_id":
        ..., "hq": {"state": ...}}``); the session's own fields win over it."""
        await self._index(session_dir)
        manifest = json.loads(await asyncio.to_thread((session_dir / "manifest.json").read_text))
        await self._publish("session.updated", {**detail, **updated_fields(manifest)})
        self._stored_again(session_dir)

    async def _withdraw_here(self, performer_id: str, revoked_at: str, reason: str | None) -> list[str]:
        """Withdraw the performer from the sessions in this node's data dir; the ones changed."""
        touched = []
        for session_id in await self.catalog.sessions_with(performer_id, here=True):
            session_dir = self.catalog.sessions_dir / session_id
            if await asyncio.to_thread(withdraw_performer, session_dir, performer_id, revoked_at, reason):
                # a new revision: its summary (revision, updated_at) is what mirrors compare
                await self.catalog.index(session_dir)
                # the store loses the performer's objects with the next upload, at once
                self._stored_again(session_dir)
                touched.append(session_id)
        return touched

    async def _on_event(self, event: dict[str, Any]) -> None:
        """Another node's revocation: this node's sessions lose the performer too (its own
        were withdrawn before the event was stored: nothing changes again)."""
        if event["type"] != "consent.revoked":
            return
        data = event["data"]
        for session_id in await self._withdraw_here(data["performer_id"], data["revoked_at"], data["reason"]):
            session_dir = self.catalog.sessions_dir / session_id
            manifest = json.loads(await asyncio.to_thread((session_dir / "manifest.json").read_text))
            await self._publish("session.updated", {"withdrawn": data["performer_id"],
                                                    **updated_fields(manifest)})

    async def revoke(self, performer_id: str, reason: str | None) -> dict[str, Any]:
        """Withdraw the performer here, store the revocation and announce it (every other
        node withdraws it from its own sessions on the event). DatabaseUnavailable: nothing
        is stored; the operator asks again."""
        revoked_at = utc_now_iso()
        touched = await self._withdraw_here(performer_id, revoked_at, reason)
        async with self.db.transaction() as c:
            revocation_id = int(await c.fetchval(
                "INSERT INTO revocations (performer_id, reason, revoked_at, sessions) VALUES (?,?,?,?)"
                " RETURNING id", performer_id, reason, revoked_at, json.dumps(touched)))
        record = {"id": revocation_id, "performer_id": performer_id, "reason": reason,
                  "revoked_at": revoked_at, "sessions": touched}
        await self.events.publish("consent.revoked", record)
        return record

    async def revocations(self, after: int, limit: int) -> dict[str, Any]:
        found = await fetch(self.db, "SELECT id, performer_id, reason, revoked_at, sessions FROM revocations"
                            " WHERE id > ? ORDER BY id LIMIT ?", after, limit + 1)
        items = [{**r, "sessions": json.loads(r["sessions"])} for r in found[:limit]]
        return {"items": items, "next": items[-1]["id"] if len(found) > limit else None}

    async def _apply_known_revocations(self, session_dir: Path) -> None:
        """A session finalised after a revocation (it was recording) loses that media too,
        before it is indexed (DatabaseUnavailable: the outbox keeps the index write)."""
        revoked = await fetch(self.db, "SELECT performer_id, reason, revoked_at FROM revocations")
        for row in revoked:
            await asyncio.to_thread(
                withdraw_performer, session_dir, row["performer_id"], row["revoked_at"], row["reason"]
            )
