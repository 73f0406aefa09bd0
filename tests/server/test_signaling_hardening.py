"""Issue #9, findings 2 to 4: what a hostile performer or an anonymous client can make the
server do through signaling. Real server processes, real aiortc peers, real sockets."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from improv_capture.media import aiortc_hooks
from tests.helpers import (
    Publisher,
    ServerProcess,
    close_code,
    next_of,
    offer_sdp,
    wait_for_async,
    welcomed,
    with_candidates,
)

pytestmark = pytest.mark.process


@pytest.fixture(autouse=True)
def loopback_peers() -> None:
    """This process's peers gather on loopback only, like the servers the tests start."""
    aiortc_hooks.restrict_ice_addresses(["127.0.0.1"])


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Any]:
    started: list[ServerProcess] = []

    def start(name: str = "data", **env: str) -> ServerProcess:
        """A server with ``env``, in which "{port}" stands for the port it listens on."""
        server = ServerProcess(tmp_path / name)
        server.env = {k: v.replace("{port}", str(server.port)) for k, v in env.items()}
        started.append(server)
        return server.start(timeout=60)

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
async def publisher() -> AsyncIterator[Publisher]:
    peer = Publisher()
    try:
        yield peer
    finally:
        await peer.pc.close()


def m_line_flood(offer: str, count: int = 450) -> str:
    """The probe's offer: an audio and ``count`` - 1 video m-lines, small, sharing
    session-level ICE and DTLS parameters (about 50 KB, under the 64 KiB message limit)."""
    def first(pattern: str) -> str:
        found = re.search(pattern, offer, re.MULTILINE)
        assert found, pattern
        return found.group(0)

    session = [
        "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0",
        "a=group:BUNDLE " + " ".join(str(i) for i in range(count)),
        first(r"^a=ice-ufrag:\S+"), first(r"^a=ice-pwd:\S+"), first(r"^a=fingerprint:sha-256 \S+"),
        "a=setup:actpass",
    ]
    media = ["m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", "a=mid:0", "a=sendonly",
             "a=rtcp-mux", "a=rtpmap:111 opus/48000/2"]
    for i in range(1, count):
        media += ["m=video 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", f"a=mid:{i}",
                  "a=sendonly", "a=rtcp-mux", "a=rtpmap:96 VP8/90000"]
    sdp = "\r\n".join(session + media) + "\r\n"
    assert 40_000 < len(sdp) < 64 * 1024
    return sdp


async def consented(server: ServerProcess, name: str = "performer") -> Any:
    room = server.create_room()
    ws, welcome = await welcomed(server, server.invite(room, name)["token"])
    consent = welcome["consent"]
    await ws.send(json.dumps({"type": "consent", "version": consent["version"],
                              "text_sha256": consent["text_sha256"]}))
    await next_of(ws, "consent_ok")
    return ws


def status_tasks(server: ServerProcess) -> int:
    return int(server.api("GET", "/api/v1/status").json()["tasks"])


# Finding 2: one performer stalls the event loop


async def test_an_offer_of_450_m_lines_is_refused_at_once_and_health_stays_fast(
    start_server: Any,
) -> None:
    # only the SDP check is under test here, not the publish spacing nor the message budget
    server = start_server(IMPROV_PUBLISH_MIN_INTERVAL_S="0",
                          IMPROV_SIGNAL_RATE_PER_S="100000", IMPROV_SIGNAL_BURST="100000")
    flood = m_line_flood(await offer_sdp())
    baseline = status_tasks(server)
    ws = await consented(server)
    try:
        sent = time.monotonic()
        await ws.send(json.dumps({"type": "publish", "sdp": flood}))
        error = await next_of(ws, "error")
        assert error["code"] == "bad_sdp" and "m-lines" in error["message"], error
        assert time.monotonic() - sent < 0.5

        stop = time.monotonic() + 4

        async def repeat() -> int:
            count = 0
            while time.monotonic() < stop:
                await ws.send(json.dumps({"type": "publish", "sdp": flood}))
                assert (await next_of(ws, "error"))["code"] == "bad_sdp"
                count += 1
            return count

        async def health() -> list[float]:
            latencies = []
            async with httpx.AsyncClient(timeout=10) as client:
                while time.monotonic() < stop:
                    started = time.monotonic()
                    assert (await client.get(f"{server.url}/healthz")).status_code == 200
                    latencies.append(time.monotonic() - started)
                    await asyncio.sleep(0.05)
            return latencies

        repeats, latencies = await asyncio.gather(repeat(), health())
        assert repeats >= 20, repeats
        assert statistics.median(latencies) < 0.05, latencies

        # a performer's real offer is still answered
        await ws.send(json.dumps({"type": "publish", "sdp": await offer_sdp()}))
        answer = await next_of(ws, "publish_answer")
        assert answer["sdp"].count("\nm=") == 2
        await ws.send(json.dumps({"type": "leave"}))
    finally:
        await ws.close()
    # every task those publishes created is stopped again
    await wait_for_async(lambda: status_tasks(server) <= baseline + 2, 10,
                         f"the tasks to drop back to {baseline} + 2")
    assert "was destroyed but it is pending" not in server.log()


async def test_only_what_a_performer_publishes_is_accepted(start_server: Any) -> None:
    server = start_server(IMPROV_PUBLISH_MIN_INTERVAL_S="0")
    offer = await offer_sdp()
    audio_at, video_at = offer.index("m=audio"), offer.index("m=video")
    head, audio, video = offer[:audio_at], offer[audio_at:video_at], offer[video_at:]
    refused = {
        "two video m-lines": head + audio + video + video.replace("a=mid:1", "a=mid:2"),
        "a data channel": head + audio + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n",
        "no VP8": re.sub(r"(?m)^a=rtpmap:\d+ VP8/90000\r\n", "", offer),
        "too many lines": offer + "a=x-filler\r\n" * 600,
        "video alone": await offer_sdp(("video",)),
    }
    ws = await consented(server)
    try:
        for what, sdp in refused.items():
            await ws.send(json.dumps({"type": "publish", "sdp": sdp}))
            error = await next_of(ws, "error")
            assert error["code"] == "bad_sdp", (what, error)
        await ws.send(json.dumps({"type": "publish", "sdp": offer}))
        await next_of(ws, "publish_answer")
    finally:
        await ws.close()


async def test_publishes_of_one_seat_are_spaced(start_server: Any) -> None:
    server = start_server(IMPROV_PUBLISH_MIN_INTERVAL_S="1.5")
    ws = await consented(server)
    try:
        started = time.monotonic()
        for _ in range(2):
            await ws.send(json.dumps({"type": "publish", "sdp": await offer_sdp()}))
        await next_of(ws, "publish_answer")
        first = time.monotonic() - started
        await next_of(ws, "publish_answer")
        second = time.monotonic() - started
        assert first < 1.0 and second >= 1.4, (first, second)
    finally:
        await ws.close()


async def flood(url: str, hello: dict[str, Any], count: int) -> tuple[list[str], int | None]:
    """Send ``count`` pings after hello at once; what came back (until every ping is answered
    or 5 s pass without a message) and the close code, None if still open."""
    replies: list[str] = []
    async with websockets.connect(url, max_size=2**22) as ws:
        await ws.send(json.dumps(hello))
        for _ in range(count):
            await ws.send(json.dumps({"type": "ping"}))
        try:
            while len([r for r in replies if r in ("pong", "rate_limited")]) < count:
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                replies.append(message["type"] if message["type"] != "error" else message["code"])
        except websockets.ConnectionClosed as exc:
            return replies, exc.rcvd.code if exc.rcvd else None
        except asyncio.TimeoutError:
            pass
        return replies, None


async def test_a_flooding_socket_is_refused_then_closed(server: ServerProcess) -> None:
    room = server.create_room()
    sockets = {
        "performer": (f"ws://127.0.0.1:{server.port}/api/v1/signal",
                      {"type": "hello", "token": server.invite(room, "flood")["token"]}),
        "console": (f"ws://127.0.0.1:{server.port}/api/v1/operator",
                    {"type": "hello", "token": server.token}),
    }
    for name, (url, hello) in sockets.items():
        # within the budget (burst 40, 20/s): every ping answered
        replies, code = await flood(url, hello, 30)
        assert replies.count("pong") == 30 and code is None, (name, replies)
        # a burst over it: the excess refused, the socket kept; after a pause, served again
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps(hello))
            for _ in range(60):
                await ws.send(json.dumps({"type": "ping"}))
            answers: dict[str, list[dict[str, Any]]] = {"pong": [], "error": []}
            while len(answers["pong"]) + len(answers["error"]) < 60:  # one answer per ping
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if message["type"] in answers:
                    answers[message["type"]].append(message)
            errors = answers["error"]
            assert len(errors) >= 10 and {e["code"] for e in errors} == {"rate_limited"}, errors
            await asyncio.sleep(errors[-1]["retry_after_s"] + 0.2)  # the debt is paid back
            await ws.send(json.dumps({"type": "ping"}))
            assert (await next_of(ws, "pong", timeout=5))["type"] == "pong", name
        # far over it: closed with 4420
        replies, code = await flood(url, hello, 400)
        assert code == 4420, (name, code, replies[-3:])
        assert 35 <= replies.count("pong") <= 60 and "rate_limited" in replies, (name, replies)
    assert httpx.get(f"{server.url}/healthz").status_code == 200


# Finding 3: remote ICE candidates


async def stun_arrivals(server: ServerProcess, enough: int | None = None) -> int:
    """Datagrams the server sends to a loopback candidate at 127.0.0.2 given in an offer, in
    3 s (or until ``enough`` arrived)."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.2", 0))
    sink.setblocking(False)
    port = sink.getsockname()[1]
    offer = with_candidates(await offer_sdp(), f"1 1 udp 2130706431 127.0.0.2 {port} typ host")
    ws = await consented(server)
    try:
        await ws.send(json.dumps({"type": "publish", "sdp": offer}))
        await next_of(ws, "publish_answer")
        arrived = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and (enough is None or arrived < enough):
            try:
                while sink.recv(2048):
                    arrived += 1
            except BlockingIOError:
                await asyncio.sleep(0.05)
        return arrived
    finally:
        await ws.close()
        sink.close()


async def test_no_stun_to_a_forbidden_candidate(start_server: Any) -> None:
    allowed = start_server("allowed", IMPROV_ICE_ALLOWED_NETWORKS='["127.0.0.0/8"]')
    assert await stun_arrivals(allowed, enough=1) > 0  # the test sees checks when they are sent
    forbidden = start_server("forbidden", IMPROV_ICE_ALLOWED_NETWORKS='["127.0.0.1/32"]')
    assert await stun_arrivals(forbidden) == 0


async def test_a_peer_whose_candidates_are_all_forbidden_still_connects(
    start_server: Any, publisher: Publisher
) -> None:
    """Its checks reach the server's candidate, which learns it as peer-reflexive."""
    server = start_server(IMPROV_ICE_ALLOWED_NETWORKS='["127.0.0.2/32"]')
    offer = await publisher.offer()
    assert "127.0.0.1" in offer and "127.0.0.2" not in offer
    ws = await consented(server)
    try:
        await ws.send(json.dumps({"type": "publish", "sdp": offer}))
        answer = await next_of(ws, "publish_answer")
        await publisher.accept(answer["sdp"])
        assert await publisher.connected(15), publisher.pc.connectionState
    finally:
        await ws.close()


async def test_too_many_candidates_is_bad_sdp(server: ServerProcess) -> None:
    offer = with_candidates(
        await offer_sdp(), *(f"{i} 1 udp 2130706431 8.8.{i}.8 9 typ host" for i in range(33))
    )
    ws = await consented(server)
    try:
        await ws.send(json.dumps({"type": "publish", "sdp": offer}))
        error = await next_of(ws, "error")
        assert error["code"] == "bad_sdp" and "candidates" in error["message"], error
    finally:
        await ws.close()


async def test_with_a_public_url_the_server_gathers_only_on_its_address(
    start_server: Any,
) -> None:
    public = start_server("public", IMPROV_ICE_ADDRESSES="[]",
                          IMPROV_PUBLIC_URL="http://127.0.0.1:{port}")
    ws = await consented(public)
    try:
        await ws.send(json.dumps({"type": "publish", "sdp": await offer_sdp()}))
        answer = (await next_of(ws, "publish_answer"))["sdp"]
    finally:
        await ws.close()
    assert set(re.findall(r"a=candidate:\S+ \d \S+ \d+ (\S+)", answer)) == {"127.0.0.1"}


def test_a_public_url_that_is_not_this_machine_refuses_to_start(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"IMPROV_ICE_ADDRESSES": "[]",
                                                   "IMPROV_PUBLIC_URL": "https://198.51.100.7"})
    with pytest.raises(RuntimeError) as refused:
        server.start(timeout=30)
    server.stop()
    assert "set IMPROV_ICE_ADDRESSES" in str(refused.value)
    assert "Traceback" not in str(refused.value)


# Finding 4: deep nesting before authentication


DEEP = "[" * 60_000  # under the 64 KiB limit; json.loads gives up with RecursionError
TOO_DEEP = json.dumps({"type": "ping", "x": json.loads("[" * 40 + "]" * 40)})


async def test_deep_nesting_closes_4400_on_both_sockets(server: ServerProcess) -> None:
    await deep_nesting_is_malformed(server)


async def test_deep_nesting_closes_4400_through_the_cluster_router(start_server: Any) -> None:
    await deep_nesting_is_malformed(start_server("cluster", IMPROV_WORKERS="2"))


async def deep_nesting_is_malformed(server: ServerProcess) -> None:
    room = server.create_room()
    hellos = {
        "signal": json.dumps({"type": "hello", "token": server.invite(room, "deep")["token"]}),
        "operator": json.dumps({"type": "hello", "token": server.token}),
    }
    for path, hello in hellos.items():
        url = f"ws://127.0.0.1:{server.port}/api/v1/{path}"
        for frames in ([DEEP], [TOO_DEEP], [hello, DEEP], [hello, TOO_DEEP]):
            code, reason = await close_code(url, *frames, timeout=10)
            assert code == 4400, (path, frames[-1][:20], code, reason)
    assert "Traceback" not in server.log() and "RecursionError" not in server.log()
    assert httpx.get(f"{server.url}/healthz").status_code == 200
