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
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from improv_capture.media import aiortc_hooks
from improv_capture.media.connections import rtc_configuration
from improv_capture.media.sdp_policy import NegotiationError, SdpPolicy, parse_networks
from tests.helpers import ServerProcess
from tests.server.test_bad_input import joined, next_of

CANDIDATE_LINE = re.compile(r"^a=candidate:.*$\r?\n?", re.MULTILINE)


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


class Publisher:
    """A real aiortc peer that publishes audio and video, as the bot and the page do."""

    def __init__(self, kinds: tuple[str, ...] = ("audio", "video")) -> None:
        self.pc = RTCPeerConnection(rtc_configuration([]))
        tracks = {"audio": AudioStreamTrack, "video": VideoStreamTrack}
        for kind in kinds:
            self.pc.addTransceiver(tracks[kind](), direction="sendonly")

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pc.connectionState == "connected":
                return True
            await asyncio.sleep(0.1)
        return False


@pytest.fixture
async def publisher() -> AsyncIterator[Publisher]:
    peer = Publisher()
    try:
        yield peer
    finally:
        await peer.pc.close()


async def offer_sdp(kinds: tuple[str, ...] = ("audio", "video")) -> str:
    peer = Publisher(kinds)
    try:
        return await peer.offer()
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


def with_candidates(offer: str, *candidates: str) -> str:
    """``offer`` with its own candidates replaced by ``candidates`` (in every m-line)."""
    bare = CANDIDATE_LINE.sub("", offer)
    lines = "".join(f"a=candidate:{c}\r\n" for c in candidates)
    return re.sub(r"^(a=end-of-candidates\r?\n)", lines + r"\1", bare, flags=re.MULTILINE)


async def consented(server: ServerProcess, name: str = "performer") -> Any:
    room = server.create_room()
    ws, welcome = await joined(server, server.invite(room, name)["token"])
    consent = welcome["consent"]
    await ws.send(json.dumps({"type": "consent", "version": consent["version"],
                              "text_sha256": consent["text_sha256"]}))
    await expect(ws, "consent_ok")
    return ws


async def expect(ws: Any, kind: str, timeout: float = 10) -> dict[str, Any]:
    """The next message of type ``kind``; the test fails rather than hangs without one."""
    return await asyncio.wait_for(next_of(ws, kind), timeout)


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
        error = await expect(ws, "error")
        assert error["code"] == "bad_sdp" and "m-lines" in error["message"], error
        assert time.monotonic() - sent < 0.5

        stop = time.monotonic() + 4

        async def repeat() -> int:
            count = 0
            while time.monotonic() < stop:
                await ws.send(json.dumps({"type": "publish", "sdp": flood}))
                assert (await expect(ws, "error"))["code"] == "bad_sdp"
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
        answer = await expect(ws, "publish_answer")
        assert answer["sdp"].count("\nm=") == 2
        await ws.send(json.dumps({"type": "leave"}))
        await asyncio.sleep(0.5)
    finally:
        await ws.close()
    # every task those publishes created is stopped again
    deadline = time.monotonic() + 10
    while status_tasks(server) > baseline + 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert status_tasks(server) <= baseline + 2, (baseline, status_tasks(server))
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
            error = await expect(ws, "error")
            assert error["code"] == "bad_sdp", (what, error)
        await ws.send(json.dumps({"type": "publish", "sdp": offer}))
        await expect(ws, "publish_answer")
    finally:
        await ws.close()


async def test_publishes_of_one_seat_are_spaced(start_server: Any) -> None:
    server = start_server(IMPROV_PUBLISH_MIN_INTERVAL_S="1.5")
    ws = await consented(server)
    try:
        started = time.monotonic()
        for _ in range(2):
            await ws.send(json.dumps({"type": "publish", "sdp": await offer_sdp()}))
        await expect(ws, "publish_answer")
        first = time.monotonic() - started
        await expect(ws, "publish_answer")
        second = time.monotonic() - started
        assert first < 1.0 and second >= 1.4, (first, second)
    finally:
        await ws.close()


async def flood(url: str, hello: dict[str, Any], count: int) -> tuple[list[str], int | None]:
    """Send ``count`` pings after hello at once; what came back and the close code."""
    replies: list[str] = []
    async with websockets.connect(url, max_size=2**22) as ws:
        await ws.send(json.dumps(hello))
        for _ in range(count):
            await ws.send(json.dumps({"type": "ping"}))
        try:
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                replies.append(message["type"] if message["type"] != "error" else message["code"])
        except websockets.ConnectionClosed as exc:
            return replies, exc.rcvd.code if exc.rcvd else None
        except asyncio.TimeoutError:
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
            errors = []
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if message["type"] == "error":
                    assert message["code"] == "rate_limited", message
                    errors.append(message)
                if len(errors) >= 10:
                    break
            await asyncio.sleep(errors[-1]["retry_after_s"] + 1.5)
            while True:  # drain what is left of the burst's answers
                try:
                    await asyncio.wait_for(ws.recv(), 0.3)
                except asyncio.TimeoutError:
                    break
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong", name
        # far over it: closed with 4420
        replies, code = await flood(url, hello, 400)
        assert code == 4420, (name, code, replies[-3:])
        assert 35 <= replies.count("pong") <= 60 and "rate_limited" in replies, (name, replies)
    assert httpx.get(f"{server.url}/healthz").status_code == 200


# Finding 3: remote ICE candidates


async def stun_arrivals(server: ServerProcess) -> int:
    """Datagrams the server sends to a loopback candidate at 127.0.0.2 given in an offer."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.2", 0))
    sink.setblocking(False)
    port = sink.getsockname()[1]
    offer = with_candidates(await offer_sdp(), f"1 1 udp 2130706431 127.0.0.2 {port} typ host")
    ws = await consented(server)
    try:
        await ws.send(json.dumps({"type": "publish", "sdp": offer}))
        await expect(ws, "publish_answer")
        arrived = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
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
    assert await stun_arrivals(allowed) > 0  # the test can see checks when they are sent
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
        answer = await expect(ws, "publish_answer")
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
        error = await expect(ws, "error")
        assert error["code"] == "bad_sdp" and "candidates" in error["message"], error
    finally:
        await ws.close()


def test_the_policy_keeps_only_candidates_the_server_may_check() -> None:
    policy = SdpPolicy(16384, 256, 32, parse_networks(["10.1.0.0/16"]))
    kept = ["8.8.8.8", "2001:4860:4860::8888", "10.1.2.3"]
    dropped = [
        "169.254.169.254", "fe80::1", "224.0.0.251", "ff02::1", "255.255.255.255", "0.0.0.0",
        "240.0.0.1", "127.0.0.1", "::1", "192.168.1.2", "10.2.0.1", "fd00::2",
        "abcd-1234.local", "example.com", "::ffff:169.254.169.254",
    ]
    for address in kept:
        assert policy.allows_address(address), address
    for address in dropped:
        assert not policy.allows_address(address), address
    # even an operator's allowed network never opens link-local or multicast
    wide = SdpPolicy(16384, 256, 32, parse_networks(["0.0.0.0/0", "::/0"]))
    for address in ("169.254.169.254", "224.0.0.251", "fe80::1", "255.255.255.255"):
        assert not wide.allows_address(address), address


async def test_filtered_offers_lose_candidates_and_end_of_candidates() -> None:
    policy = SdpPolicy(16384, 256, 32)
    offer = with_candidates(await offer_sdp(),
                            "1 1 udp 2130706431 169.254.169.254 9 typ host",
                            "2 1 udp 2130706431 abc.local 9 typ host",
                            "3 1 tcp 2130706431 8.8.8.8 9 typ host tcptype passive",
                            "4 1 udp 2130706431 8.8.4.4 9 typ host")
    filtered = policy.publish_offer(offer)
    assert re.findall(r"a=candidate:\S+ \d \S+ \d+ (\S+)", filtered) == ["8.8.4.4", "8.8.4.4"]
    assert "end-of-candidates" not in filtered
    with pytest.raises(NegotiationError):
        policy.answer(offer, ["audio", "video", "video"])


async def test_with_a_public_url_the_server_gathers_only_on_its_address(
    start_server: Any,
) -> None:
    public = start_server("public", IMPROV_ICE_ADDRESSES="[]",
                          IMPROV_PUBLIC_URL="http://127.0.0.1:{port}")
    ws = await consented(public)
    try:
        await ws.send(json.dumps({"type": "publish", "sdp": await offer_sdp()}))
        answer = (await expect(ws, "publish_answer"))["sdp"]
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
            code, reason = await close_code_at(url, *frames)
            assert code == 4400, (path, frames[-1][:20], code, reason)
    assert "Traceback" not in server.log() and "RecursionError" not in server.log()
    assert httpx.get(f"{server.url}/healthz").status_code == 200


async def close_code_at(url: str, *frames: str) -> tuple[int, str]:
    async with websockets.connect(url, max_size=2**22) as ws:
        try:
            for frame in frames:
                await ws.send(frame)
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed as exc:
            assert exc.rcvd is not None
            return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError("not closed")
