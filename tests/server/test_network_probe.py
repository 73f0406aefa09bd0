"""The server side of the performer page's network check (api/network_probe.py): a real aiortc
peer plays the page (one data channel); the probe counts what it sends, answers the count,
closes on every path, and keeps to its limits (one at a time per performer, a few a minute,
a cap per process, a time limit, bounded bytes on the wire). The page's side, in Chromium on
test hosts: tests/network/test_https_network_check.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from improv_capture.api.network_probe import NetworkProbes, ProbeLimits, ProbeRefused
from improv_capture.media import aiortc_hooks
from improv_capture.media.connections import rtc_configuration
from improv_capture.settings import Settings
from tests.helpers import ServerProcess, next_of, offer_sdp, wait_for_async, welcomed

pytestmark = pytest.mark.process  # real aiortc peers over loopback

CHUNK = b"\0" * 16 * 1024


class Page:
    """What the performer page does: one data channel named `probe`, offered to the server."""

    def __init__(self, label: str = "probe") -> None:
        self.pc = RTCPeerConnection(rtc_configuration([]))
        self.channel: RTCDataChannel = self.pc.createDataChannel(label)
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.channel.on("message", self.messages.put_nowait)

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def connect(self, probes: NetworkProbes, performer_id: str = "p_a",
                      owner: object = "socket") -> dict[str, Any]:
        answer = await probes.start(performer_id, owner, await self.offer())
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await wait_for_async(lambda: self.channel.readyState == "open", 10, "the channel")
        return answer

    async def send(self, chunks: int, stop: Callable[[], bool] = lambda: False) -> None:
        """``chunks`` messages, as fast as SCTP takes them (until ``stop()``)."""
        for _ in range(chunks):
            if stop() or self.channel.readyState != "open":
                return  # the server cut it off (between two sends, on a busy machine)
            self.channel.send(CHUNK)
            while self.channel.bufferedAmount > 256 * 1024:
                if stop() or self.channel.readyState != "open":
                    return
                await asyncio.sleep(0.005)

    async def result(self, timeout: float = 10) -> dict[str, Any]:
        return dict(json.loads(await asyncio.wait_for(self.messages.get(), timeout)))


@pytest.fixture(autouse=True)
def hooks() -> None:
    aiortc_hooks.install()
    aiortc_hooks.restrict_ice_addresses(["127.0.0.1"])


def probes_with(tmp_path: Path, **limits: Any) -> NetworkProbes:
    settings = Settings(data_dir=tmp_path, ice_allowed_networks=["127.0.0.0/8"])
    return NetworkProbes(settings, ProbeLimits(**limits))


@pytest.fixture
async def pages() -> AsyncIterator[list[Page]]:
    made: list[Page] = []
    yield made
    for page in made:
        await page.pc.close()


async def test_a_probe_counts_what_the_page_sends_then_closes(
    tmp_path: Path, pages: list[Page]
) -> None:
    probes = probes_with(tmp_path, linger_s=0.5, warmup_s=0)
    pages.append(page := Page())
    answer = await page.connect(probes)
    assert answer["type"] == "probe_answer" and answer["window_s"] == 2.0
    assert answer["max_bytes"] == probes.limits.max_bytes
    assert answer["max_kbps"] == probes.limits.max_kbps  # the page paces itself at this
    # one data channel and nothing else: no media can flow, nothing is recorded
    assert [line.split()[0] for line in answer["sdp"].splitlines() if line.startswith("m=")] == [
        "m=application"]
    await page.send(20)
    page.channel.send("end")
    result = await page.result()
    assert result["type"] == "result" and result["bytes"] == 20 * len(CHUNK)
    # the rate is that of the datagrams that arrived after the first message (the 19 others,
    # their SCTP and DTLS headers, any retransmission), over the time they took
    assert 19 * len(CHUNK) < result["wire_bytes"] < 20 * len(CHUNK) * 1.2, result
    assert result["seconds"] > 0
    assert result["kbps"] == pytest.approx(result["wire_bytes"] * 8 / result["seconds"] / 1000,
                                           rel=0.05), result  # seconds are rounded to ms
    # the page does not close its side: the linger does
    await wait_for_async(lambda: probes.running == 0, 5, "the probe closed")
    await wait_for_async(lambda: page.pc.connectionState in ("closed", "failed")
                         or page.channel.readyState == "closed", 10, "the page's side closed")


async def test_the_count_stops_at_its_byte_limit_and_at_the_window(
    tmp_path: Path, pages: list[Page]
) -> None:
    # a window long enough for 128 KiB on a busy machine: the byte limit ends this count
    probes = probes_with(tmp_path, max_bytes=64 * 1024, window_s=10)
    pages.append(fast := Page())
    await fast.connect(probes, "p_fast")
    await fast.send(8)  # 128 KiB
    result = await fast.result()
    assert result["capped"] and 64 * 1024 <= result["bytes"] < 128 * 1024, result

    probes = probes_with(tmp_path, max_bytes=64 * 1024, window_s=0.5)
    pages.append(slow := Page())
    await slow.connect(probes, "p_slow")
    await slow.send(1)
    result = await slow.result(timeout=3)  # the window ends it; the page never said `end`
    assert result["bytes"] == len(CHUNK) and not result["capped"]
    assert result["kbps"] is None  # one message took no measurable time


async def test_one_at_a_time_a_few_a_minute_and_a_cap_per_process(
    tmp_path: Path, pages: list[Page]
) -> None:
    settings = Settings(data_dir=tmp_path, ice_allowed_networks=["127.0.0.0/8"],
                        probes_per_minute=2, max_probes=1)  # IMPROV_PROBES_PER_MINUTE, IMPROV_MAX_PROBES
    probes = NetworkProbes(settings)
    pages.append(first := Page())
    await first.connect(probes, "p_a", owner="socket 1")
    pages.append(second := Page())
    await second.connect(probes, "p_a", owner="socket 1")  # replaces the first
    assert probes.running == 1
    await wait_for_async(lambda: first.channel.readyState == "closed", 10, "the first closed")

    with pytest.raises(ProbeRefused) as limited:  # a third within the minute
        await probes.start("p_a", "socket 1", await Page().offer())
    assert limited.value.code == "probe_limited"
    assert 55 < limited.value.message()["retry_after_s"] <= 60
    with pytest.raises(ProbeRefused) as busy:  # another performer: the process is at its cap
        await probes.start("p_b", "socket 2", await Page().offer())
    assert busy.value.code == "probe_busy"

    await probes.stop("p_a", "socket 0")  # not the socket that started it: it runs on
    assert probes.running == 1
    await probes.stop("p_a", "socket 1")  # its socket ended
    assert probes.running == 0
    pages.append(other := Page())
    await other.connect(probes, "p_b", owner="socket 2")
    await probes.close()  # the server stops
    assert probes.running == 0


async def test_offers_other_than_one_data_channel_are_refused(tmp_path: Path) -> None:
    probes = probes_with(tmp_path)
    for offer in (await offer_sdp(), "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel",
                  {"sdp": "v=0"}, None):
        with pytest.raises(ProbeRefused) as refused:
            await probes.start("p_a", "socket", offer)
        assert refused.value.code == "probe_failed", offer
    assert probes.running == 0


async def test_a_probe_that_never_connects_ends_at_its_time_limit(
    tmp_path: Path, pages: list[Page]
) -> None:
    probes = probes_with(tmp_path, timeout_s=1.0)
    pages.append(page := Page())
    await probes.start("p_a", "socket", await page.offer())  # the page never takes the answer
    assert probes.running == 1
    await wait_for_async(lambda: probes.running == 0, 5, "the time limit")


async def test_bytes_on_the_wire_are_bounded(tmp_path: Path, pages: list[Page]) -> None:
    """A page that keeps sending after its count (hostile) is cut off at max_wire_bytes,
    read through aiortc_hooks.dtls_bytes_received."""
    probes = probes_with(tmp_path, max_bytes=16 * 1024, linger_s=30, timeout_s=30)
    pages.append(page := Page())
    await page.connect(probes)
    probe = next(iter(probes._running.values()))
    sent = 0
    limit = probes.limits.max_wire_bytes
    # the server reads the count every watch_interval_s: on loopback, in one event loop, the
    # page may send far past the limit in that time; it must be cut while still sending
    # (by a wide margin: a loaded machine runs the watcher late)
    while probes.running and sent < 32 * limit:
        await page.send(4, stop=lambda: not probes.running)
        sent += 4 * len(CHUNK)
    await wait_for_async(lambda: probes.running == 0, 5, "the probe cut off")
    received = aiortc_hooks.dtls_bytes_received(probe.pc.sctp.transport)
    assert received > limit and sent < 32 * limit, (received, sent)


async def test_the_performer_socket_carries_probe_and_its_answer(server: ServerProcess) -> None:
    room = server.create_room()
    ws, welcome = await welcomed(server, server.invite(room, "A")["token"])
    try:
        await ws.send(json.dumps({"type": "probe", "sdp": await offer_sdp()}))
        refused = await next_of(ws, "error")
        assert refused["code"] == "probe_failed", refused
        page = Page()
        try:
            await ws.send(json.dumps({"type": "probe", "sdp": await page.offer()}))
            answer = await next_of(ws, "probe_answer")
            await page.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            await wait_for_async(lambda: page.channel.readyState == "open", 10, "the channel")
            await page.send(4)
            page.channel.send("end")
            assert (await page.result())["bytes"] == 4 * len(CHUNK)
        finally:
            await page.pc.close()
    finally:
        await ws.close()
    # the count is logged for the operator, with the performer it is about
    assert f"network check of {welcome['performer_id']}: {4 * len(CHUNK)} bytes" in server.log()
