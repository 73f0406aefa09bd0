"""Issue #9, downstream and store: what a reader token keeps after revocation, what the files
route serves through symlinks, the caps on rooms, invites and tokens, the room store's cost
per write, and which webhook receivers the server accepts. Real server processes throughout."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from improv_capture.recorder.files import write_json_atomic
from tests.helpers import ServerProcess, raw_get, wait_for, write_manifest_only
from tests.webhooks import SECRET, Receiver

pytestmark = pytest.mark.process


def reader_token(server: ServerProcess, label: str = "job") -> dict[str, Any]:
    created = server.api("POST", "/api/v1/tokens", json={"role": "reader", "label": label})
    assert created.status_code == 201, created.text
    return dict(created.json())


async def until_live(lines: AsyncIterator[str]) -> None:
    async for line in lines:
        if line.startswith(": live"):
            return
    raise AssertionError("the stream ended before going live")


async def next_data(lines: AsyncIterator[str]) -> dict[str, Any]:
    async for line in lines:
        if line.startswith("data: "):
            return dict(json.loads(line[6:]))
    raise AssertionError("the stream ended")


# 5. revocation reaches an open stream


async def test_sse_stream_of_a_revoked_reader_token_ends_at_once(server: ServerProcess) -> None:
    reader = reader_token(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        async with client.stream("GET", "/api/v1/events", headers={
            "Authorization": f"Bearer {reader['token']}"}) as revoked_stream, client.stream(
                "GET", "/api/v1/events", headers={
                    "Authorization": f"Bearer {server.token}"}) as operator_stream:
            assert revoked_stream.status_code == operator_stream.status_code == 200
            reader_lines = revoked_stream.aiter_lines()
            operator_lines = operator_stream.aiter_lines()
            await until_live(reader_lines)
            await until_live(operator_lines)

            revoked_at = time.monotonic()
            assert server.api("DELETE", f"/api/v1/tokens/{reader['id']}").status_code == 200

            async def drain() -> None:
                async for _ in reader_lines:
                    pass

            await asyncio.wait_for(drain(), 2.0)  # the stream ends, not just the next request
            assert time.monotonic() - revoked_at < 2.0

            # the operator's stream, authorised by a token that is not revoked, goes on
            await client.post("/api/v1/performers/p_someone/revoke",
                              headers={"Authorization": f"Bearer {server.token}"})
            event = await asyncio.wait_for(next_data(operator_lines), 5.0)
            assert event["type"] == "consent.revoked"
    again = server.api("GET", "/api/v1/events", token=reader["token"])
    assert again.status_code == 401


# 6. the files route and session ids


def synthetic_session(sessions: Path, session_id: str, files: dict[str, bytes]) -> Path:
    """A finished session on disk whose manifest lists ``files`` (written by the test)."""
    session_dir = sessions / session_id
    write_manifest_only(session_dir, 1_700_000_000, "complete")
    for path, content in files.items():
        (session_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (session_dir / path).write_bytes(content)
    manifest = json.loads((session_dir / "manifest.json").read_text())
    manifest["files"] = [{"path": p, "bytes": len(c)} for p, c in files.items()]
    write_json_atomic(session_dir / "manifest.json", manifest)
    return session_dir


def test_symlinks_inside_or_as_a_session_never_serve_their_target(tmp_path: Path) -> None:
    data = tmp_path / "data"
    outside = tmp_path / "outside"
    (outside / "performers").mkdir(parents=True)
    (outside / "performers" / "p_1.webm").write_bytes(b"SECRET OUTSIDE")
    write_manifest_only(outside, 1_700_000_000, "complete")
    sessions = data / "sessions"
    session_dir = synthetic_session(sessions, "ses_linked", {"performers/p_1.webm": b"real media",
                                                             "notes/a.txt": b"a note"})
    server = ServerProcess(data).start()
    try:
        base = "/api/v1/sessions/ses_linked/files/"
        assert raw_get(server, base + "performers/p_1.webm") == 200
        # a directory of the session replaced by a symlink to elsewhere
        (session_dir / "performers" / "p_1.webm").unlink()
        (session_dir / "performers").rmdir()
        (session_dir / "performers").symlink_to(outside / "performers", target_is_directory=True)
        response = server.api("GET", base + "performers/p_1.webm")
        assert response.status_code == 404 and b"SECRET" not in response.content
        assert server.api("GET", base + "notes/a.txt").content == b"a note"
        # a session directory that is itself a symlink out of sessions/
        (sessions / "ses_elsewhere").symlink_to(outside, target_is_directory=True)
        assert server.api("GET", "/api/v1/sessions/ses_elsewhere").status_code == 404
        response = server.api("GET", "/api/v1/sessions/ses_elsewhere/files/performers/p_1.webm")
        assert response.status_code == 404 and b"SECRET" not in response.content
    finally:
        server.stop()


def test_ids_with_a_trailing_newline_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    synthetic_session(data / "sessions", "ses_nl\n", {"performers/p_1.webm": b"media"})
    server = ServerProcess(data).start()
    try:
        assert raw_get(server, "/api/v1/sessions/ses_nl%0A") == 404
        assert raw_get(server, "/api/v1/sessions/ses_nl%0A/files/performers/p_1.webm") == 404
        revoked = server.api("POST", "/api/v1/performers/p_x%0A/revoke")
        assert revoked.status_code == 422, revoked.text
        assert server.api("GET", "/api/v1/revocations").json()["items"] == []
    finally:
        server.stop()


def test_event_ids_out_of_range_are_bad_input(server: ServerProcess) -> None:
    huge = "9" * 20  # above SQLite's integers
    for path, headers in [(f"/api/v1/events?after={huge}", {}),
                          (f"/api/v1/revocations?after={huge}", {}),
                          ("/api/v1/events", {"Last-Event-ID": huge}),
                          ("/api/v1/events", {"Last-Event-ID": "not-an-id"})]:
        response = server.api("GET", path, headers={
            "Authorization": f"Bearer {server.token}", **headers})
        assert response.status_code in (400, 422), (path, headers, response.status_code)
    assert " 500 " not in server.log() and "Traceback" not in server.log()


# 8. caps, the room store, token retention


def test_rooms_invites_tokens_and_streams_have_caps(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={
        "IMPROV_MAX_ROOMS": "2", "IMPROV_MAX_INVITES_PER_ROOM": "3",
        "IMPROV_MAX_READER_TOKENS": "2", "IMPROV_MAX_EVENT_STREAMS": "1"}).start()
    try:
        rooms = [server.create_room(f"r{n}") for n in range(2)]
        refused = server.api("POST", "/api/v1/rooms", json={"name": "one more"})
        assert refused.status_code == 409
        assert refused.json()["detail"] == (
            "limit reached: at most 2 rooms (IMPROV_MAX_ROOMS); delete a room first")
        assert server.api("DELETE", f"/api/v1/rooms/{rooms[0]}").status_code == 200
        rooms[0] = server.create_room("again")

        for n in range(3):
            server.invite(rooms[0], f"P{n}")
        refused = server.api("POST", f"/api/v1/rooms/{rooms[0]}/invites", json={"display_name": "X"})
        assert refused.status_code == 409
        assert refused.json()["detail"] == ("limit reached: at most 3 invites per room "
                                            "(IMPROV_MAX_INVITES_PER_ROOM); make a new room")
        assert len(server.api("GET", f"/api/v1/rooms/{rooms[0]}/invites").json()["items"]) == 3

        tokens = [reader_token(server, f"t{n}") for n in range(2)]
        refused = server.api("POST", "/api/v1/tokens", json={"role": "reader", "label": "t3"})
        assert refused.status_code == 409
        assert refused.json()["detail"] == ("limit reached: at most 2 reader tokens "
                                            "(IMPROV_MAX_READER_TOKENS); revoke one first")
        assert server.api("DELETE", f"/api/v1/tokens/{tokens[0]['id']}").status_code == 200
        reader_token(server, "t3")  # a revoked token frees its place

        with httpx.stream("GET", f"{server.url}/api/v1/events", timeout=10,
                          headers={"Authorization": f"Bearer {server.token}"}) as first:
            assert first.status_code == 200
            second = server.api("GET", "/api/v1/events")
            assert second.status_code == 429 and second.headers["retry-after"]
            assert "IMPROV_MAX_EVENT_STREAMS" in second.json()["detail"]
        deadline = time.time() + 5  # the slot comes back when the stream ends
        while True:
            with httpx.stream("GET", f"{server.url}/api/v1/events", timeout=10,
                              headers={"Authorization": f"Bearer {server.token}"}) as later:
                if later.status_code == 200:
                    break
            assert time.time() < deadline
            time.sleep(0.1)
    finally:
        server.stop()


def written_bytes(pid: int) -> int:
    """Bytes the process has passed to write() and its kin (/proc/<pid>/io wchar)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar")


def test_an_invite_costs_the_same_in_a_big_room_and_everything_survives_a_restart(
    tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data, env={"IMPROV_MAX_INVITES_PER_ROOM": "1000"}).start()
    try:
        assert server.proc is not None
        room = server.create_room("big")
        other = server.create_room("small")
        server.invite(other, "Solo", performer_id="p_solo")

        def cost_of_invites(count: int) -> int:
            costs = []
            for _ in range(count):
                before = written_bytes(server.proc.pid)  # type: ignore[union-attr]
                server.invite(room, "Someone with a fairly long display name")
                costs.append(written_bytes(server.proc.pid) - before)  # type: ignore[union-attr]
            return int(statistics.median(costs))

        small = cost_of_invites(5)
        for _ in range(60):
            server.invite(room, "Someone with a fairly long display name")
        big = cost_of_invites(5)
        # the whole room as JSON is over 40 KB by now; one invite's row is well under 16 KB
        assert big < small + 16 * 1024, (small, big)
        assert server.api("DELETE", f"/api/v1/rooms/{other}/performers/p_solo").status_code == 200
        before = {r: server.api("GET", f"/api/v1/rooms/{r}/invites").json()["items"]
                  for r in (room, other)}
    finally:
        server.stop()
    server = ServerProcess(data, port=server.port).start()
    try:
        listed = [r["room_id"] for r in server.api("GET", "/api/v1/rooms").json()["items"]]
        assert listed == [room, other]
        assert {r: server.api("GET", f"/api/v1/rooms/{r}/invites").json()["items"]
                for r in (room, other)} == before
        assert len(before[room]) == 70
        again = server.api("POST", f"/api/v1/rooms/{other}/invites",
                           json={"display_name": "Solo", "performer_id": "p_solo"})
        assert again.status_code == 409 and "removed" in again.json()["detail"]
    finally:
        server.stop()


OLD_INVITE = {"performer_id": "p_ann", "display_name": "Ann", "token": "tok.ann",
              "url": "http://127.0.0.1:8000/join#invite=tok.ann",
              "expires_at": "2030-01-01T00:00:00.000000Z"}


def old_rooms_file(path: Path, room_id: str, invites: list[dict[str, str]], removed: list[str]) -> None:
    """A rooms file as the JSON store wrote it, before the SQLite store."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rooms": [{
        "room_id": room_id, "name": f"old {room_id}", "created_at": "2024-05-01T10:00:00.000000Z",
        "invites": invites, "removed": removed}]}))


def test_rooms_of_an_old_data_dir_are_migrated_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ben = {**OLD_INVITE, "performer_id": "p_ben", "display_name": "Ben", "token": "tok.ben"}
    old_rooms_file(data / "rooms.json", "room_old", [OLD_INVITE, ben], ["p_ben"])
    for start in range(2):  # the second start finds nothing more to migrate
        server = ServerProcess(data).start()
        try:
            rooms = server.api("GET", "/api/v1/rooms").json()["items"]
            assert [(r["room_id"], r["name"]) for r in rooms] == [("room_old", "old room_old")]
            invites = server.api("GET", "/api/v1/rooms/room_old/invites").json()["items"]
            assert invites == [OLD_INVITE, ben]
            again = server.api("POST", "/api/v1/rooms/room_old/invites",
                               json={"display_name": "Ben", "performer_id": "p_ben"})
            assert again.status_code == 409 and "removed" in again.json()["detail"]
        finally:
            server.stop()
        assert not (data / "rooms.json").exists()
        assert json.loads((data / "rooms.json.migrated").read_text())["rooms"][0]["room_id"] == "room_old"


def test_each_workers_old_rooms_file_is_migrated(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old_rooms_file(data / "rooms.json", "room_zero", [OLD_INVITE], [])
    old_rooms_file(data / "rooms.w1.json", "room_one", [OLD_INVITE], [])
    cluster = ServerProcess(data, env={"IMPROV_WORKERS": "2"}).start(timeout=60)
    try:
        rooms = {r["room_id"] for r in cluster.api("GET", "/api/v1/rooms").json()["items"]}
        assert rooms == {"room_zero", "room_one"}
        for room in rooms:
            invites = cluster.api("GET", f"/api/v1/rooms/{room}/invites").json()["items"]
            assert invites == [OLD_INVITE]
    finally:
        cluster.stop()
    assert {p.name for p in data.glob("rooms*.migrated")} == {
        "rooms.json.migrated", "rooms.w1.json.migrated"}


def test_revoked_tokens_are_deleted_after_the_retention(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"IMPROV_REVOKED_TOKEN_RETENTION_S": "1"}).start()
    try:
        kept, revoked = reader_token(server, "kept"), reader_token(server, "revoked")
        assert server.api("DELETE", f"/api/v1/tokens/{revoked['id']}").status_code == 200
        def listed() -> dict[str, dict[str, Any]]:
            return {t["label"]: t for t in server.api("GET", "/api/v1/tokens").json()["items"]}

        assert listed()["revoked"]["revoked_at"] is not None
        wait_for(lambda: list(listed()) == ["kept"], 5, "the revoked token to be deleted")
        assert listed()["kept"]["id"] == kept["id"]
    finally:
        server.stop()


def test_revoked_tokens_listed_are_bounded_too(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"IMPROV_MAX_READER_TOKENS": "2"}).start()
    try:
        for n in range(4):
            token = reader_token(server, f"t{n}")
            assert server.api("DELETE", f"/api/v1/tokens/{token['id']}").status_code == 200
        listed = server.api("GET", "/api/v1/tokens").json()["items"]
        assert [t["label"] for t in listed] == ["t2", "t3"]  # the latest revoked ones
    finally:
        server.stop()


# 10. webhook receivers


@pytest.mark.parametrize(("url", "allow", "message"), [
    ("file:///etc/passwd", "true", "only http and https receivers are allowed"),
    ("http://169.254.169.254/latest/meta-data/", "true",
     "169.254.169.254 is a link-local address, not allowed"),
    ("http://127.0.0.1:9/hook", "false",
     "127.0.0.1 is a loopback address, not allowed; set IMPROV_WEBHOOK_ALLOW_PRIVATE=true"),
])
def test_a_forbidden_webhook_url_stops_the_start(
    tmp_path: Path, url: str, allow: str, message: str
) -> None:
    server = ServerProcess(tmp_path / "data", env={
        "IMPROV_WEBHOOK_URLS": json.dumps([url]), "IMPROV_WEBHOOK_ALLOW_PRIVATE": allow})
    try:
        with pytest.raises(RuntimeError, match="server exited"):
            server.start()
        assert f"webhook URL {url}: {message}" in server.log()
    finally:
        server.stop()


def test_a_name_resolving_to_loopback_gets_no_delivery_unless_allowed(tmp_path: Path) -> None:
    with Receiver(failures=0) as receiver:
        url = f"http://localhost:{receiver.port}/hook"
        for allow in ("false", "true"):
            server = ServerProcess(tmp_path / f"data-{allow}", env={
                "IMPROV_WEBHOOK_URLS": json.dumps([url]), "IMPROV_WEBHOOK_SECRET": SECRET,
                "IMPROV_WEBHOOK_BACKOFF_S": "0.2", "IMPROV_WEBHOOK_ALLOW_PRIVATE": allow}).start()
            try:
                server.api("POST", "/api/v1/performers/p_x/revoke")
                deadline = time.time() + 10
                while not (deliveries := server.api(
                        "GET", "/api/v1/webhooks/deliveries").json()["items"])[0]["attempts"]:
                    assert time.time() < deadline
                    time.sleep(0.1)
                if allow == "false":
                    assert deliveries[0]["status"] == "pending"
                    assert "localhost resolves to" in deliveries[0]["last_error"]
                    assert "loopback address, not allowed" in deliveries[0]["last_error"]
                    assert receiver.attempts == []
                else:
                    assert deliveries[0]["status"] == "delivered"
                    assert len(receiver.attempts) == 1 and receiver.attempts[0]["valid"]
            finally:
                server.stop()
