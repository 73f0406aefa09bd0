"""Bad input gets a clear error, and the server goes on serving the other rooms."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from improv_capture.rooms.invites import Invite
from tests.helpers import (
    PREENCODED_BOTS,
    BotFactory,
    BotProcess,
    ServerProcess,
    close_code,
    next_of,
    publishing,
    wait_for,
    welcomed,
)

pytestmark = [pytest.mark.process, PREENCODED_BOTS]



async def signal_close(server: ServerProcess, *messages: str | bytes) -> tuple[int, str]:
    """Send ``messages`` on a signaling socket; the close code and reason the server answers."""
    return await close_code(server.ws_url("/api/v1/signal"), *messages)


@pytest.fixture
def busy_room(server: ServerProcess, bots: BotFactory) -> list[BotProcess]:
    """Two bots performing in another room, both publishing before the test starts."""
    room = server.create_room("busy")
    running = [bots(server.invite(room, f"busy {i}")["url"], 30, "--preencoded") for i in range(2)]
    wait_for(lambda: publishing(server, room, 2), 20, "both busy performers")
    return running


async def test_bad_signaling_is_refused_and_other_rooms_go_on(
    server: ServerProcess, busy_room: list[BotProcess]
) -> None:
    started = time.time()
    room = server.create_room("target")
    invite = server.invite(room, "tester")
    hello = json.dumps({"type": "hello", "token": invite["token"]})

    assert (await signal_close(server, "{not json"))[0] == 4400
    assert (await signal_close(server, json.dumps(["hello"])))[0] == 4400
    assert (await signal_close(server, json.dumps({"type": "publish"})))[0] == 4400
    code, reason = await signal_close(server, json.dumps({"type": "hello", "pad": "x" * 70_000}))
    assert (code, reason) == (4413, "message over 65536 bytes")

    non_ascii = json.dumps({"type": "hello", "token": "é.é"})
    assert await signal_close(server, non_ascii) == (4401, "malformed invite")

    forged = invite["token"][:-3] + ("AAA" if not invite["token"].endswith("AAA") else "BBB")
    assert await signal_close(server, json.dumps({"type": "hello", "token": forged})) == (
        4401,
        "invalid invite signature",
    )
    edited = server.invite_signer().sign(Invite(room, invite["performer_id"], "x", time.time() + 60))
    body, mac = edited.split(".")
    assert (await signal_close(server, json.dumps({"type": "hello", "token": body + "." + mac[::-1]})))[0] == 4401
    expired = server.invite_signer().sign(Invite(room, "p-old", "old", time.time() - 1))
    assert await signal_close(server, json.dumps({"type": "hello", "token": expired})) == (
        4410,
        "invite expired",
    )
    ghost = server.invite_signer().sign(Invite("room_gone", "p-x", "x", time.time() + 60))
    assert await signal_close(server, json.dumps({"type": "hello", "token": ghost})) == (
        4404,
        "room not found",
    )

    ws, welcome = await welcomed(server, invite["token"])
    try:
        # the same invite cannot hold a second seat at the same time
        assert await signal_close(server, hello) == (4409, "this invite is already in use")
        # unknown type: an error, and the connection stays usable
        await ws.send(json.dumps({"type": "dance"}))
        error = await next_of(ws, "error")
        assert error["code"] == "unknown_type"
        # no media before consent
        await ws.send(json.dumps({"type": "publish", "sdp": "v=0\r\n"}))
        assert (await next_of(ws, "error"))["code"] == "consent_required"
        await ws.send(json.dumps({"type": "consent", "version": "0", "text_sha256": "00"}))
        assert (await next_of(ws, "error"))["code"] == "bad_consent"
        consent = welcome["consent"]
        await ws.send(json.dumps({"type": "consent", "version": consent["version"],
                                  "text_sha256": consent["text_sha256"]}))
        await next_of(ws, "consent_ok")
        for sdp in ("garbage", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9",
                    42, None):
            await ws.send(json.dumps({"type": "publish", "sdp": sdp}))
            assert (await next_of(ws, "error"))["code"] == "bad_sdp"
        await ws.send(json.dumps({"type": "subscribe_answer", "sdp": "v=0"}))
        assert (await next_of(ws, "error"))["code"] == "wrong_state"
        await ws.send(json.dumps({"type": "ping"}))
        await next_of(ws, "pong")
    finally:
        await ws.close()

    for bot in busy_room:  # the other room played on throughout
        status, output, report = bot.finish()
        assert status == 0, output
        (stats,) = report["received"].values()
        assert stats["fps"] >= 25, stats
    assert time.time() - started < 60


async def test_a_truncated_offer_is_refused(server: ServerProcess) -> None:
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    await pc.close()
    room = server.create_room()
    ws, welcome = await welcomed(server, server.invite(room, "t")["token"])
    try:
        consent = welcome["consent"]
        await ws.send(json.dumps({"type": "consent", "version": consent["version"],
                                  "text_sha256": consent["text_sha256"]}))
        await next_of(ws, "consent_ok")
        await ws.send(json.dumps({"type": "publish", "sdp": offer[: offer.index("a=ice-ufrag")]}))
        error = await next_of(ws, "error")
        assert error["code"] == "bad_sdp" and "ICE" in error["message"]
    finally:
        await ws.close()


async def test_a_silent_socket_is_closed_after_the_hello_timeout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    quick = ServerProcess(tmp_path / "quick", env={"IMPROV_HELLO_TIMEOUT_S": "1"}).start()
    try:
        started = time.time()
        assert await signal_close(quick) == (4408, "no hello received")
        assert 0.8 <= time.time() - started < 5
    finally:
        quick.stop()


def test_http_bad_input(server: ServerProcess) -> None:
    room = server.create_room()
    invite = server.invite(room, "performer")
    base = server.url
    assert httpx.get(f"{base}/api/v1/rooms").status_code == 401
    assert server.api("GET", "/api/v1/rooms", token="wrong").status_code == 401
    latin1 = {"Authorization": "Bearer \xe9.\xe9".encode("latin-1")}  # not ASCII: no invite
    assert server.api("GET", "/api/v1/rooms", headers=latin1).status_code == 401
    # a performer's invite is not an operator token
    refused = server.api("GET", "/api/v1/rooms", token=invite["token"])
    assert refused.status_code == 403 and "invite" in refused.json()["detail"]
    assert server.api("POST", "/api/v1/rooms", token=invite["token"]).status_code == 403
    assert server.api("GET", "/api/v1/rooms/room_nope").status_code == 404
    assert server.api("POST", "/api/v1/rooms/room_nope/invites",
                      json={"display_name": "x"}).status_code == 404
    bad_json = server.api("POST", "/api/v1/rooms", content=b"{nope",
                          headers={"Content-Type": "application/json",
                                   "Authorization": f"Bearer {server.token}"})
    assert bad_json.status_code == 422 and "detail" in bad_json.json()
    for body in ({}, {"display_name": ""}, {"display_name": "x", "performer_id": "../etc"},
                 {"display_name": "x", "expires_in_s": 1}):
        response = server.api("POST", f"/api/v1/rooms/{room}/invites", json=body)
        assert response.status_code == 422, body
    huge = server.api("POST", "/api/v1/rooms", content=b"x" * (2 * 1024 * 1024),
                      headers={"Content-Type": "application/json",
                               "Authorization": f"Bearer {server.token}"})
    assert huge.status_code == 413
    # and the room still works
    assert server.api("GET", f"/api/v1/rooms/{room}").status_code == 200
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
