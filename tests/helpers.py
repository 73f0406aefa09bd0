"""What the tests share: real server and bot processes (everything started is stopped),
waiting for a condition instead of a fixed sleep, and the API and socket calls a user makes."""

from __future__ import annotations

import asyncio
import http.client
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import websockets
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from improv_capture.clock import utc_iso
from improv_capture.cluster.workers import free_loopback_port as free_port
from improv_capture.media.connections import rtc_configuration
from improv_capture.recorder.files import write_json_atomic
from improv_capture.rooms.invites import InviteSigner

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
#: Every test peer gathers ICE candidates on loopback only, and the server may send ICE
#: checks to loopback candidates (by default only to global unicast addresses).
LOOPBACK_ENV = {
    "IMPROV_ICE_ADDRESSES": '["127.0.0.1"]',
    "IMPROV_ICE_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
}

#: For a module whose bots all send ``--preencoded`` media (next to no CPU) and whose checks
#: are not timed: it runs beside the media tests, on the other worker (tests/conftest.py).
PREENCODED_BOTS = pytest.mark.xdist_group("preencoded bots")


def cli() -> list[str]:
    return [sys.executable, "-m", "improv_capture.cli"]


def wait_for(check: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    """Poll ``check`` until it returns something true, and return that; fail after
    ``timeout`` seconds, saying ``what`` never came."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


async def wait_for_async(
    check: Callable[[], T | Awaitable[T]], timeout: float, what: str, every: float = 0.1
) -> T:
    """:func:`wait_for` for async tests: polls without blocking the event loop; ``check`` may
    be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)


@dataclass
class ServerProcess:
    data_dir: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    preexec: Callable[[], None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.data_dir / "operator_token").read_text().strip()

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            cli() + ["serve", "--port", str(self.port), "--data-dir", str(self.data_dir)],
            cwd=REPO,
            env={**os.environ, **LOOPBACK_ENV, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=self.preexec,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"server did not start: {self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", {})
        headers.setdefault("Authorization", f"Bearer {token or self.token}")
        kw.setdefault("timeout", 10)
        return httpx.request(method, f"{self.url}{path}", headers=headers, **kw)

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def invite_signer(self) -> InviteSigner:
        """The server's own signer, for invites the API would never hand out."""
        return InviteSigner((self.data_dir / "secret_key").read_text().strip())

    def session_dir(self, session_id: str) -> Path:
        return self.data_dir / "sessions" / session_id

    def create_room(self, name: str = "test room", profile: str | None = None) -> str:
        body = {"name": name, **({"profile": profile} if profile else {})}
        response = self.api("POST", "/api/v1/rooms", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["room_id"])

    def invite(self, room_id: str, name: str, **extra: Any) -> dict[str, Any]:
        response = self.api(
            "POST", f"/api/v1/rooms/{room_id}/invites", json={"display_name": name, **extra}
        )
        assert response.status_code == 201, response.text
        return dict(response.json())


def room_state(server: ServerProcess, room_id: str) -> dict[str, Any]:
    response = server.api("GET", f"/api/v1/rooms/{room_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def publishing(server: ServerProcess, room_id: str, performers: int) -> bool:
    """Whether ``performers`` members of the room publish both audio and video."""
    members = room_state(server, room_id)["performers"]
    return sum(1 for p in members if len(p["publishing"]) == 2) == performers


def arriving(server: ServerProcess, room_id: str, performers: int, packets: int) -> bool:
    """Whether ``performers`` members of the room have each sent the server ``packets`` packets
    of both audio and video: `publishing` is said by signaling alone, packets need ICE and DTLS
    to have come up too (slow on a lossy link)."""
    members = room_state(server, room_id)["performers"]
    return sum(1 for p in members if len(p["tracks"]) == 2
               and all(t["packets"] >= packets for t in p["tracks"].values())) == performers


def member_state(server: ServerProcess, room_id: str, performer_id: str) -> str | None:
    """A member's state as the room reports it ("joined", "reconnecting"), None if absent."""
    members = room_state(server, room_id)["performers"]
    return next((p["state"] for p in members if p["performer_id"] == performer_id), None)


def worker_pids(cluster: ServerProcess) -> list[int]:
    return [w["pid"] for w in cluster.api("GET", "/api/v1/status").json()["workers"]]


def start_recording(server: ServerProcess, room_id: str) -> dict[str, Any]:
    response = server.api("POST", f"/api/v1/rooms/{room_id}/recording")
    assert response.status_code == 201, response.text
    return dict(response.json())


def stop_recording(server: ServerProcess, room_id: str) -> dict[str, Any]:
    response = server.api("DELETE", f"/api/v1/rooms/{room_id}/recording", timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


def record_session(server: ServerProcess, bots: BotFactory, names: list[str],
                   seconds: float = 1.5) -> tuple[str, list[dict[str, Any]]]:
    """A complete session of ``names`` performing for ``seconds`` once they all publish."""
    room = server.create_room()
    session = start_recording(server, room)
    invites = [server.invite(room, n) for n in names]
    running = [bots(inv["url"], 30, "--preencoded") for inv in invites]
    wait_for(lambda: publishing(server, room, len(names)), 20, "every performer")
    time.sleep(seconds)
    for bot in running:
        assert bot.finish()[0] == 0
    assert stop_recording(server, room)["state"] == "complete"
    return session["session_id"], invites


def read_events(server: ServerProcess, token: str, count: int, after: int | None = None,
                headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The first ``count`` events of the SSE stream (after event ``after``, or from
    ``headers``' Last-Event-ID), read as a downstream job reads them."""
    query = f"?after={after}" if after is not None else ""
    found = []
    with httpx.stream("GET", f"{server.url}/api/v1/events{query}", timeout=15,
                      headers={"Authorization": f"Bearer {token}", **(headers or {})}) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: "):
                found.append(json.loads(line[6:]))
                if len(found) == count:
                    break
    return found


def fetch(server: ServerProcess, token: str, dest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run `improv-capture fetch` into ``dest`` as a downstream job would."""
    return subprocess.run(
        cli() + ["fetch", "--server", server.url, "--token", token, "--dest", str(dest), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


def verify(session_dir: Path) -> tuple[int, dict[str, Any]]:
    """Run `improv-capture verify --json` as a user would."""
    done = subprocess.run(
        cli() + ["verify", str(session_dir), "--json"], cwd=REPO, capture_output=True, timeout=120
    )
    return done.returncode, json.loads(done.stdout)


def stored_events(server: ServerProcess) -> list[dict[str, Any]]:
    """Every event the server has stored: the SSE backlog, up to where the stream goes live."""
    events = []
    with httpx.stream("GET", f"{server.url}/api/v1/events", timeout=10,
                      headers={"Authorization": f"Bearer {server.token}"}) as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
            elif line.startswith(": live"):
                break
    return events


def manifest(session_dir: Path) -> dict[str, Any]:
    return dict(json.loads((session_dir / "manifest.json").read_text()))


def write_manifest_only(session_dir: Path, started: float, state: str) -> None:
    """A finished session of 60 s that has nothing but its manifest (for the catalog)."""
    write_json_atomic(session_dir / "manifest.json", {
        "schema_version": 1, "session_id": session_dir.name, "room_id": "room_old",
        "state": state, "started_at": utc_iso(started), "ended_at": utc_iso(started + 60),
        "duration_s": 60.0, "performers": [], "markers": [], "prompts": [], "files": [],
    })


def raw_get(server: ServerProcess, raw_path: str) -> int:
    """Send the path exactly as written (no client-side normalisation); the status."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.putrequest("GET", raw_path, skip_accept_encoding=True)
        connection.putheader("Authorization", f"Bearer {server.token}")
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


# sockets: the signaling socket of a performer, the operator's socket of a console


async def next_of(ws: Any, kind: str, timeout: float = 10) -> dict[str, Any]:
    """The next message of type ``kind`` (others are skipped); fails rather than hangs."""
    async def wait() -> dict[str, Any]:
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == kind:
                return dict(message)

    return await asyncio.wait_for(wait(), timeout)


async def close_code(url: str, *frames: str | bytes, timeout: float = 15) -> tuple[int, str]:
    """Send ``frames`` on a new WebSocket; the close code and reason the server answers with."""
    async with websockets.connect(url, max_size=2**22) as ws:
        try:
            for frame in frames:
                await ws.send(frame)
            while True:
                await asyncio.wait_for(ws.recv(), timeout)
        except websockets.ConnectionClosed as exc:
            assert exc.rcvd is not None, "closed without a close frame"
            return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError("the server did not close")


async def welcomed(server: ServerProcess, token: str) -> tuple[Any, dict[str, Any]]:
    """A performer's signaling socket after its hello, and the server's welcome."""
    ws = await websockets.connect(server.ws_url("/api/v1/signal"))
    await ws.send(json.dumps({"type": "hello", "token": token}))
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def operator_ws(server: ServerProcess, token: str) -> Any:
    """A console's socket, its hello sent."""
    ws = await websockets.connect(server.ws_url("/api/v1/operator"))
    await ws.send(json.dumps({"type": "hello", "token": token}))
    return ws


@dataclass
class BotProcess:
    invite_url: str
    duration: float
    report_path: Path
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> BotProcess:
        self.proc = subprocess.Popen(
            cli() + ["bot", "--invite", self.invite_url, "--duration", str(self.duration),
                     "--report", str(self.report_path), *self.extra],
            cwd=REPO,
            env={**os.environ, **LOOPBACK_ENV},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait(self, timeout: float | None = None) -> tuple[int, str, dict[str, Any]]:
        assert self.proc is not None
        output, _ = self.proc.communicate(timeout=timeout or self.duration + 40)
        report = json.loads(self.report_path.read_text()) if self.report_path.exists() else {}
        return self.proc.returncode, output.decode(errors="replace"), report

    def finish(self, timeout: float = 30) -> tuple[int, str, dict[str, Any]]:
        """Stop the bot now that the test has seen enough, without waiting out its duration:
        on SIGTERM it leaves the room, writes its report and exits 0, as at the end."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def peer_stats(self, finish: bool = False) -> dict[str, Any]:
        """What the bot received from its one other performer, once it ended cleanly (at
        the end of its duration, or now if ``finish``)."""
        code, output, report = self.finish() if finish else self.wait()
        assert code == 0, output
        (stats,) = report["received"].values()
        return dict(stats)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


# peers and SDP: what a performer's browser or the bot would offer


class Publisher:
    """A real aiortc peer that publishes audio and video, as the bot and the page do (gathering
    on loopback once aiortc_hooks.restrict_ice_addresses(["127.0.0.1"]) ran)."""

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
        try:
            await wait_for_async(lambda: self.pc.connectionState == "connected", timeout,
                                 "the connection")
        except AssertionError:
            return False
        return True


async def offer_sdp(kinds: tuple[str, ...] = ("audio", "video")) -> str:
    """A real offer of a publishing peer (which is closed again)."""
    peer = Publisher(kinds)
    try:
        return await peer.offer()
    finally:
        await peer.pc.close()


CANDIDATE_LINE = re.compile(r"^a=candidate:.*$\r?\n?", re.MULTILINE)


def with_candidates(offer: str, *candidates: str) -> str:
    """``offer`` with its own candidates replaced by ``candidates`` (in every m-line)."""
    bare = CANDIDATE_LINE.sub("", offer)
    lines = "".join(f"a=candidate:{c}\r\n" for c in candidates)
    return re.sub(r"^(a=end-of-candidates\r?\n)", lines + r"\1", bare, flags=re.MULTILINE)


#: The `bots` fixture: start(invite_url, duration, *extra flags) -> a running bot.
BotFactory = Callable[..., BotProcess]


def server_paths(session_dir: Path) -> dict[str, set[str]]:
    """The server's own view of how each performer reached it: the remote candidate type of
    its ICE pair, in every per-second stats event of the session."""
    paths: dict[str, set[str]] = {}
    for line in (session_dir / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["type"] == "stats" and event.get("path"):
            paths.setdefault(event["performer_id"], set()).add(event["path"])
    return paths
