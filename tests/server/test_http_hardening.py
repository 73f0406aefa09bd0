"""HTTP hardening against real server processes: bodies are bounded on the bytes received and
read only from the operator, files at rest are the owner's alone, no token reaches a log, slow
clients are dropped, and every response carries the browser security headers."""

from __future__ import annotations

import asyncio
import re
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import (
    PREENCODED_BOTS,
    BotFactory,
    ServerProcess,
    publishing,
    start_recording,
    stop_recording,
    wait_for,
    wait_for_async,
)

pytestmark = [pytest.mark.process, PREENCODED_BOTS]

MIB = 1024 * 1024


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


class PeakRss:
    """The highest RSS of some processes while the block runs (sampled every 20 ms)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.before = {pid: rss_mb(pid) for pid in pids}
        self.peak = dict(self.before)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], rss_mb(pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def growth(self) -> dict[int, float]:
        return {pid: round(self.peak[pid] - self.before[pid], 1) for pid in self.pids}


def zeros(total: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """A body of unknown length, so httpx sends it chunked (no Content-Length)."""
    block = b"\0" * chunk
    for _ in range(total // chunk):
        yield block


def chunked_post(url: str, total: int, token: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(url, content=zeros(total), headers=headers, timeout=60)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the tests here that leave nothing behind but a room or a token."""
    proc = ServerProcess(tmp_path_factory.mktemp("shared") / "data").start()
    try:
        yield proc
    finally:
        proc.stop()


# bodies


def test_a_chunked_body_without_a_token_is_refused_unread(shared: ServerProcess) -> None:
    assert shared.proc is not None
    with PeakRss([shared.proc.pid]) as rss:
        response = chunked_post(f"{shared.url}/api/v1/rooms", 100 * MIB, token=None)
    assert response.status_code == 401, response.text
    assert response.json() == {"detail": "missing bearer token"}
    assert max(rss.growth().values()) < 40, rss.growth()
    assert shared.api("GET", "/healthz").status_code == 200


def test_bodies_over_the_limit_get_413_and_under_it_are_served(shared: ServerProcess) -> None:
    assert shared.proc is not None
    with PeakRss([shared.proc.pid]) as rss:
        response = chunked_post(f"{shared.url}/api/v1/rooms", 50 * MIB, token=shared.token)
    assert response.status_code == 413, response.text
    assert response.json() == {"detail": "request body too large"}
    assert max(rss.growth().values()) < 40, rss.growth()
    declared = shared.api("POST", "/api/v1/rooms", content=b"{" + b" " * (2 * MIB) + b"}",
                          headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and declared.json() == {"detail": "request body too large"}
    assert shared.create_room("still serving")


def test_readers_and_performers_sending_bodies_get_the_refusals_of_before(
    shared: ServerProcess,
) -> None:
    rooms_before = [r["room_id"] for r in shared.api("GET", "/api/v1/rooms").json()["items"]]
    reader = shared.api("POST", "/api/v1/tokens", json={"role": "reader", "label": "job"})
    assert reader.status_code == 201, reader.text
    room = shared.create_room()
    invite = shared.invite(room, "Ann")["token"]
    for token, code, detail in (
        (reader.json()["token"], 403, "a reader token can only read sessions"),
        (invite, 403, "a performer invite cannot use this API"),
        ("nonsense", 401, "invalid token"),
    ):
        for response in (
            shared.api("POST", "/api/v1/rooms", token=token, json={"name": "x"}),
            chunked_post(f"{shared.url}/api/v1/rooms", 4 * MIB, token=token),
        ):
            assert (response.status_code, response.json()["detail"]) == (code, detail)
    rooms_after = [r["room_id"] for r in shared.api("GET", "/api/v1/rooms").json()["items"]]
    assert rooms_after == rooms_before + [room]  # none of the refused bodies made a room


def test_the_cluster_router_reads_no_body_without_the_operator_token(
    cluster: ServerProcess,
) -> None:
    assert cluster.proc is not None
    workers = [w["pid"] for w in cluster.api("GET", "/api/v1/status").json()["workers"]]
    with PeakRss([cluster.proc.pid, *workers]) as rss:
        refused = chunked_post(f"{cluster.url}/api/v1/rooms", 100 * MIB, token=None)
        too_large = chunked_post(f"{cluster.url}/api/v1/rooms", 20 * MIB, token=cluster.token)
    assert refused.status_code == 401 and refused.json() == {"detail": "missing bearer token"}
    assert too_large.status_code == 413
    assert too_large.json() == {"detail": "request body too large"}
    assert max(rss.growth().values()) < 40, rss.growth()
    reader = cluster.api("POST", "/api/v1/tokens", json={"role": "reader", "label": "job"})
    response = cluster.api("POST", "/api/v1/rooms", token=reader.json()["token"], json={})
    assert response.status_code == 403, response.text
    assert cluster.create_room("served")


# files at rest


def modes(root: Path) -> dict[str, str]:
    """Every file and directory under ``root`` (itself included) with its permission bits."""
    found = {".": oct(stat.S_IMODE(root.stat().st_mode))}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = oct(stat.S_IMODE(path.lstat().st_mode))
    return found


def not_private(root: Path) -> dict[str, str]:
    wanted = {True: "0o700", False: "0o600"}
    return {
        name: mode for name, mode in modes(root).items()
        if mode != wanted[(root / name).is_dir()]
    }


def test_data_and_recordings_are_readable_by_the_owner_only(
    tmp_path: Path, bots: BotFactory
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # an existing, world-readable data dir is made private at start
    server = ServerProcess(data).start()
    try:
        room = server.create_room("private")
        assert not_private(data) == {}
        session = start_recording(server, room)
        running = [bots(server.invite(room, n)["url"], 30, "--preencoded") for n in ("Ann", "Ben")]
        wait_for(lambda: publishing(server, room, 2), 20, "both performers")
        time.sleep(3)  # three seconds of media recorded
        assert stop_recording(server, room)["state"] == "complete"
        for bot in running:
            assert bot.finish()[0] == 0
    finally:
        server.stop()
    session_dir = data / "sessions" / session["session_id"]
    assert (session_dir / "manifest.json").is_file()
    assert any(session_dir.rglob("*.webm")) and (data / "index.sqlite3").is_file()
    assert not_private(data) == {}


# logs


def test_no_token_reaches_the_log(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        token = server.token
        answered = server.api("GET", f"/api/v1/sessions?limit=5&token={token}&access_token=abc1")
        assert answered.status_code == 200
        assert server.api("GET", "/healthz?invite=xyz2&x=1").status_code == 200
        log = wait_for(lambda: "/healthz?invite=" in (text := server.log()) and text, 5,
                       "the access log line of the last request")
    finally:
        server.stop()
    assert token not in log and "abc1" not in log and "xyz2" not in log
    assert "/console" in log and "operator_token" in log  # where to find the token instead
    assert re.search(r"GET /api/v1/sessions\?limit=5&token=\S+&access_token=\S+ HTTP", log), log
    assert "/healthz?invite=" in log and "&x=1" in log


# slow clients


async def held_for(port: int, send: list[bytes], pause: float, limit: float) -> tuple[float, bytes]:
    """Send ``send`` one piece per ``pause`` seconds; how long until the server closes, and
    what it answered (at most ``limit`` seconds)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    answer = b""

    async def trickle() -> None:
        for piece in send:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(pause)
        await asyncio.sleep(limit)

    sender = asyncio.ensure_future(trickle())
    try:
        while time.monotonic() - started < limit:
            chunk = await asyncio.wait_for(reader.read(65536), limit)
            if not chunk:
                break
            answer += chunk
    except (ConnectionError, asyncio.TimeoutError):
        pass
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
    return time.monotonic() - started, answer


@pytest.fixture
def strict_server(tmp_path: Path) -> Iterator[ServerProcess]:
    env = {"IMPROV_HTTP_HEAD_TIMEOUT_S": "2", "IMPROV_HTTP_BODY_TIMEOUT_S": "2",
           "IMPROV_MAX_CONNECTIONS": "8"}
    proc = ServerProcess(tmp_path / "data", env=env).start()
    try:
        yield proc
    finally:
        proc.stop()


async def test_slow_clients_are_dropped_within_the_timeouts(strict_server: ServerProcess) -> None:
    port, auth = strict_server.port, f"Authorization: Bearer {strict_server.token}\r\n".encode()
    headers = [b"GET /healthz HTTP/1.1\r\n"] + [b"X-Slow: %d\r\n" % i for i in range(20)]
    partial = [b"POST /api/v1/rooms HTTP/1.1\r\nHost: x\r\n" + auth
               + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":"]
    withheld = [b"POST /api/v1/rooms HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"]
    results = await asyncio.gather(
        held_for(port, headers, pause=0.5, limit=15),
        held_for(port, [], pause=0, limit=15),
        held_for(port, partial, pause=0, limit=15),
        held_for(port, withheld, pause=0, limit=15),
    )
    (head_s, head), (idle_s, idle), (body_s, body), (unread_s, unread) = results
    assert head_s < 4 and head == b"", (head_s, head)
    assert idle_s < 4 and idle == b"", (idle_s, idle)
    assert body_s < 4 and body.startswith(b"HTTP/1.1 408 "), (body_s, body)
    assert b"request body timed out" in body
    assert unread_s < 4 and unread.startswith(b"HTTP/1.1 401 "), (unread_s, unread)


async def test_connections_above_the_cap_get_503(strict_server: ServerProcess) -> None:
    idle = [await asyncio.open_connection("127.0.0.1", strict_server.port) for _ in range(8)]
    try:
        # a new connection for every request: a kept-alive one would count against the cap
        async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)) as client:

            async def health_is(status: int) -> bool:
                return (await client.get(f"{strict_server.url}/healthz")).status_code == status

            # once the server has taken the eight idle connections, the ninth is refused
            await wait_for_async(lambda: health_is(503), 5, "a 503 at the cap")
            started = time.monotonic()
            # the idle ones are dropped by the head timeout (2 s), and then there is room again
            await wait_for_async(lambda: health_is(200), 6, "a 200 after the head timeout")
            assert time.monotonic() - started < 4
    finally:
        for _, writer in idle:
            writer.close()


# headers


def security_headers(response: httpx.Response) -> dict[str, str]:
    return {name: response.headers.get(name, "") for name in (
        "content-security-policy", "x-frame-options", "x-content-type-options", "referrer-policy"
    )}


def test_every_page_and_api_answer_carries_the_security_headers(shared: ServerProcess) -> None:
    answers = {
        "/console": httpx.get(f"{shared.url}/console"),
        "/join": httpx.get(f"{shared.url}/join"),
        "/docs": httpx.get(f"{shared.url}/docs"),
        "/static/js/performer.js": httpx.get(f"{shared.url}/static/js/performer.js"),
        "/api/v1/rooms": shared.api("GET", "/api/v1/rooms"),
        "/api/v1/rooms (no token)": httpx.get(f"{shared.url}/api/v1/rooms"),
        "/nowhere": httpx.get(f"{shared.url}/nowhere"),
    }
    for path, response in answers.items():
        headers = security_headers(response)
        csp = {d.split()[0]: d.split()[1:] for d in headers.pop("content-security-policy").split("; ")}
        assert headers == {"x-frame-options": "DENY", "x-content-type-options": "nosniff",
                           "referrer-policy": "no-referrer"}, path
        assert csp["frame-ancestors"] == ["'none'"], path
        assert csp["default-src"] == ["'self'"] and csp["script-src"] == ["'self'"], path
        assert csp["object-src"] == ["'none'"], path


def test_the_api_docs_load_nothing_from_another_origin(shared: ServerProcess) -> None:
    page = httpx.get(f"{shared.url}/docs")
    assert page.status_code == 200
    assert "<script>" not in page.text  # no inline script: the CSP allows none
    urls = [u for u in re.findall(r"""(?:src|href)=["']([^"']+)""", page.text)
            if not u.startswith("data:")]
    assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    for url in urls:
        assert httpx.get(f"{shared.url}{url}").status_code == 200, url
    assert httpx.get(f"{shared.url}/openapi.json").json()["info"]["title"] == "improv-capture"
