"""Refused uploads behind a proxy, on real sockets against a real server: an answer sent before
the request's body was read reaches a client that is still sending that body, whole and
followed by a clean end of the connection (FIN), never a reset that would make a proxy answer
502 instead (the server reads on and drops the body: a bounded "lingering close").

Every request here says ``Connection: close``, as nginx's ``proxy_set_header Connection``
does for everything but a WebSocket (docs/deploy.md): that is the close that lingers."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from improv_capture.api.http_server import LINGER_IDLE_S
from improv_capture.recorder.files import write_json_atomic
from tests.helpers import ServerProcess

pytestmark = pytest.mark.process

MIB = 1024 * 1024
LINGER_S = 2.0
LINGER_MAX_BYTES = 8 * MIB
#: The connection cap of the server here (the smallest the settings allow).
MAX_CONNECTIONS = 8
#: What the page sends: one chunk of 4 MiB. Its bytes look like requests, and none of them may
#: be taken for one: nothing of a dropped body is ever parsed.
BODY = (b"GET /healthz HTTP/1.1\r\nHost: smuggled\r\n\r\n" * (4 * MIB // 40 + 1))[: 4 * MIB]
DIGEST = "0" * 64


@dataclass
class Studio:
    server: ServerProcess
    room: str
    performer: str
    token: str
    revoked_session: str

    def chunk_path(self, session: str) -> str:
        return (f"/api/v1/rooms/{self.room}/sessions/{session}/performers/{self.performer}"
                f"/hq/parts/0/chunks/3")


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """A server with a short linger and the smallest connection cap, a studio room, one
    performer's invite, and a finished session in which that performer withdrew consent."""
    data = tmp_path_factory.mktemp("linger") / "data"
    server = ServerProcess(data, env={
        "IMPROV_HTTP_LINGER_S": str(LINGER_S),
        "IMPROV_HTTP_LINGER_MAX_BYTES": str(LINGER_MAX_BYTES),
        "IMPROV_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }).start()
    try:
        room = server.create_room("studio", profile="studio")
        invite = server.invite(room, "Ann")
        revoked = "ses_20260101T000000Z_revoked"
        write_json_atomic(server.session_dir(revoked) / "manifest.json", {
            "schema_version": 1, "session_id": revoked, "room_id": room, "state": "complete",
            "duration_s": 60.0, "profile": {"name": "studio", "hq": {"max_chunk_bytes": 8 * MIB}},
            "performers": [{"performer_id": invite["performer_id"], "withdrawn": True}],
        })
        yield Studio(server, room, invite["performer_id"], invite["token"], revoked)
    finally:
        server.stop()


def put_head(path: str, token: str, length: int) -> bytes:
    return (f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/octet-stream\r\nX-Chunk-Sha256: {DIGEST}\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode()


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it ends the connection with a FIN; a reset (the
    answer lost, as a proxy loses it) fails the test with what had arrived."""
    answer = b""
    while True:
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            pytest.fail(f"the server reset the connection after {answer[:200]!r}")
        if not piece:
            return answer
        answer += piece


def parsed(answer: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    """Status, headers and JSON body of the one response ``answer`` must be (nothing after)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    assert len(body) == int(headers["content-length"]), f"more than one response: {answer!r}"
    return int(status_line.split()[1]), headers, json.loads(body)


def refused_whole(studio: Studio, path: str, token: str) -> tuple[int, dict[str, object], float]:
    """The page's chunk through a proxy: headers and the whole body sent as fast as the server
    takes them, and only then the answer read to the end. Status, body, seconds taken."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", studio.server.port), timeout=10) as sock:
        try:
            sock.sendall(put_head(path, token, len(BODY)) + BODY)
        except OSError as exc:  # BrokenPipeError, ConnectionResetError: nginx's writev() error
            pytest.fail(f"the server cut the body off: {exc!r}")
        status, _, body = parsed(read_to_end(sock))
    return status, body, time.monotonic() - started


@pytest.mark.parametrize("case", ["wrong session", "consent revoked", "bad token"])
def test_a_refusal_reaches_a_client_still_sending_its_body_and_ends_with_fin(
    studio: Studio, case: str
) -> None:
    path, token, expected = {
        "wrong session": (studio.chunk_path("ses_20260101T000000Z_nosuch"), studio.token,
                          (404, "no such session")),
        "consent revoked": (studio.chunk_path(studio.revoked_session), studio.token,
                            (410, "consent revoked: the high-quality copy was deleted")),
        "bad token": (studio.chunk_path(studio.revoked_session), studio.token + "x",
                      (401, "invalid token")),
    }[case]
    status, body, seconds = refused_whole(studio, path, token)
    assert (status, body["detail"]) == expected
    # the body was taken as fast as it came, and the connection ended with its last byte (not
    # after the idle wait of a body of unknown length)
    assert seconds < LINGER_IDLE_S, seconds
    assert studio.server.api("GET", "/healthz").status_code == 200


def test_a_refusal_is_sent_at_once_to_a_client_that_sends_no_body(studio: Studio) -> None:
    path = studio.chunk_path("ses_20260101T000000Z_nosuch")
    with socket.create_connection(("127.0.0.1", studio.server.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(put_head(path, studio.token, len(BODY)))
        first = sock.recv(65536)
        answered = time.monotonic() - started
        rest = read_to_end(sock)
        ended = time.monotonic() - started
    status, _, body = parsed(first + rest)
    assert (status, body["detail"]) == (404, "no such session")
    assert answered < 0.5, answered  # not held back by the linger
    assert ended < LINGER_S, ended  # a silent client is let go well before the time bound

    # a client that half-closes after part of its body gets its answer and the end too
    with socket.create_connection(("127.0.0.1", studio.server.port), timeout=10) as sock:
        sock.sendall(put_head(path, studio.token, len(BODY)) + BODY[: MIB])
        sock.shutdown(socket.SHUT_WR)
        status, _, body = parsed(read_to_end(sock))
    assert (status, body["detail"]) == (404, "no such session")


def send_until_cut(studio: Studio, head: bytes, block: bytes) -> tuple[int, float]:
    """A refused upload whose client sends ``block`` after ``block`` as fast as the server takes
    them, never reading: how many bytes it sent before the server cut it, and after how long."""
    sent, started = 0, time.monotonic()
    with socket.create_connection(("127.0.0.1", studio.server.port), timeout=10) as sock:
        sock.sendall(head)
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            while sent < 256 * MIB and time.monotonic() - started < 10:
                sent += sock.send(block)
    return sent, time.monotonic() - started


def test_a_client_that_sends_for_ever_is_cut_at_the_byte_bound(studio: Studio) -> None:
    path = studio.chunk_path("ses_20260101T000000Z_nosuch")
    endless = put_head(path, studio.token, 0).replace(
        b"Content-Length: 0", b"Transfer-Encoding: chunked")
    block = b"%x\r\n" % (256 * 1024) + BODY[: 256 * 1024] + b"\r\n"
    sent, cut = send_until_cut(studio, endless, block)
    # the bound, plus what the two kernels' socket buffers held (a few MiB each on loopback)
    assert LINGER_MAX_BYTES < sent < LINGER_MAX_BYTES + 32 * MIB, sent / MIB
    assert cut < LINGER_S * 0.75, cut  # by the bytes, not the time

    # a body declared larger than the bound is not waited for at all
    sent, cut = send_until_cut(studio, put_head(path, studio.token, 1 << 40), BODY[: 256 * 1024])
    assert sent < LINGER_MAX_BYTES and cut < LINGER_S * 0.75, (sent / MIB, cut)


async def trickle_until_cut(studio: Studio, answered: asyncio.Event) -> tuple[int, float]:
    """A refused upload whose client goes on sending 16 KiB every 0.1 s (never idle long
    enough to be let go): its status, and how long after it the server cut the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", studio.server.port)
    try:
        writer.write(put_head(studio.chunk_path("ses_x"), studio.token, 8 * MIB))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        status = int(head.split()[1])
        answered.set()
        since = time.monotonic()
        try:
            while time.monotonic() - since < 4 * LINGER_S:
                writer.write(BODY[: 16 * 1024])
                await writer.drain()
                await asyncio.sleep(0.1)
        except ConnectionError:
            pass
        return status, time.monotonic() - since
    finally:
        writer.close()


async def test_a_slow_endless_sender_is_cut_at_the_time_bound_and_holds_a_connection_meanwhile(
    studio: Studio,
) -> None:
    lingering = MAX_CONNECTIONS - 1
    answered = [asyncio.Event() for _ in range(lingering)]
    clients = [asyncio.ensure_future(trickle_until_cut(studio, event)) for event in answered]
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in answered)), 10)
        async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)) as client:
            # the lingering ones count: with this one the cap is reached
            assert (await client.get(f"{studio.server.url}/healthz")).status_code == 503
            results = await asyncio.wait_for(asyncio.gather(*clients), 6 * LINGER_S)
            assert (await client.get(f"{studio.server.url}/healthz")).status_code == 200
    finally:
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
    for status, cut in results:
        assert status == 404
        assert LINGER_S * 0.75 < cut < LINGER_S + 1.5, cut
