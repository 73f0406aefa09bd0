"""The downstream index shared by several nodes (improv_capture/database/), on each backend:
two processes' worth of stores on one database (SQLite: two connections to one file, as a
cluster's workers; PostgreSQL: two pools, as two machines). What a reader and an operator
rely on: events in one order with no id skipped, each webhook delivered once, a reader token
revoked on one node refused by the other, and writes made while PostgreSQL is down kept and
caught up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from improv_capture.database.base import Database, DatabaseUnavailable, fetchval
from improv_capture.database.postgres import PostgresDatabase, migrations
from improv_capture.database.sqlite import SqliteDatabase
from improv_capture.downstream.events import EventLog
from improv_capture.downstream.outbox import Outbox
from improv_capture.downstream.tokens import RECHECK_S, TokenStore
from improv_capture.downstream.webhooks import Deliverer
from tests.postgres import Postgres, postgres_fixture  # noqa: F401 - the `postgres` fixture
from tests.webhooks import SECRET, Receiver

pytestmark = [pytest.mark.process, pytest.mark.timeout(60)]  # a PostgreSQL server; a hang fails fast

EVENTS = 40


@pytest.fixture(params=["sqlite", "postgresql"])
async def two_nodes(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Database, Database]]:
    """Two handles on one index, each as a node would open it."""
    if request.param == "sqlite":
        nodes: list[Database] = [SqliteDatabase(tmp_path / "index.sqlite3") for _ in range(2)]
    else:
        url = request.getfixturevalue("postgres").new_database()
        nodes = [PostgresDatabase(url) for _ in range(2)]
    await asyncio.gather(*(db.start() for db in nodes))  # both migrate at once: once
    try:
        yield nodes[0], nodes[1]
    finally:
        for db in nodes:
            await db.close()


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` on the event loop until it holds (the nodes' tasks run meanwhile)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} never came"
        await asyncio.sleep(0.05)


async def test_events_of_two_nodes_reach_both_in_one_order(two_nodes: tuple[Database, Database]) -> None:
    logs = [EventLog(db, []) for db in two_nodes]
    for log in logs:
        await log.start()
    seen: list[list[int]] = [[], []]
    for log, got in zip(logs, seen):
        log.on_event(lambda event, got=got: _append(got, event["id"]))
    try:
        published = await asyncio.gather(*(
            logs[n % 2].publish("session.started", {"n": n}) for n in range(EVENTS)))
        ids = sorted(e["id"] for e in published)
        assert len(set(ids)) == EVENTS
        # every node streams every node's events, in id order, none skipped
        for got in seen:
            await until(lambda got=got: len(got) == EVENTS, 10, "every event on every node")
            assert got == ids
        # a reader resuming after any id gets exactly the rest, in order
        middle = ids[EVENTS // 2]
        assert [e["id"] for e in await logs[1].since(middle)] == [i for i in ids if i > middle]
    finally:
        for log in logs:
            await log.stop()


async def _append(into: list[int], value: int) -> None:
    into.append(value)


async def test_each_webhook_is_delivered_by_one_node(two_nodes: tuple[Database, Database]) -> None:
    with Receiver(failures=1) as receiver:  # every first attempt fails: each is retried too
        logs = [EventLog(db, [receiver.url]) for db in two_nodes]
        deliverers = [Deliverer(db, log, SECRET, backoff_s=0.1, give_up_s=60, allow_private=True)
                      for db, log in zip(two_nodes, logs)]
        for log in logs:
            await log.start()
        for deliverer in deliverers:
            deliverer.start()
        try:
            published = [await logs[n % 2].publish("session.finalized", {"n": n}) for n in range(EVENTS)]
            await until(lambda: len(receiver.accepted) == EVENTS, 30, "every delivery")
            await asyncio.sleep(0.5)  # nothing delivered twice after the last
            attempts: dict[str, int] = {}
            for attempt in receiver.attempts:
                attempts[attempt["event_id"]] = attempts.get(attempt["event_id"], 0) + 1
            # one failure and one success each: never two nodes sending the same delivery
            assert attempts == {str(e["id"]): 2 for e in published}, attempts
            assert all(a["valid"] for a in receiver.attempts)
        finally:
            for deliverer in deliverers:
                await deliverer.stop()
            for log in logs:
                await log.stop()


async def test_a_token_revoked_on_one_node_is_refused_by_the_other(two_nodes: tuple[Database, Database]) -> None:
    stores = [TokenStore(db) for db in two_nodes]
    for store in stores:
        await store.start()
    try:
        created = await stores[0].create("reader", "nightly job")
        token = created["token"]
        assert await stores[1].is_reader(token)
        streaming = stores[1].revoked_signal(token)  # an SSE stream open on the other node
        assert not streaming.is_set()
        revoked_at = time.monotonic()
        assert await stores[0].revoke(created["id"])
        assert not await stores[0].is_reader(token)
        await asyncio.wait_for(streaming.wait(), RECHECK_S * 3)  # the stream ends
        assert not await stores[1].is_reader(token)
        assert time.monotonic() - revoked_at <= RECHECK_S * 3
        assert not await stores[1].is_reader("icr_" + "x" * 43)
    finally:
        for store in stores:
            await store.stop()


async def test_migrations_are_applied_once(postgres: Postgres) -> None:
    url = postgres.new_database()
    nodes = [PostgresDatabase(url) for _ in range(3)]
    await asyncio.gather(*(db.start() for db in nodes))
    try:
        versions = postgres.sql("SELECT version FROM schema_migrations ORDER BY version",
                                url.rsplit("/", 1)[1]).split()
        assert versions == [v for v, _ in migrations()]
    finally:
        for db in nodes:
            await db.close()


async def test_events_published_while_postgres_is_down_wait_and_catch_up(
    postgres: Postgres, tmp_path: Path
) -> None:
    """The outbox keeps what could not be stored, on disk, in order; a node restarted during
    the outage takes it up; once PostgreSQL answers, everything is stored once, in order."""
    url = postgres.new_database()
    db = PostgresDatabase(url, timeout_s=1.0)
    await db.start()
    log = EventLog(db, [])
    await log.start()
    seen: list[int] = []
    log.on_event(lambda event: _append(seen, event["data"]["n"]))

    async def apply(entry: dict[str, Any]) -> None:
        await log.publish(entry["type"], entry["data"], entry["created_at"])

    path = tmp_path / "outbox.jsonl"
    outbox = Outbox(path, apply, max_bytes=1 << 20, retry_s=0.2)
    await outbox.start()
    try:
        await outbox.submit({"op": "publish", "type": "t", "data": {"n": 0}, "created_at": "c0"})
        postgres.stop()
        with pytest.raises(DatabaseUnavailable):
            await fetchval(db, "SELECT 1")
        for n in range(1, 6):
            await outbox.submit({"op": "publish", "type": "t", "data": {"n": n}, "created_at": f"c{n}"})
        assert outbox.waiting == 5 and len(path.read_text().splitlines()) == 5
        # the node restarts during the outage: the next one takes up the file
        await outbox.stop()
        outbox = Outbox(path, apply, max_bytes=1 << 20, retry_s=0.2)
        await outbox.start()
        await outbox.submit({"op": "publish", "type": "t", "data": {"n": 6}, "created_at": "c6"})
        assert outbox.waiting == 6
        postgres.start()
        await until(lambda: outbox.waiting == 0, 20, "the outbox replayed")
        assert not path.exists()
        await until(lambda: len(seen) == 7, 10, "every event streamed")
        assert seen == list(range(7))
        stored = await log.since(0)
        assert [e["data"]["n"] for e in stored] == list(range(7))
        assert [e["created_at"] for e in stored] == [f"c{n}" for n in range(7)]  # when it happened
    finally:
        await outbox.stop()
        await log.stop()
        await db.close()
