"""The operator's live view and session browsing, against a real server and real bots."""

from __future__ import annotations

import time

import httpx
import pytest
import websockets

from tests.helpers import (
    PREENCODED_BOTS,
    BotFactory,
    ServerProcess,
    operator_ws,
    publishing,
    room_state,
    start_recording,
    stop_recording,
    wait_for,
    wait_for_async,
)

# untimed: its bots loop pre-encoded media and it runs beside the media tests (the console's
# live stats, judged by frame rates, are in test_live_rooms.py)
pytestmark = [pytest.mark.process, PREENCODED_BOTS]



async def test_wrong_operator_token_is_refused(server: ServerProcess) -> None:
    ws = await operator_ws(server, "nope")
    try:
        await ws.recv()
        raise AssertionError("not closed")
    except websockets.ConnectionClosed as exc:
        assert exc.rcvd is not None and exc.rcvd.code == 4401


async def test_removed_performer_is_closed_and_cannot_rejoin(
    server: ServerProcess, bots: BotFactory
) -> None:
    room_id = server.create_room()
    invite = server.invite(room_id, "Ann")
    bot = bots(invite["url"], 30, "--preencoded")
    await wait_for_async(lambda: room_state(server, room_id)["performers"], 15, "the performer")
    response = server.api("DELETE", f"/api/v1/rooms/{room_id}/performers/{invite['performer_id']}")
    assert response.status_code == 200
    status, output, _ = bot.wait()
    assert status == 1 and "4403" in output
    status, output, _ = bots(invite["url"], 3, "--preencoded").wait()
    assert status == 1 and "removed by the operator" in output
    assert server.api("DELETE", f"/api/v1/rooms/{room_id}/performers/p_nobody").status_code == 404


def test_sessions_list_manifest_and_files(server: ServerProcess, bots: BotFactory) -> None:
    room = server.create_room("takes")
    session = start_recording(server, room)
    assert server.api("POST", f"/api/v1/rooms/{room}/recording").status_code == 409
    ann = bots(server.invite(room, "Ann")["url"], 30, "--preencoded")
    wait_for(lambda: publishing(server, room, 1), 20, "Ann's media")
    time.sleep(1.5)  # recorded a while
    assert ann.finish()[0] == 0
    assert stop_recording(server, room)["state"] == "complete"
    assert server.api("DELETE", f"/api/v1/rooms/{room}/recording").status_code == 409

    listing = server.api("GET", "/api/v1/sessions").json()
    assert [s["session_id"] for s in listing["items"]] == [session["session_id"]]
    assert listing["items"][0]["state"] == "complete" and listing["next"] is None
    assert server.api("GET", "/api/v1/sessions?state=partial").json()["items"] == []
    manifest = server.api("GET", f"/api/v1/sessions/{session['session_id']}").json()
    entry = next(f for f in manifest["files"] if f["path"].endswith(".webm"))
    url = f"/api/v1/sessions/{session['session_id']}/files/{entry['path']}"
    whole = server.api("GET", url)
    assert whole.status_code == 200 and len(whole.content) == entry["bytes"]
    assert whole.headers["x-content-sha256"] == entry["sha256"]
    part = server.api("GET", url, headers={"Range": "bytes=100-199",
                                            "Authorization": f"Bearer {server.token}"})
    assert part.status_code == 206 and part.content == whole.content[100:200]
    beyond = server.api("GET", url, headers={"Range": f"bytes={entry['bytes'] + 10}-",
                                              "Authorization": f"Bearer {server.token}"})
    assert beyond.status_code == 416
    base = f"/api/v1/sessions/{session['session_id']}/files/"
    for bad in ("../manifest.json", "performers/../../rooms.json", "%2e%2e/x", "nope.webm"):
        assert server.api("GET", base + bad).status_code in (400, 404), bad
    assert server.api("GET", "/api/v1/sessions/ses_missing").status_code == 404
    assert httpx.get(f"{server.url}{url}").status_code == 401


def test_closing_a_room_stops_its_recording_and_its_performers(
    server: ServerProcess, bots: BotFactory
) -> None:
    room_id = server.create_room("closing")
    session = start_recording(server, room_id)
    bot = bots(server.invite(room_id, "Ann")["url"], 30, "--preencoded")
    wait_for(lambda: publishing(server, room_id, 1), 15, "the performer's media")
    time.sleep(1)  # a second of it recorded
    closed = server.api("DELETE", f"/api/v1/rooms/{room_id}", timeout=60)
    assert closed.status_code == 200
    status, output, _ = bot.wait()
    assert status == 1 and "4404" in output
    assert server.api("GET", f"/api/v1/rooms/{room_id}").status_code == 404
    saved = server.api("GET", f"/api/v1/sessions/{session['session_id']}").json()
    assert saved["state"] == "complete" and saved["performers"][0]["file"] is not None
