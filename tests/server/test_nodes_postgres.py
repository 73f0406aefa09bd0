"""A node whose index is in PostgreSQL: the recording goes on while PostgreSQL is down, and the
catalog, the events and the webhooks catch up when it is back. (Several nodes on one
PostgreSQL: tests/server/test_nodes_redis.py and tests/database/.)"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    PREENCODED_BOTS,
    BotFactory,
    ServerProcess,
    publishing,
    read_events,
    start_recording,
    stop_recording,
    verify,
    wait_for,
)
from tests.postgres import Postgres, postgres_fixture  # noqa: F401 - the `postgres` fixture
from tests.webhooks import SECRET, Receiver

pytestmark = [pytest.mark.process, PREENCODED_BOTS]


def node(tmp_path: Path, name: str, database_url: str, receiver: Receiver) -> ServerProcess:
    return ServerProcess(tmp_path / name / "data", env={
        "IMPROV_DATABASE_URL": database_url,
        "IMPROV_NODE_ID": name,
        "IMPROV_WEBHOOK_URLS": json.dumps([receiver.url]),
        "IMPROV_WEBHOOK_SECRET": SECRET,
        "IMPROV_WEBHOOK_BACKOFF_S": "0.2",
        "IMPROV_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
        "IMPROV_OUTBOX_RETRY_S": "0.5",
        "IMPROV_DATABASE_TIMEOUT_S": "1",
    })


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(failures=0) as r:
        yield r


@pytest.fixture
def node_a(tmp_path: Path, postgres: Postgres, receiver: Receiver) -> Iterator[ServerProcess]:
    server = node(tmp_path, "node-a", postgres.new_database(), receiver).start(timeout=40)
    try:
        yield server
    finally:
        server.stop()



def outbox_entries(server: ServerProcess) -> float:
    """What /metrics says waits in the outbox."""
    text = server.api("GET", "/metrics").text
    return float(next(line.split()[1] for line in text.splitlines()
                      if line.startswith("improv_index_outbox_entries ")))


def listed(server: ServerProcess, token: str) -> dict[str, dict[str, Any]]:
    page = server.api("GET", "/api/v1/sessions", token=token).json()
    return {s["session_id"]: s for s in page["items"]}


def test_recording_goes_on_while_postgres_is_down_and_the_index_catches_up(
    node_a: ServerProcess, postgres: Postgres, receiver: Receiver, bots: BotFactory
) -> None:
    a = node_a
    token = a.api("POST", "/api/v1/tokens", json={"role": "reader", "label": "job"}).json()["token"]
    room = a.create_room()
    session = start_recording(a, room)["session_id"]
    running = [bots(a.invite(room, n)["url"], 40, "--preencoded") for n in ("Eve", "Fay")]
    wait_for(lambda: publishing(a, room, 2), 20, "both performers")
    postgres.stop()
    down = time.monotonic()
    time.sleep(3)
    assert stop_recording(a, room)["state"] == "complete"  # finalised with the database down
    listing = a.api("GET", "/api/v1/sessions", token=token)
    assert listing.status_code == 503 and "database" in listing.text  # said, not a 500
    assert outbox_entries(a) >= 1  # the session's catalog write and event wait on disk
    time.sleep(max(0.0, 10 - (time.monotonic() - down)))
    postgres.start()
    for bot in running:
        assert bot.finish()[0] == 0
    # the catalog and the events catch up, in order, and the webhook goes out once
    wait_for(lambda: a.api("GET", "/api/v1/sessions", token=token).status_code == 200
             and session in listed(a, token), 20, "the session listed")
    events = read_events(a, token, 2)
    assert [(e["type"], e["data"]["session_id"]) for e in events] == [
        ("session.started", session), ("session.finalized", session)]
    assert events[1]["data"]["state"] == "complete"
    wait_for(lambda: len(receiver.accepted) == 2, 20, "both webhooks")
    assert verify(a.session_dir(session))[0] == 0
    assert not (a.data_dir / "outbox.jsonl").exists() and outbox_entries(a) == 0
