"""Sessions recorded by bots on a real server end up in S3 (moto's server over real HTTP):
every object the manifest's, the manifest written last, the catalog saying where; without a
local copy a reader still fetches them (a redirect to the store); a withdrawal deletes the
performer's objects; a store that is down delays the upload, never loses the session."""

from __future__ import annotations

import hashlib
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
    start_recording,
    stop_recording,
    verify,
    wait_for,
)
from tests.storage.store import MotoStore

pytestmark = [pytest.mark.process, PREENCODED_BOTS]

FAST_RETRIES = {"IMPROV_S3_RETRY_MIN_S": "0.2", "IMPROV_S3_RETRY_MAX_S": "1"}


@pytest.fixture
def started() -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def record(server: ServerProcess, bots: BotFactory, names: list[str],
           before_stop: Any = None) -> tuple[str, list[dict[str, Any]]]:
    room = server.create_room()
    session = start_recording(server, room)
    invites = [server.invite(room, n) for n in names]
    running = [bots(inv["url"], 30, "--preencoded") for inv in invites]
    wait_for(lambda: publishing(server, room, len(names)), 20, "every performer")
    time.sleep(1.5)
    for bot in running:
        assert bot.finish()[0] == 0
    if before_stop is not None:
        before_stop()
    assert stop_recording(server, room)["state"] == "complete"
    return session["session_id"], invites


def listed(server: ServerProcess, session_id: str) -> dict[str, Any]:
    items = server.api("GET", "/api/v1/sessions").json()["items"]
    return dict(next(i for i in items if i["session_id"] == session_id))


def stored_revision(server: ServerProcess, session_id: str, revision: int) -> bool:
    s3 = listed(server, session_id)["storage"]["s3"]
    return s3 is not None and s3["revision"] == revision


def check_stored(store: MotoStore, session_dir: Path) -> None:
    """Every object is the manifest's (the store's SHA256SUMS included)."""
    key = f"sessions/{session_dir.name}/"
    archive = manifest(session_dir)
    assert set(store.objects(key)) == {key + f["path"] for f in archive["files"]} | {
        key + "manifest.json", key + "SHA256SUMS"}
    for entry in archive["files"]:
        assert store.sha256(key + entry["path"]) == entry["sha256"]
    assert store.read(key + "manifest.json") == (session_dir / "manifest.json").read_bytes()
    sums = dict(reversed(line.split("  ")) for line in store.read(key + "SHA256SUMS").decode().splitlines())
    assert sums == {**{f["path"]: f["sha256"] for f in archive["files"]},
                    "manifest.json": hashlib.sha256(store.read(key + "manifest.json")).hexdigest()}


def test_a_recorded_session_leaves_the_data_dir_for_the_store_and_is_fetched_from_it(
        store: MotoStore, bots: BotFactory, started: list[ServerProcess], tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env=store.env(
        IMPROV_S3_KEEP_LOCAL="false", **FAST_RETRIES)).start()
    started.append(server)
    token = server.api("POST", "/api/v1/tokens", json={"role": "reader", "label": "job"}).json()["token"]
    store.record()
    session_id, invites = record(server, bots, ["Ann", "Ben"])
    session_dir = server.session_dir(session_id)
    wait_for(lambda: stored_revision(server, session_id, 1), 20, "the session in the store")
    storage = wait_for(lambda: (s := listed(server, session_id)["storage"])["local"] is False and s,
                       10, "the local copy removed")
    assert storage["s3"]["bucket"] == "improv-archive"
    assert storage["s3"]["key"] == f"sessions/{session_id}/"
    check_stored(store, session_dir)
    writes = [url for _, url in store.recorded_writes() if session_id in url]
    assert writes[-1].endswith(f"{session_id}/manifest.json"), writes
    assert sorted(p.name for p in session_dir.rglob("*") if p.is_file()) == ["SHA256SUMS", "manifest.json"]

    # the files API redirects to the store; a reader fetches the session whole, verified
    media = next(f for f in manifest(session_dir)["files"] if f["path"].endswith(".webm"))
    redirect = server.api("GET", f"/api/v1/sessions/{session_id}/files/{media['path']}", token=token)
    assert redirect.status_code == 307 and redirect.headers["location"].startswith(store.url)
    ranged = httpx.get(redirect.headers["location"], headers={"Range": "bytes=100-"}, timeout=10)
    assert ranged.status_code == 206 and len(ranged.content) == media["bytes"] - 100
    dest = tmp_path / "mirror"
    done = fetch(server, token, dest)
    assert done.returncode == 0, done.stderr
    for entry in manifest(session_dir)["files"]:
        path = dest / session_id / entry["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    assert verify(dest / session_id)[0] == 0
    # an interrupted download resumes from the store with Range
    (dest / session_id).rename(tmp_path / "first-copy")
    partial = dest / ".partial" / session_id / media["path"]
    partial.parent.mkdir(parents=True)
    partial.write_bytes((tmp_path / "first-copy" / media["path"]).read_bytes()[: media["bytes"] // 2])
    assert fetch(server, token, dest).returncode == 0
    assert (dest / session_id / media["path"]).read_bytes() == (
        tmp_path / "first-copy" / media["path"]).read_bytes()

    # a withdrawal deletes the performer's objects, then the manifest goes up again, last
    ann = invites[0]["performer_id"]
    store.record()
    assert server.api("POST", f"/api/v1/performers/{ann}/revoke", json={"reason": "asked"}).status_code == 200
    wait_for(lambda: stored_revision(server, session_id, 2), 20, "revision 2 in the store")
    assert not [k for k in store.objects(f"sessions/{session_id}/") if ann in k]
    check_stored(store, session_dir)
    writes = [(m, url) for m, url in store.recorded_writes() if session_id in url]
    assert [m for m, _ in writes] == ["DELETE", "PUT", "PUT"] and ann in writes[0][1], writes
    assert writes[-1][1].endswith("manifest.json")
    applied = fetch(server, token, dest)
    assert applied.returncode == 0 and f"withdrew {ann} from {session_id}" in applied.stderr
    assert verify(dest / session_id)[0] == 0


def test_a_store_that_is_down_delays_the_upload_and_loses_nothing(
        store: MotoStore, bots: BotFactory, started: list[ServerProcess], tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env=store.env(**FAST_RETRIES)).start()
    started.append(server)
    session_id, _ = record(server, bots, ["Cy"], before_stop=store.stop)
    session_dir = server.session_dir(session_id)
    wait_for(lambda: server.log().count(f"s3: storing {session_id} failed") >= 2, 20,
             "the upload tried again")
    storage = listed(server, session_id)["storage"]
    assert storage["local"] is True and storage["s3"] is None
    assert "EndpointConnectionError" in storage["s3_error"]
    media = next(f for f in manifest(session_dir)["files"] if f["path"].endswith(".webm"))
    served = server.api("GET", f"/api/v1/sessions/{session_id}/files/{media['path']}")
    assert served.status_code == 200
    assert served.content == (session_dir / media["path"]).read_bytes()

    # a restart goes on from the catalog: still down, still retried; then the store is back
    server.stop()
    server.start()
    wait_for(lambda: server.log().count(f"s3: storing {session_id} failed") >= 3, 20,
             "the upload tried again after the restart")
    store.start()  # the same port; its bucket is still there
    wait_for(lambda: stored_revision(server, session_id, 1), 20, "the session in the store")
    check_stored(store, session_dir)
    storage = listed(server, session_id)["storage"]
    assert storage["local"] is True and storage["s3_error"] is None  # IMPROV_S3_KEEP_LOCAL=true
    assert (session_dir / media["path"]).exists()


def test_in_a_cluster_the_primary_stores_sessions_of_every_worker(
        store: MotoStore, bots: BotFactory, started: list[ServerProcess], tmp_path: Path) -> None:
    cluster = ServerProcess(tmp_path / "data", env=store.env(
        IMPROV_WORKERS="2", IMPROV_S3_KEEP_LOCAL="false", **FAST_RETRIES)).start(timeout=60)
    started.append(cluster)
    sessions = [record(cluster, bots, [name])[0] for name in ("Di", "Ed")]  # a room per worker
    for session_id in sessions:
        wait_for(lambda: stored_revision(cluster, session_id, 1), 20, "the session in the store")
        wait_for(lambda: listed(cluster, session_id)["storage"]["local"] is False, 10,
                 "the local copy removed")
        check_stored(store, cluster.session_dir(session_id))
    media = next(f for f in manifest(cluster.session_dir(sessions[1]))["files"]
                 if f["path"].endswith(".webm"))
    through_router = cluster.api("GET", f"/api/v1/sessions/{sessions[1]}/files/{media['path']}",
                                 follow_redirects=True)
    assert through_router.status_code == 200
    assert hashlib.sha256(through_router.content).hexdigest() == media["sha256"]
