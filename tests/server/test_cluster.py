"""`serve --workers 2`: rooms spread over two worker processes behind one router, each room's
HTTP, signaling and monitor reaching its owner; real bots, real recordings."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import (
    PREENCODED_BOTS,
    BotFactory,
    ServerProcess,
    close_code,
    next_of,
    operator_ws,
    publishing,
    start_recording,
    stop_recording,
    stored_events,
    verify,
    wait_for,
    worker_pids,
)

pytestmark = [pytest.mark.process, PREENCODED_BOTS]



CLUSTER_ENV = {"IMPROV_WORKERS": "2", "IMPROV_HELLO_TIMEOUT_S": "3"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data", env=CLUSTER_ENV).start(timeout=60)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def whole_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One cluster for the tests that leave it whole, in this order (a cluster costs seconds of
    CPU to start): rooms spread over its workers first, then bad input to its router."""
    proc = ServerProcess(tmp_path_factory.mktemp("cluster") / "data", env=CLUSTER_ENV).start(timeout=60)
    try:
        yield proc
    finally:
        proc.stop()


async def test_rooms_spread_over_workers_and_reach_their_owner(
    whole_cluster: ServerProcess, bots: BotFactory
) -> None:
    cluster = whole_cluster
    rooms = [cluster.create_room("one"), cluster.create_room("two")]
    listed = cluster.api("GET", "/api/v1/rooms").json()["items"]
    assert {r["room_id"]: r["worker"] for r in listed} == {rooms[0]: 0, rooms[1]: 1}
    pids = worker_pids(cluster)
    assert len(set(pids)) == 2 and cluster.proc is not None and cluster.proc.pid not in pids

    invites = {room: [cluster.invite(room, f"{room[-4:]} {n}") for n in ("A", "B")] for room in rooms}
    running = [bots(invite["url"], 14, "--preencoded") for room in rooms for invite in invites[room]]
    for room in rooms:
        wait_for(lambda: publishing(cluster, room, 2), 20, f"both performers of {room}")

    ws = await operator_ws(cluster, cluster.token)
    try:
        await next_of(ws, "welcome")
        merged = await next_of(ws, "rooms")
        assert [r["room_id"] for r in merged["rooms"]] == rooms
        seen: set[str] = set()
        while seen != set(rooms):  # each worker's stats reach the one console
            message = await next_of(ws, "stats")
            if len(message["performers"]) == 2:
                seen.add(message["room_id"])
        sessions = [start_recording(cluster, room)["session_id"] for room in rooms]
        await ws.send(json.dumps({"type": "watch", "room_id": rooms[1]}))  # owned by worker 1
        offer = await next_of(ws, "subscribe_offer")
        assert offer["room_id"] == rooms[1]
        assert {p["performer_id"] for p in offer["peers"]} == {i["performer_id"] for i in invites[rooms[1]]}
        assert offer["sdp"].count("m=video") == 2
    finally:
        await ws.close()

    await asyncio.sleep(6)
    for room in rooms:
        assert stop_recording(cluster, room)["state"] == "complete"
    for bot in running:
        peer = bot.peer_stats(finish=True)  # the other performer, relayed by the owner
        assert peer["video_frames"] > 100 and peer["audio_frames"] > 300, peer

    listing = cluster.api("GET", "/api/v1/sessions").json()["items"]  # the primary's catalog
    assert {s["session_id"]: s["state"] for s in listing} == dict.fromkeys(sessions, "complete")
    for session_id, room in zip(sessions, rooms):
        status, report = verify(cluster.session_dir(session_id))
        assert status == 0, report["defects"]
        assert set(report["performers"]) == {i["performer_id"] for i in invites[room]}
        assert all(p["video_frames"] > 100 for p in report["performers"].values())
    events = stored_events(cluster)
    for kind in ("session.started", "session.finalized"):
        assert {e["data"]["session_id"] for e in events if e["type"] == kind} == set(sessions)

    # consent revoked through the router: out of worker 1's room, out of its session
    withdrawn = invites[rooms[1]][0]["performer_id"]
    response = cluster.api("POST", f"/api/v1/performers/{withdrawn}/revoke", json={"reason": "asked"})
    assert response.status_code == 200 and response.json()["sessions"] == [sessions[1]], response.text
    again = cluster.api("POST", f"/api/v1/rooms/{rooms[1]}/invites",
                        json={"display_name": "again", "performer_id": withdrawn})
    assert again.status_code == 409, again.text
    manifest = cluster.api("GET", f"/api/v1/sessions/{sessions[1]}").json()
    assert [p["performer_id"] for p in manifest["performers"] if p.get("withdrawn")] == [withdrawn]


async def test_the_router_refuses_bad_input_as_a_lone_server_does(whole_cluster: ServerProcess) -> None:
    cluster = whole_cluster
    signal_url, operator_url = cluster.ws_url("/api/v1/signal"), cluster.ws_url("/api/v1/operator")
    forged = json.dumps({"type": "hello", "token": "forged"})
    assert (await close_code(signal_url, forged))[0] == 4401
    assert (await close_code(signal_url, "not json"))[0] == 4400
    assert (await close_code(operator_url, json.dumps({"type": "hello", "token": "nope"})))[0] == 4401
    assert (await close_code(signal_url))[0] == 4408  # no hello within hello_timeout_s
    assert cluster.api("GET", "/api/v1/rooms", token="nope").status_code == 401
    assert cluster.api("GET", "/api/v1/status", token="nope").status_code == 401
    assert cluster.api("GET", "/api/v1/rooms/room_unknown").status_code == 404
    # the workers' own routes are not reachable from outside
    assert cluster.api("POST", "/internal/v1/performers/p_x/withdraw").status_code == 404
    assert cluster.api("POST", "/api/v1/rooms", content=b"x" * (2 * 1024 * 1024)).status_code == 413
    # paths reach the primary as the client encoded them, and cannot escape a session there
    for escape in ("%2e%2e/%2e%2e/operator_token", "..%2f..%2foperator_token", "%2Fetc%2Fpasswd"):
        response = cluster.api("GET", f"/api/v1/sessions/ses_none/files/{escape}")
        assert response.status_code in (400, 404), (escape, response.status_code)
    assert cluster.api("GET", "/api/v1/sessions", params={"state": "complete", "limit": 5}).status_code == 200
    assert cluster.api("GET", "/api/v1/sessions", params={"limit": 0}).status_code == 422
    # a reader token made after the workers started is known to all of them: 403, not 401
    reader = cluster.api("POST", "/api/v1/tokens", json={"role": "reader", "label": "job"}).json()["token"]
    cluster.create_room("worker 0")
    room = cluster.create_room("worker 1")
    assert cluster.api("GET", f"/api/v1/rooms/{room}").json()["worker"] == 1
    assert cluster.api("GET", f"/api/v1/rooms/{room}", token=reader).status_code == 403
    assert cluster.api("GET", "/api/v1/rooms", token=reader).status_code == 403
    assert cluster.api("GET", "/api/v1/sessions", token=reader).status_code == 200


def test_a_killed_worker_comes_back_with_its_rooms_and_its_session_recovered(
    cluster: ServerProcess, bots: BotFactory
) -> None:
    rooms = [cluster.create_room("stays"), cluster.create_room("crashes")]
    for room in rooms:
        for name in ("A", "B"):
            bots(cluster.invite(room, name)["url"], 40, "--preencoded")
    for room in rooms:
        wait_for(lambda: publishing(cluster, room, 2), 20, f"both performers of {room}")
    sessions = [start_recording(cluster, room)["session_id"] for room in rooms]
    time.sleep(4)  # record a while before the crash
    killed = worker_pids(cluster)[1]
    os.kill(killed, signal.SIGKILL)

    def restarted() -> bool:
        try:
            workers = cluster.api("GET", "/api/v1/status").json().get("workers", [])
        except httpx.HTTPError:
            return False
        return len(workers) == 2 and workers[1]["restarts"] == 1 and workers[1]["pid"] != killed

    wait_for(restarted, 30, "worker 1 to restart")
    room = cluster.api("GET", f"/api/v1/rooms/{rooms[1]}")
    assert room.status_code == 200 and room.json()["recording"] is None, room.text
    recovered = wait_for(
        lambda: next((s for s in cluster.api("GET", "/api/v1/sessions").json()["items"]
                      if s["session_id"] == sessions[1] and s["state"] != "recording"), None),
        20, "the interrupted session in the catalog",
    )
    assert recovered["state"] == "partial", recovered
    manifest = cluster.api("GET", f"/api/v1/sessions/{sessions[1]}").json()
    assert manifest["reason"] and "interrupted" in manifest["reason"], manifest["reason"]
    status, report = verify(cluster.session_dir(sessions[1]))
    assert status == 0, report["defects"]
    assert all(p["video_frames"] > 60 for p in report["performers"].values()), report

    # the room on worker 0 recorded on, untouched by the crash
    assert stop_recording(cluster, rooms[0])["state"] == "complete"
    status, report = verify(cluster.session_dir(sessions[0]))
    assert status == 0, report["defects"]


def test_stopping_the_cluster_finalises_every_recording_and_the_primary_hears_of_it(
    tmp_path: Path, bots: BotFactory
) -> None:
    env = {"IMPROV_WORKERS": "2"}
    cluster = ServerProcess(tmp_path / "data", env=env).start(timeout=60)
    try:
        cluster.create_room("worker 0")
        room = cluster.create_room("worker 1")
        bots(cluster.invite(room, "A")["url"], 30, "--preencoded")
        wait_for(lambda: publishing(cluster, room, 1), 20, "the performer")
        session = start_recording(cluster, room)["session_id"]
        time.sleep(3)
    finally:
        cluster.stop()  # SIGTERM to the router, which stops worker 1, then the primary
    restarted = ServerProcess(tmp_path / "data", env=env).start(timeout=60)
    try:
        manifest = restarted.api("GET", f"/api/v1/sessions/{session}").json()
        assert manifest["state"] == "complete", manifest.get("reason")
        finalized = [e for e in stored_events(restarted) if e["type"] == "session.finalized"]
        assert [e["data"]["session_id"] for e in finalized] == [session]
        assert finalized[0]["data"]["state"] == "complete"
    finally:
        restarted.stop()
