"""A studio room in a cluster (`serve --workers 2`): the room lives on worker 1, its performers'
high-quality copies go through the router to that worker, join the session there, and the
primary's catalog and events hear of it; upload refusals through the router are a lone
server's, and the router reads no upload body before the owner has admitted it."""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from improv_capture.rooms.invites import Invite
from tests.helpers import (
    BotFactory,
    ServerProcess,
    manifest,
    next_of,
    operator_ws,
    publishing,
    room_state,
    start_recording,
    stop_recording,
    stored_events,
    verify,
    wait_for,
)
from tests.server.test_upload_refusals import base

pytestmark = pytest.mark.process

NO_SESSION = "ses_20260101T000000Z_abcdef"
#: how long a chunk's body may take (HQ_CHUNK_TIMEOUT_S): short, to see a stalled one end
CHUNK_TIMEOUT_S = 4.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ServerProcess]:
    env = {"IMPROV_WORKERS": "2", "IMPROV_HQ_CHUNK_TIMEOUT_S": str(CHUNK_TIMEOUT_S)}
    proc = ServerProcess(tmp_path / "data", env=env).start(timeout=60)
    try:
        yield proc
    finally:
        proc.stop()


def answer_without_body(
    cluster: ServerProcess, path: str, token: str, sent: bytes = b"", timeout: float = 3
) -> tuple[int, Any]:
    """PUT a chunk's headers (a 1 MiB body announced) and only ``sent`` of its body: the
    answer must come from the checks alone (or, once they passed, the body's timeout)."""
    connection = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=timeout)
    try:
        connection.putrequest("PUT", path, skip_accept_encoding=True)
        for name, value in (("Authorization", f"Bearer {token}"),
                            ("X-Chunk-Sha256", hashlib.sha256(b"").hexdigest()),
                            ("Content-Type", "application/octet-stream"),
                            ("Content-Length", str(2**20))):
            connection.putheader(name, value)
        connection.endheaders(sent)
        response = connection.getresponse()  # a timeout here: the body was waited for
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def uploads_of(cluster: ServerProcess, room: str) -> dict[str, dict[str, Any]]:
    return {u["performer_id"]: u for u in room_state(cluster, room)["uploads"]}


def under_way(uploads: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """Both performers' copies uploading, a chunk of each acknowledged."""
    moving = [u for u in uploads.values() if u["state"] == "uploading" and u["chunks"]["acked"]]
    return uploads if len(moving) == 2 else None


async def test_studio_copies_upload_through_the_router_to_the_rooms_worker(
    cluster: ServerProcess, bots: BotFactory
) -> None:
    cluster.create_room("worker 0")
    created = cluster.api("POST", "/api/v1/rooms", json={"name": "studio", "profile": "studio"})
    assert created.status_code == 201, created.text
    room = created.json()["room_id"]
    assert room_state(cluster, room)["worker"] == 1
    ann, ben = (cluster.invite(room, name) for name in ("Ann", "Ben"))
    running = [bots(i["url"], 60, "--hq-size", "320x180") for i in (ann, ben)]

    # refused by the owner's checks, through the router, before a byte of the body is sent
    ann_put = f"{base(room, NO_SESSION, ann['performer_id'])}/parts/0/chunks/0"
    assert answer_without_body(cluster, ann_put, ben["token"]) == (
        403, {"detail": "this invite is for another performer"})
    assert answer_without_body(cluster, ann_put, ann["token"] + "x") == (
        401, {"detail": "invalid token"})
    assert answer_without_body(cluster, ann_put, ann["token"]) == (
        404, {"detail": "no such session"})
    never = cluster.invite_signer().sign(Invite("room_never", ann["performer_id"], "Ann", time.time() + 60))
    assert answer_without_body(
        cluster, f"{base('room_never', NO_SESSION, ann['performer_id'])}/parts/0/chunks/0", never
    ) == (404, {"detail": "no such session"})

    wait_for(lambda: publishing(cluster, room, 2), 20, "both bots publishing")
    session = start_recording(cluster, room)["session_id"]
    session_dir = cluster.session_dir(session)
    # the room's description (from worker 1) shows both copies arriving during the take
    shown = wait_for(lambda: under_way(uploads_of(cluster, room)), 10, "both uploads under way",
                     every=0.25)
    assert all(e["session_id"] == session for e in shown.values()), shown
    # one scrape of the router shows every worker's rooms, each sample with its worker
    scraped = httpx.get(f"{cluster.url}/metrics", timeout=10,
                        headers={"Authorization": f"Bearer {cluster.token}"})
    assert scraped.status_code == 200, scraped.text
    for line in ('improv_rooms{worker="0"} 1.0', 'improv_rooms{worker="1"} 1.0',
                 'improv_performers{state="joined",worker="1"} 2.0', 'improv_recordings{worker="1"} 1.0'):
        assert line in scraped.text.splitlines(), (line, scraped.text[:2000])
    assert httpx.get(f"{cluster.url}/metrics", timeout=10).status_code == 401
    # a chunk admitted by the owner comes through as it arrives, bounded in time: one that
    # stalls ends in 408 (the take goes on meanwhile: a few chunks long)
    stalled = f"{base(room, session, ann['performer_id'])}/parts/0/chunks/900"
    assert answer_without_body(cluster, stalled, ann["token"], b"\x1a\x45\xdf\xa3" * 256,
                               timeout=CHUNK_TIMEOUT_S + 5) == (408, {"detail": "request body timed out"})
    stop_recording(cluster, room)

    reports = {}
    for bot in running:  # each exits once its copy is all uploaded
        status, output, report = bot.finish(timeout=40)
        assert status == 0, output
        assert report["hq"]["errors"] == [] and report["hq"]["chunks_acked"] >= 2, report["hq"]
        reports[report["performer_id"]] = report["hq"]

    def settled() -> dict[str, dict[str, Any]] | None:
        hq = {p["performer_id"]: p.get("hq") or {} for p in manifest(session_dir)["performers"]}
        return hq if all(h.get("state") == "complete" for h in hq.values()) else None

    copies = wait_for(settled, 30, "both high-quality copies complete", every=0.25)
    assert set(copies) == set(reports) == {ann["performer_id"], ben["performer_id"]}
    archive = manifest(session_dir)
    assert archive["revision"] == 3  # finalised, then each copy joined
    sums = dict(reversed(line.split(None, 1)) for line in
                (session_dir / "SHA256SUMS").read_text().splitlines())
    for pid, copy in copies.items():
        path = session_dir / copy["file"]["path"]
        assert copy["file"]["path"] == f"performers/{pid}.hq.webm"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert sums[copy["file"]["path"]] == copy["file"]["sha256"] == digest
        # every chunk the bot had acknowledged, and no other (the stalled one never was)
        assert copy["upload"]["chunks"] == reports[pid]["chunks_acked"], (copy["upload"], reports[pid])
        with av.open(str(path)) as container:
            frames = [(f.width, f.height) for f in container.decode(video=0)]
        assert len(frames) > 60 and set(frames) == {(320, 180)}, len(frames)
    status, report = verify(session_dir)
    assert status == 0, report["defects"]

    # the primary heard of it: its catalog has the new revision, its events the updates
    listed = {s["session_id"]: s for s in cluster.api("GET", "/api/v1/sessions").json()["items"]}
    assert listed[session]["revision"] == 3 and listed[session]["state"] == "complete", listed[session]
    updates = [e["data"] for e in stored_events(cluster) if e["type"] == "session.updated"]
    assert sorted((u["session_id"], u["performer_id"], u["hq"]["state"]) for u in updates) == sorted(
        (session, pid, "complete") for pid in copies)

    # the room's description and the console (merged by the router) show them complete
    shown = uploads_of(cluster, room)
    assert {pid: (e["state"], e["percent"]) for pid, e in shown.items()} == dict.fromkeys(
        copies, ("complete", 100))
    ws = await operator_ws(cluster, cluster.token)
    try:
        await next_of(ws, "welcome")
        rooms = {r["room_id"]: r for r in (await next_of(ws, "rooms"))["rooms"]}
        assert {u["performer_id"]: u["state"] for u in rooms[room]["uploads"]} == dict.fromkeys(
            copies, "complete")
    finally:
        await ws.close()

    # a settled copy takes no more, through the router as from a lone server; once the room
    # is deleted the primary answers for it, from the shared archive; the session is unchanged
    ann_chunk = f"{base(room, session, ann['performer_id'])}/parts/0/chunks/999"
    late = cluster.api("PUT", ann_chunk, token=ann["token"], content=b"\x1a\x45\xdf\xa3",
                       headers={"X-Chunk-Sha256": hashlib.sha256(b"\x1a\x45\xdf\xa3").hexdigest()})
    assert (late.status_code, late.json()) == (409, {"detail": "the upload is closed (complete)"})
    assert cluster.api("DELETE", f"/api/v1/rooms/{room}").status_code == 200
    assert answer_without_body(cluster, ann_put, ann["token"]) == (404, {"detail": "no such session"})
    assert answer_without_body(cluster, ann_chunk, ann["token"]) == (
        409, {"detail": "the upload is closed (complete)"})
    assert manifest(session_dir)["revision"] == 3
