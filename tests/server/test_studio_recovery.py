"""Studio copies survive what a take meets: the server killed while copies upload (the
performers' clients resume after the restart and the copies complete), and a performer who
vanishes mid-take (their copy is placed at the deadline with what arrived: `incomplete`); a
downstream mirror gets each copy as it joins."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    BotFactory,
    ServerProcess,
    fetch,
    manifest,
    publishing,
    start_recording,
    stored_events,
    verify,
    wait_for,
)

pytestmark = pytest.mark.process


def copies(session_dir: Path) -> dict[str, dict[str, Any]]:
    return {p["performer_id"]: p.get("hq") or {} for p in manifest(session_dir)["performers"]}


def test_a_killed_server_gets_every_copy_after_its_restart_and_a_vanished_one_at_the_deadline(
    tmp_path: Path, bots: BotFactory
) -> None:
    # the deadline runs from the restart: long enough for Ann's client to come back through its
    # backoff on a busy machine (6 s closed her upload under her once in CI), short for Ben's
    server = ServerProcess(tmp_path / "data", env={"IMPROV_HQ_UPLOAD_DEADLINE_S": "12"}).start()
    try:
        created = server.api("POST", "/api/v1/rooms", json={"name": "s", "profile": "studio"})
        assert created.status_code == 201, created.text
        room = created.json()["room_id"]
        stays, vanishes = server.invite(room, "Ann"), server.invite(room, "Ben")
        # paced during the take, so chunks are still queued in the client when the server dies
        ann = bots(stays["url"], 60, "--hq-size", "640x360", "--studio-pace-kbps", "300")
        ben = bots(vanishes["url"], 60, "--hq-size", "640x360")
        wait_for(lambda: publishing(server, room, 2), 20, "both bots publishing")
        session = start_recording(server, room)["session_id"]
        session_dir = server.session_dir(session)
        time.sleep(3)
        ben.stop()  # SIGKILL: no more chunks, no end of its part
        time.sleep(2)
        server.stop(signal.SIGKILL)  # mid-take, with Ann's chunks queued
        time.sleep(1)
        server.start()  # recovery finalises the session (interrupted); uploads resume

        status, output, report = ann.finish(timeout=60)
        # the bot does not rejoin a server that went away (the page does): it says so, ends
        # its part and still sends everything it recorded
        assert status == 1 and "the server closed the connection" in output, output
        sent = report["hq"]
        assert sent["errors"] == [] and sent["retries"] > 0, sent  # it did meet the dead server
        assert sent["chunks_acked"] == sent["chunks_recorded"] >= 3, sent

        # a downstream mirror taken when the first copy joined gets the second one later
        wait_for(lambda: manifest(session_dir).get("revision") == 2, 30, "a first copy placed",
                 every=0.1)
        mirror, token = tmp_path / "mirror", server.token
        assert fetch(server, token, mirror, "--include-partial").returncode == 0
        settled = wait_for(lambda: (lambda c: c if all(h.get("state") in ("complete", "incomplete")
                                                     for h in c.values()) else None)(copies(session_dir)),
                           30, "both copies settled", every=0.25)
        archive = manifest(session_dir)
        assert archive["state"] == "partial" and "interrupted" in archive["reason"]
        kept = settled[stays["performer_id"]]
        assert kept["state"] == "complete", kept
        assert kept["upload"]["chunks"] == sent["chunks_acked"], (kept["upload"], sent)
        lost = settled[vanishes["performer_id"]]
        assert lost["state"] == "incomplete" and lost["file"] is not None, lost  # what arrived
        assert lost["coverage"] and lost["coverage"][0]["end_s"] <= 4.5, lost["coverage"]
        for copy in (kept, lost):
            assert (session_dir / copy["file"]["path"]).stat().st_size == copy["file"]["bytes"]
        assert archive["revision"] == 3  # finalised, then each copy joined
        status, report = verify(session_dir)
        assert status == 0, report["defects"]
        again = fetch(server, token, mirror, "--include-partial")
        assert again.returncode == 0 and "updated 1 session(s)" in again.stderr, again.stderr
        mirrored = mirror / session
        assert manifest(mirrored)["revision"] == 3
        for copy in (kept, lost):
            assert (mirrored / copy["file"]["path"]).stat().st_size == copy["file"]["bytes"]
        assert verify(mirrored)[0] == 0
        updates = [e["data"] for e in stored_events(server) if e["type"] == "session.updated"]
        assert {(u["performer_id"], u["hq"]["state"]) for u in updates} == {
            (stays["performer_id"], "complete"), (vanishes["performer_id"], "incomplete")}
        late = server.api("PUT", f"/api/v1/rooms/{room}/sessions/{session}/performers/"
                          f"{vanishes['performer_id']}/hq/parts/0/chunks/99",
                          token=vanishes["token"], content=b"\x1a\x45\xdf\xa3",
                          headers={"X-Chunk-Sha256": "0" * 64})
        assert (late.status_code, late.json()["detail"]) == (409, "the upload is closed (incomplete)")
    finally:
        server.stop()
