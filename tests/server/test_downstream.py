"""Downstream access against a real server with real recorded sessions: reader tokens, the
catalog, files, events, webhooks, the fetch client and consent revocation."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    PREENCODED_BOTS,
    BotFactory,
    ServerProcess,
    fetch,
    manifest,
    raw_get,
    read_events,
    record_session,
    start_recording,
    stop_recording,
    verify,
    write_manifest_only,
)
from tests.webhooks import SECRET, Receiver

pytestmark = [pytest.mark.process, PREENCODED_BOTS]



@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(failures=2) as r:
        yield r


@pytest.fixture
def hooked_server(tmp_path: Path, receiver: Receiver) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "data", env={
        "IMPROV_WEBHOOK_URLS": json.dumps([receiver.url]),
        "IMPROV_WEBHOOK_SECRET": SECRET,
        "IMPROV_WEBHOOK_BACKOFF_S": "0.2",
        "IMPROV_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
    }).start()
    try:
        yield server
    finally:
        server.stop()


def test_reader_tokens_read_and_nothing_else(server: ServerProcess) -> None:
    created = server.api("POST", "/api/v1/tokens", json={"role": "reader", "label": "trainer"})
    assert created.status_code == 201
    token = created.json()["token"]
    listed = server.api("GET", "/api/v1/tokens").json()["items"]
    assert [t["label"] for t in listed] == ["trainer"] and "token" not in listed[0]
    assert token not in (server.data_dir / "index.sqlite3").read_bytes().decode(errors="ignore")
    room = server.create_room()
    for method, path in [("GET", "/api/v1/rooms"), ("POST", "/api/v1/rooms"),
                         ("GET", f"/api/v1/rooms/{room}"), ("DELETE", f"/api/v1/rooms/{room}"),
                         ("POST", f"/api/v1/rooms/{room}/invites"),
                         ("GET", f"/api/v1/rooms/{room}/invites"),
                         ("POST", f"/api/v1/rooms/{room}/recording"),
                         ("DELETE", f"/api/v1/rooms/{room}/recording"),
                         ("POST", f"/api/v1/rooms/{room}/markers"),
                         ("POST", f"/api/v1/rooms/{room}/prompt"),
                         ("DELETE", f"/api/v1/rooms/{room}/performers/p_x"),
                         ("POST", "/api/v1/tokens"), ("GET", "/api/v1/tokens"),
                         ("DELETE", "/api/v1/tokens/x"), ("POST", "/api/v1/performers/p_x/revoke"),
                         ("GET", "/api/v1/webhooks/deliveries")]:
        response = server.api(method, path, token=token, json={})
        assert response.status_code == 403, (method, path, response.status_code)
    for path in ("/api/v1/sessions", "/api/v1/revocations"):
        assert server.api("GET", path, token=token).status_code == 200
    token_id = listed[0]["id"]
    assert server.api("DELETE", f"/api/v1/tokens/{token_id}").status_code == 200
    assert server.api("GET", "/api/v1/sessions", token=token).status_code == 401


def test_catalog_pages_stay_stable_while_sessions_arrive(tmp_path: Path) -> None:
    sessions = tmp_path / "data" / "sessions"
    for n in range(25):
        write_manifest_only(sessions / f"ses_{n:03d}", 1_700_000_000 + n,
                            "complete" if n % 5 else "partial")
    server = ServerProcess(tmp_path / "data").start()  # the index is built from the directories
    try:
        seen: list[str] = []
        after = None
        while True:
            params = {"limit": 7, "state": "complete", **({"after": after} if after else {})}
            page = server.api("GET", "/api/v1/sessions", params=params).json()
            seen += [s["session_id"] for s in page["items"]]
            if len(seen) == 7:  # a session recorded meanwhile comes later, not in between
                room = server.create_room()
                start_recording(server, room)
                stop_recording(server, room)
            after = page["next"]
            if after is None:
                break
        expected = [f"ses_{n:03d}" for n in range(25) if n % 5]
        assert seen[:20] == expected and len(seen) == len(set(seen)) == 21
        ranged = server.api("GET", "/api/v1/sessions", params={
            "since": "2023-11-14T22:13:25Z", "until": "2023-11-14T22:13:30Z"}).json()["items"]
        assert [s["session_id"] for s in ranged] == [f"ses_{n:03d}" for n in range(5, 10)]
        assert server.api("GET", "/api/v1/sessions", params={"after": "garbage"}).status_code == 400
    finally:
        server.stop()


def test_events_webhooks_fetch_and_revocation(
    hooked_server: ServerProcess, receiver: Receiver, bots: BotFactory, tmp_path: Path
) -> None:
    server = hooked_server
    token = server.api("POST", "/api/v1/tokens", json={"role": "reader", "label": "job"}).json()["token"]
    first, invites = record_session(server, bots, ["Ann", "Ben"])

    # SSE: the backlog, then resume from Last-Event-ID
    events = read_events(server, token, 2)
    assert [e["type"] for e in events] == ["session.started", "session.finalized"]
    assert events[1]["data"]["session_id"] == first and events[1]["data"]["state"] == "complete"

    # fetch mirrors it, verified; a second run downloads nothing
    dest = tmp_path / "mirror"
    done = fetch(server, token, dest)
    assert done.returncode == 0, done.stderr
    assert verify(dest / first)[0] == 0
    assert (dest / first / "manifest.json").read_bytes() == (server.session_dir(first) / "manifest.json").read_bytes()
    again = fetch(server, token, dest)
    assert again.returncode == 0 and "fetched 0 session(s), 0.0 MB" in again.stderr

    # an interrupted download resumes with Range; a corrupted one is caught
    second, _ = record_session(server, bots, ["Cy"])
    media = next(f for f in manifest(server.session_dir(second))["files"] if f["path"].endswith(".webm"))
    original = (server.session_dir(second) / media["path"]).read_bytes()
    partial = dest / ".partial" / second / media["path"]
    partial.parent.mkdir(parents=True)
    partial.write_bytes(bytes(b ^ 0xFF for b in original[:1000]))
    broken = fetch(server, token, dest)
    assert broken.returncode == 1 and "sha256 does not match" in broken.stderr
    assert not (dest / second).exists()
    partial.write_bytes(original[: len(original) // 2])
    log_before = server.log().count(" 206 ")
    resumed = fetch(server, token, dest)
    assert resumed.returncode == 0, resumed.stderr
    assert server.log().count(" 206 ") == log_before + 1
    assert (dest / second / media["path"]).read_bytes() == original

    # revocation: media leaves the server's sessions and, on the next fetch, the mirror
    ann = invites[0]["performer_id"]
    revoked = server.api("POST", f"/api/v1/performers/{ann}/revoke", json={"reason": "asked"})
    assert revoked.status_code == 200 and revoked.json()["sessions"] == [first]
    archive = manifest(server.session_dir(first))
    entry = next(p for p in archive["performers"] if p["performer_id"] == ann)
    assert entry["file"] is None and entry["withdrawn"]["reason"] == "asked"
    assert not (server.session_dir(first) / f"performers/{ann}.webm").exists()
    assert verify(server.session_dir(first))[0] == 0  # SHA256SUMS rewritten
    feed = server.api("GET", "/api/v1/revocations", token=token).json()["items"]
    assert [r["performer_id"] for r in feed] == [ann]
    applied = fetch(server, token, dest)
    assert applied.returncode == 0 and f"withdrew {ann} from {first}" in applied.stderr
    assert not (dest / first / f"performers/{ann}.webm").exists()
    assert verify(dest / first)[0] == 0

    # webhooks: every event delivered once, signed, after two failures each
    types = ["session.started", "session.finalized", "session.started", "session.finalized",
             "consent.revoked"]
    deadline = time.time() + 30
    while len(receiver.accepted) < len(types):
        assert time.time() < deadline, receiver.attempts
        time.sleep(0.2)
    assert [e["type"] for e in sorted(receiver.accepted.values(), key=lambda e: e["id"])] == types
    assert all(a["valid"] for a in receiver.attempts)
    deliveries = server.api("GET", "/api/v1/webhooks/deliveries").json()["items"]
    assert {d["status"] for d in deliveries} == {"delivered"}
    assert {d["attempts"] for d in deliveries} == {3}
    resumed_events = read_events(server, token, 1, headers={"Last-Event-ID": "4"})
    assert resumed_events[0]["type"] == "consent.revoked"
    shutil.rmtree(dest)


def test_file_paths_cannot_escape_the_session(server: ServerProcess, bots: BotFactory) -> None:
    session_id, invites = record_session(server, bots, ["Ann"])
    session_dir = server.session_dir(session_id)
    base = f"/api/v1/sessions/{session_id}/files/"
    media = f"performers/{invites[0]['performer_id']}.webm"
    assert raw_get(server, base + media) == 200
    (server.data_dir / "secret.txt").write_text("secret")
    cases = {
        "../../rooms.json": (400, 404),
        "%2e%2e/%2e%2e/rooms.json": (400, 404),
        "performers/%2e%2e/%2e%2e/%2e%2e/secret.txt": (400, 404),
        "%2Fetc%2Fpasswd": (400, 404),
        "/etc/passwd": (400, 404),
        "performers/x%00.webm": (400,),
        "events.jsonl%00": (400,),
        "capture/anything": (404,),
    }
    for path, allowed in cases.items():
        assert raw_get(server, base + path) in allowed, path
    # a listed file replaced by a symlink is refused
    target = session_dir / media
    target.unlink()
    target.symlink_to(server.data_dir / "secret.txt")
    assert raw_get(server, base + media) == 404
