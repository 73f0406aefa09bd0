"""Two nodes (server processes, each with its own data dir and port) on one PostgreSQL: what a
downstream job sees is one catalog, one event stream and one revocation feed, whichever node
it asks (docs/architecture.md, "Many machines"). Webhooks are delivered once. The recording
goes on while PostgreSQL is down, and the catalog and events catch up when it is back."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import (
    PREENCODED_BOTS,
    BotFactory,
    ServerProcess,
    fetch,
    manifest,
    publishing,
    record_session,
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
def nodes(tmp_path: Path, postgres: Postgres, receiver: Receiver) -> Iterator[list[ServerProcess]]:
    url = postgres.new_database()
    started: list[ServerProcess] = []
    try:
        for name in ("node-a", "node-b"):
            started.append(node(tmp_path, name, url, receiver).start(timeout=40))
        yield started
    finally:
        for server in started:
            server.stop()


def read_events(server: ServerProcess, token: str, count: int, after: int = 0) -> list[dict[str, Any]]:
    found = []
    with httpx.stream("GET", f"{server.url}/api/v1/events?after={after}", timeout=15,
                      headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: "):
                found.append(json.loads(line[6:]))
                if len(found) == count:
                    break
    return found


def outbox_entries(server: ServerProcess) -> float:
    """What /metrics says waits in the outbox."""
    text = server.api("GET", "/metrics").text
    return float(next(line.split()[1] for line in text.splitlines()
                      if line.startswith("improv_index_outbox_entries ")))


def listed(server: ServerProcess, token: str) -> dict[str, dict[str, Any]]:
    page = server.api("GET", "/api/v1/sessions", token=token).json()
    return {s["session_id"]: s for s in page["items"]}


def test_two_nodes_share_one_catalog_event_stream_and_revocations(
    nodes: list[ServerProcess], receiver: Receiver, bots: BotFactory, tmp_path: Path
) -> None:
    a, b = nodes
    # a reader token made on one node opens the other
    token = a.api("POST", "/api/v1/tokens", json={"role": "reader", "label": "job"}).json()["token"]
    on_a, invites_a = record_session(a, bots, ["Ann", "Ben"])
    on_b, invites_b = record_session(b, bots, ["Cy", "Di"])

    # one catalog: either node lists both sessions, each said to be on its node
    for server in (a, b):
        wait_for(lambda server=server: {on_a, on_b} <= set(listed(server, token)), 10, "both sessions listed")
        assert set(listed(server, token)) == {on_a, on_b}

    # one event stream, in one order, from either node (ids increase; nothing skipped)
    expected = [("session.started", on_a), ("session.finalized", on_a),
                ("session.started", on_b), ("session.finalized", on_b)]
    streams = [read_events(server, token, 4) for server in (a, b)]
    assert streams[0] == streams[1]
    assert [(e["type"], e["data"]["session_id"]) for e in streams[0]] == expected
    ids = [e["id"] for e in streams[0]]
    assert ids == sorted(ids) and len(set(ids)) == 4

    # a session is fetched through the node that does not hold it: the same bytes, verified
    dest = tmp_path / "mirror"
    done = fetch(a, token, dest)
    assert done.returncode == 0, done.stderr
    for session_id, holder in ((on_a, a), (on_b, b)):
        assert verify(dest / session_id)[0] == 0
        assert (dest / session_id / "manifest.json").read_bytes() == (
            holder.session_dir(session_id) / "manifest.json").read_bytes()
    media = next(f for f in manifest(b.session_dir(on_b))["files"] if f["path"].endswith(".webm"))
    ranged = httpx.get(f"{a.url}/api/v1/sessions/{on_b}/files/{media['path']}",
                       headers={"Authorization": f"Bearer {token}", "Range": "bytes=100-199"})
    assert ranged.status_code == 206
    assert ranged.content == (b.session_dir(on_b) / media["path"]).read_bytes()[100:200]
    assert a.api("GET", "/api/v1/sessions/ses_20200101T000000Z_000000", token=token).status_code == 404

    # a revocation on node A withdraws the performer from node B's session too
    cy = invites_b[0]["performer_id"]
    revoked = a.api("POST", f"/api/v1/performers/{cy}/revoke", json={"reason": "asked"})
    assert revoked.status_code == 200, revoked.text
    entry = wait_for(lambda: next((p for p in manifest(b.session_dir(on_b))["performers"]
                                   if p["performer_id"] == cy and p.get("withdrawn")), None), 15, "withdrawn on B")
    assert entry["file"] is None and entry["withdrawn"]["reason"] == "asked"
    assert not (b.session_dir(on_b) / f"performers/{cy}.webm").exists()
    assert verify(b.session_dir(on_b))[0] == 0
    assert [r["performer_id"] for r in b.api("GET", "/api/v1/revocations", token=token).json()["items"]] == [cy]
    later = read_events(b, token, 2, after=ids[-1])
    assert [e["type"] for e in later] == ["consent.revoked", "session.updated"]
    assert later[1]["data"]["session_id"] == on_b and later[1]["data"]["withdrawn"] == cy

    # webhooks: every event delivered once, by one node
    wait_for(lambda: len(receiver.accepted) == 6, 20, "every webhook")
    time.sleep(1)
    assert sorted(int(x["event_id"]) for x in receiver.attempts) == sorted(int(i) for i in receiver.accepted)
    assert [receiver.accepted[str(i)]["type"] for i in ids] == [t for t, _ in expected]
    del invites_a


def test_recording_goes_on_while_postgres_is_down_and_the_index_catches_up(
    nodes: list[ServerProcess], postgres: Postgres, receiver: Receiver, bots: BotFactory
) -> None:
    a, _ = nodes
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
