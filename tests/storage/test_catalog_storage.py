"""The catalog's storage columns: added to an index of an older version in place, and what
the uploader asks of them (due sessions, stored revisions, local copies to remove)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from improv_capture.database.sqlite import SqliteDatabase
from improv_capture.downstream.catalog import Catalog, Node
from tests.helpers import write_manifest_only

pytestmark = pytest.mark.unit

OLD_SESSIONS = """CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY, started_at TEXT NOT NULL, room_id TEXT, state TEXT,
    summary TEXT NOT NULL, manifest_mtime_ns INTEGER NOT NULL)"""


async def test_an_older_index_gains_the_columns_and_the_uploader_finds_its_work(tmp_path: Path) -> None:
    index = tmp_path / "index.sqlite3"
    with sqlite3.connect(index) as old:
        old.execute(OLD_SESSIONS)
    sessions = tmp_path / "sessions"
    for n, state in enumerate(("complete", "recording", "partial")):
        write_manifest_only(sessions / f"ses_{n}", 1_700_000_000 + n, state)
    db = SqliteDatabase(index)
    await db.start()
    try:
        catalog = Catalog(db, sessions, Node("node-a", "http://a.example"))
        assert await catalog.sync() == 3
        assert await catalog.to_store(10) == ["ses_0", "ses_2"]  # never one still recording
        page = await catalog.page(state=None, room_id=None, since=None, until=None, after=None, limit=10)
        assert {i["session_id"]: i["storage"] for i in page["items"]}["ses_0"] == {
            "local": True, "s3": None, "s3_error": None}
        await catalog.mark_stored("ses_0", "bucket", "sessions/ses_0/", 1)
        assert await catalog.to_store(10) == ["ses_2"]
        assert await catalog.to_remove_locally(10) == [("ses_0", 1)]
        await catalog.mark_local_removed("ses_0")
        assert await catalog.to_remove_locally(10) == []
        stored = await catalog.storage_of("ses_0")
        assert stored is not None and stored["local"] is False
        assert stored["s3"] is not None
        assert (stored["s3"]["bucket"], stored["s3"]["key"], stored["s3"]["revision"]) == (
            "bucket", "sessions/ses_0/", 1)
        # a new revision (a withdrawal) is due again; the row keeps what is stored meanwhile
        manifest = json.loads((sessions / "ses_0" / "manifest.json").read_text())
        manifest["revision"] = 2
        (sessions / "ses_0" / "manifest.json").write_text(json.dumps(manifest))
        await catalog.index(sessions / "ses_0")
        assert await catalog.to_store(10) == ["ses_0", "ses_2"]
        assert (await catalog.storage_of("ses_0") or {})["s3"]["revision"] == 1
    finally:
        await db.close()
    again = SqliteDatabase(index)  # opening it again adds nothing twice
    await again.start()
    await again.close()
