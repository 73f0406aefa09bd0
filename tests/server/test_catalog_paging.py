"""The session catalog's keyset paging (improv_capture/downstream/catalog.py) on each backend
(a SQLite index in a temporary directory, a PostgreSQL database: tests/postgres.py): a reader walking the pages sees every session once, in start
order, while new sessions arrive; the filters bound the walk; a bad cursor is bad input.
Through the HTTP API: tests/server/test_downstream.py."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import pytest

from improv_capture.clock import utc_iso
from improv_capture.database.base import Database
from improv_capture.downstream.catalog import Catalog, Node
from tests.helpers import write_manifest_only
from tests.postgres import index_db, postgres_fixture  # noqa: F401 - fixtures

pytestmark = pytest.mark.process  # a PostgreSQL server

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z


def state_of(n: int) -> str:
    return "complete" if n % 5 else "partial"


@pytest.fixture
def sessions(tmp_path: Path) -> Path:
    """25 finished sessions, one a second from T0; every fifth is partial."""
    root = tmp_path / "sessions"
    for n in range(25):
        write_manifest_only(root / f"ses_{n:03d}", T0 + n, state_of(n))
    return root


@pytest.fixture
async def catalog(index_db: Database, sessions: Path) -> Catalog:
    found = Catalog(index_db, sessions, Node("node-a", "http://a.example"))
    assert await found.sync() == 25
    return found


async def page(catalog: Catalog, **query: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"state": None, "room_id": None, "since": None, "until": None,
                            "after": None, "limit": 100}
    return await catalog.page(**{**args, **query})


async def walk(catalog: Catalog, **query: Any) -> list[str]:
    """Every session id the pages give, following `next` to the end."""
    seen: list[str] = []
    after = None
    while True:
        found = await page(catalog, after=after, **query)
        seen += [s["session_id"] for s in found["items"]]
        after = found["next"]
        if after is None:
            return seen


async def test_pages_stay_stable_while_sessions_arrive(catalog: Catalog, sessions: Path) -> None:
    first = await page(catalog, state="complete", limit=7)
    assert [s["session_id"] for s in first["items"]] == [
        f"ses_{n:03d}" for n in range(1, 9) if n % 5
    ]
    # two sessions are indexed meanwhile: one that started before the reader's position (a
    # late arrival: an offset would now repeat an item), one that started after everything
    for n, started in ((90, T0 + 3.5), (91, T0 + 100)):
        write_manifest_only(sessions / f"ses_{n:03d}", started, "complete")
        await catalog.index(sessions / f"ses_{n:03d}")
    seen = [s["session_id"] for s in first["items"]]
    after = first["next"]
    while after is not None:
        found = await page(catalog, state="complete", limit=7, after=after)
        assert len(found["items"]) <= 7
        seen += [s["session_id"] for s in found["items"]]
        after = found["next"]
    expected = [f"ses_{n:03d}" for n in range(25) if n % 5]
    assert seen == [*expected, "ses_091"]  # each once, in start order; the late one not between
    assert "ses_090" in await walk(catalog, state="complete")  # a new walk sees it in its place


async def test_the_last_page_has_no_next(catalog: Catalog) -> None:
    complete = [f"ses_{n:03d}" for n in range(25) if n % 5]  # 20 of them
    pages = []
    after = None
    while True:
        found = await page(catalog, state="complete", limit=10, after=after)
        pages.append([s["session_id"] for s in found["items"]])
        after = found["next"]
        if after is None:
            break
    assert pages == [complete[:10], complete[10:]]  # not a third, empty page
    assert (await page(catalog, state="failed"))["items"] == []


async def test_since_until_and_state_bound_the_walk(catalog: Catalog) -> None:
    ranged = await walk(catalog, since="2023-11-14T22:13:25Z", until="2023-11-14T22:13:30Z", limit=2)
    assert ranged == [f"ses_{n:03d}" for n in range(5, 10)]  # since included, until not
    # the same instants written another way select the same sessions
    assert await walk(catalog, since=utc_iso(T0 + 5), until="2023-11-14T23:13:30+01:00") == ranged
    assert await walk(catalog, state="partial") == [f"ses_{n:03d}" for n in range(0, 25, 5)]
    assert await walk(catalog, state="partial", since=utc_iso(T0 + 6)) == [
        f"ses_{n:03d}" for n in (10, 15, 20)
    ]
    assert await walk(catalog, room_id="room_other") == []
    summary = (await page(catalog, limit=1))["items"][0]
    assert summary["session_id"] == "ses_000" and summary["state"] == "partial"
    assert summary["started_at"] == utc_iso(T0) and summary["room_id"] == "room_old"


@pytest.mark.parametrize("cursor", [
    "garbage!",
    base64.urlsafe_b64encode(b"not json").decode(),
    base64.urlsafe_b64encode(b'["only one"]').decode(),
    base64.urlsafe_b64encode(b'{"a": 1}').decode(),
])
async def test_a_bad_cursor_is_a_value_error(catalog: Catalog, cursor: str) -> None:
    with pytest.raises(ValueError, match="invalid cursor"):
        await page(catalog, after=cursor)


async def test_bad_times_are_a_value_error(catalog: Catalog) -> None:
    for query in ({"since": "yesterday"}, {"until": "2023-13-40T00:00:00Z"}):
        with pytest.raises(ValueError, match="ISO 8601"):
            await page(catalog, **query)


async def test_sync_follows_the_directories(catalog: Catalog, sessions: Path) -> None:
    """The directories are the source of truth: a changed manifest is indexed again, a
    vanished session leaves the index, an unchanged one costs nothing."""
    assert await catalog.sync() == 0
    write_manifest_only(sessions / "ses_003", T0 + 3, "failed")
    shutil.rmtree(sessions / "ses_004")
    assert await catalog.sync() == 2
    assert await walk(catalog, state="failed") == ["ses_003"]
    assert "ses_004" not in await walk(catalog)
