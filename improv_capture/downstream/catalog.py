"""The session catalog: an index over the session directories, for fast cursor paging (SQLite
in the data dir, or PostgreSQL shared by every node: improv_capture/database/).

The directories are the source of truth. At start the index is brought up to date with this
node's (new, changed and vanished sessions, by manifest mtime; other nodes' rows are theirs),
and every change the server makes to a session is indexed as it happens. Each row says which
node holds the session and at which public URL.

A finalised session still changes (a high-quality copy joins, a performer withdraws): each
change bumps its manifest's ``revision``, which the summary carries with ``updated_at``, so a
mirror compares one number per listed session to know what to fetch again.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from improv_capture.clock import parse_utc, utc_iso, utc_now_iso
from improv_capture.database.base import Connection, Database, execute, fetch


def summary(manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: manifest.get(k) for k in ("session_id", "room_id", "room_name", "state", "reason",
                                         "started_at", "ended_at", "duration_s")},
        # a manifest older than revisions was never changed after it was finalised
        "revision": int(manifest.get("revision") or 1),
        "updated_at": manifest.get("updated_at") or manifest.get("ended_at"),
        "performers": [
            {"performer_id": p["performer_id"], "display_name": p.get("display_name"),
             "withdrawn": bool(p.get("withdrawn"))}
            for p in manifest.get("performers", [])
        ],
        "markers": len(manifest.get("markers", [])),
        "prompts": len(manifest.get("prompts", [])),
        "files": len(manifest.get("files", [])),
    }


def storage(row: dict[str, Any]) -> dict[str, Any]:
    """Where a session's files are: ``local`` (its media in the data dir), ``s3`` (the
    bucket, the key prefix of its objects and the manifest revision stored there) and
    ``s3_error`` (why the last try to store it failed; null once a try succeeds), from the
    catalog's columns."""
    return {
        "local": not row.get("local_removed"),
        "s3": {"bucket": row["s3_bucket"], "key": row["s3_key"], "revision": row["s3_revision"],
               "stored_at": row["s3_stored_at"]} if row.get("s3_revision") else None,
        "s3_error": row.get("s3_error"),
    }


#: the catalog's columns that ``storage`` reads
STORAGE_COLUMNS = "s3_bucket, s3_key, s3_revision, s3_stored_at, s3_error, local_removed"


def encode_cursor(started_at: str, session_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([started_at, session_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        started_at, session_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return str(started_at), str(session_id)
    except (ValueError, TypeError) as exc:
        raise ValueError("invalid cursor") from exc


def like_literal(text: str) -> str:
    """``text`` matched as itself by LIKE ... ESCAPE '\\' (ids hold ``_``, a LIKE wildcard)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class Node:
    """The node this catalog indexes the session directories of."""

    node_id: str
    url: str


@dataclass(frozen=True)
class Indexed:
    """A manifest read from disk, ready to be written to the index."""

    session_id: str
    started_at: str
    room_id: str | None
    state: str | None
    summary: dict[str, Any]
    mtime_ns: int


def read_manifest(manifest_path: Path) -> Indexed:
    """Blocking (a file read): call it in a worker thread."""
    manifest = json.loads(manifest_path.read_text())
    listed = summary(manifest)
    return Indexed(manifest["session_id"], manifest["started_at"], manifest.get("room_id"),
                   manifest.get("state"), listed, manifest_path.stat().st_mtime_ns)


class Catalog:
    def __init__(self, db: Database, sessions_dir: Path, node: Node) -> None:
        self._db = db
        self.sessions_dir = sessions_dir
        self.node = node

    async def _upsert(self, c: Connection, found: Indexed) -> None:
        await c.execute(
            "INSERT INTO sessions (session_id, started_at, room_id, state, summary, manifest_mtime_ns,"
            " revision, node_id, node_url) VALUES (?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(session_id) DO UPDATE SET started_at=excluded.started_at,"
            " room_id=excluded.room_id, state=excluded.state, summary=excluded.summary,"
            " manifest_mtime_ns=excluded.manifest_mtime_ns, revision=excluded.revision,"
            " node_id=excluded.node_id, node_url=excluded.node_url",
            found.session_id, found.started_at, found.room_id, found.state,
            json.dumps(found.summary), found.mtime_ns, found.summary["revision"],
            self.node.node_id, self.node.url,
        )

    async def sync(self) -> int:
        """Bring the index up to date with this node's directories; returns changes. A row
        of no node (indexed before nodes were named) is this node's."""
        known = {r["session_id"]: r["manifest_mtime_ns"] if r["current"] else None for r in await fetch(
            self._db, "SELECT session_id, manifest_mtime_ns, revision IS NOT NULL AND node_id = ?"
            " AS current FROM sessions WHERE node_id = ? OR node_id IS NULL",
            self.node.node_id, self.node.node_id)}

        def read_changed() -> tuple[list[Indexed], set[str]]:
            changed, seen = [], set()
            for path in self.sessions_dir.glob("ses_*/manifest.json"):
                seen.add(path.parent.name)
                try:
                    if known.get(path.parent.name) != path.stat().st_mtime_ns:
                        changed.append(read_manifest(path))
                except (OSError, ValueError, KeyError):
                    continue
            return changed, seen

        changed, seen = await asyncio.to_thread(read_changed)
        async with self._db.transaction() as c:
            for found in changed:
                await self._upsert(c, found)
            for session_id in set(known) - seen:
                await c.execute("DELETE FROM sessions WHERE session_id=?", session_id)
        return len(changed) + len(set(known) - seen)

    async def index(self, session_dir: Path) -> None:
        found = await asyncio.to_thread(read_manifest, session_dir / "manifest.json")
        async with self._db.transaction() as c:
            await self._upsert(c, found)

    async def page(
        self,
        *,
        state: str | None,
        room_id: str | None,
        since: str | None,
        until: str | None,
        after: str | None,
        limit: int,
    ) -> dict[str, Any]:
        where: list[str] = []
        args: list[Any] = []
        try:  # compare like with like: started_at is always microseconds and Z
            since = utc_iso(parse_utc(since)) if since else None
            until = utc_iso(parse_utc(until)) if until else None
        except ValueError as exc:
            raise ValueError("since and until must be ISO 8601 times") from exc
        for column, op, value in (("state", "=", state), ("room_id", "=", room_id),
                                  ("started_at", ">=", since), ("started_at", "<", until)):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        if after is not None:
            started_at, session_id = decode_cursor(after)
            where.append("(started_at, session_id) > (?, ?)")
            args += [started_at, session_id]
        sql = f"SELECT started_at, session_id, summary, {STORAGE_COLUMNS} FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at, session_id LIMIT ?"
        found = await fetch(self._db, sql, *args, limit + 1)
        page = found[:limit]
        return {
            "items": [{**json.loads(r["summary"]), "storage": storage(r)} for r in page],
            "next": encode_cursor(page[-1]["started_at"], page[-1]["session_id"])
            if len(found) > limit else None,
        }

    async def sessions_with(self, performer_id: str, here: bool = False) -> list[str]:
        """Sessions a performer is in (``here``: those whose directory is this node's)."""
        pattern = like_literal(f'"performer_id": "{performer_id}"')
        sql = "SELECT session_id FROM sessions WHERE summary LIKE ? ESCAPE '\\'"
        args: list[Any] = [f"%{pattern}%"]
        if here:
            sql += " AND (node_id = ? OR node_id IS NULL)"
            args.append(self.node.node_id)
        found = await fetch(self._db, sql + " ORDER BY started_at", *args)
        return [r["session_id"] for r in found]

    async def holder_of(self, session_id: str) -> str | None:
        """The public URL of the node whose data dir holds the session, when another node
        than this one does (None: this node, or no such session)."""
        found = await fetch(self._db, "SELECT node_id, node_url FROM sessions WHERE session_id=?",
                            session_id)
        if not found or found[0]["node_id"] in (None, self.node.node_id):
            return None
        return str(found[0]["node_url"]) if found[0]["node_url"] else None

    # archives in S3-compatible storage (improv_capture/storage/)

    async def storage_of(self, session_id: str) -> dict[str, Any] | None:
        found = await fetch(self._db, f"SELECT {STORAGE_COLUMNS} FROM sessions WHERE session_id=?",
                            session_id)
        return storage(found[0]) if found else None

    async def to_store(self, limit: int) -> list[str]:
        """This node's finalised sessions whose current revision is not in the store yet,
        oldest first."""
        found = await fetch(
            self._db,
            "SELECT session_id FROM sessions WHERE state IS NOT NULL AND state != 'recording'"
            " AND (node_id = ? OR node_id IS NULL)"
            " AND (s3_revision IS NULL OR s3_revision < revision)"
            " ORDER BY started_at, session_id LIMIT ?", self.node.node_id, limit)
        return [r["session_id"] for r in found]

    async def to_remove_locally(self, limit: int) -> list[tuple[str, int]]:
        """This node's stored sessions (current revision) whose media is still in its data dir."""
        found = await fetch(
            self._db,
            "SELECT session_id, s3_revision FROM sessions WHERE local_removed = 0"
            " AND (node_id = ? OR node_id IS NULL) AND s3_revision = revision"
            " ORDER BY started_at, session_id LIMIT ?", self.node.node_id, limit)
        return [(r["session_id"], int(r["s3_revision"])) for r in found]

    async def mark_stored(self, session_id: str, bucket: str, key: str, revision: int) -> None:
        await execute(
            self._db,
            "UPDATE sessions SET s3_bucket=?, s3_key=?, s3_revision=?, s3_stored_at=?, s3_error=NULL"
            " WHERE session_id=?", bucket, key, revision, utc_now_iso(), session_id)

    async def mark_store_error(self, session_id: str, error: str) -> None:
        await execute(self._db, "UPDATE sessions SET s3_error=? WHERE session_id=?",
                      error[:500], session_id)

    async def mark_local_removed(self, session_id: str) -> None:
        await execute(self._db, "UPDATE sessions SET local_removed=1 WHERE session_id=?", session_id)
