"""The upload routes of high-quality copies against bad input, on a real server: each refusal
has its status and reason, and leaves nothing behind (no chunk kept, no session file)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ServerProcess, next_of, start_recording, stop_recording, welcomed

pytestmark = pytest.mark.process

EBML = bytes.fromhex("1a45dfa3")
PART_INFO = {"mime_type": "video/webm;codecs=vp8,opus", "started_at_ms": 1.8e12, "reason": "start",
             "video": {"width": 1280, "height": 720, "frame_rate": 30},
             "audio": {"sample_rate": 48000, "channel_count": 1}}


def base(room: str, session: str, performer: str) -> str:
    return f"/api/v1/rooms/{room}/sessions/{session}/performers/{performer}/hq"


def put_chunk(server: ServerProcess, path: str, token: str, data: bytes,
              digest: str | None = None) -> httpx.Response:
    return server.api("PUT", path, token=token, content=data, headers={
        "X-Chunk-Sha256": digest or hashlib.sha256(data).hexdigest(),
        "Content-Type": "application/octet-stream"})


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def consented(server: ServerProcess, invite: dict[str, Any]) -> Any:
    ws, welcome = await welcomed(server, invite["token"])
    consent = welcome["consent"]
    await ws.send(json.dumps({"type": "consent", "version": consent["version"],
                              "text_sha256": consent["text_sha256"]}))
    await next_of(ws, "consent_ok")
    return ws


async def test_bad_uploads_get_their_error_and_leave_nothing(server: ServerProcess) -> None:
    studio = server.api("POST", "/api/v1/rooms", json={"name": "studio", "profile": "studio"})
    assert studio.status_code == 201, studio.text
    assert studio.json()["profile"]["hq"]["max_chunk_bytes"] == 8 * 1024 * 1024
    room = studio.json()["room_id"]
    plain = server.create_room("standard")
    ann, ben, quiet = (server.invite(room, n) for n in ("Ann", "Ben", "Quiet"))
    elsewhere = server.invite(plain, "Elsewhere")
    sockets = [await consented(server, ann), await consented(server, ben)]
    silent, _ = await welcomed(server, quiet["token"])  # joined, never consented
    sockets.append(silent)
    outsider = await consented(server, elsewhere)
    sockets.append(outsider)
    try:
        session = start_recording(server, room)["session_id"]
        plain_session = start_recording(server, plain)["session_id"]
        started = await next_of(sockets[0], "recording")
        assert started["session_id"] == session
        assert started["hq"]["upload_url"] == base(room, session, ann["performer_id"])
        ann_base = base(room, session, ann["performer_id"])
        uploads = server.data_dir / "uploads"

        def refused(response: httpx.Response, status: int, detail: str) -> None:
            assert (response.status_code, response.json()["detail"]) == (status, detail), response.text
            assert files_under(uploads) == before, "a refused request left a file behind"

        before = files_under(uploads)
        # the wrong performer's invite, a forged one, the operator's token
        refused(server.api("PUT", f"{ann_base}/parts/0", token=ben["token"], json=PART_INFO),
                403, "this invite is for another performer")
        refused(server.api("PUT", f"{ann_base}/parts/0", token=ann["token"] + "x", json=PART_INFO),
                401, "invalid token")
        refused(server.api("PUT", f"{ann_base}/parts/0", json=PART_INFO), 401, "invalid token")
        # the wrong session, a session of another room, a standard room's session
        refused(server.api("PUT", f"{base(room, 'ses_20260101T000000Z_abcdef', ann['performer_id'])}/parts/0",
                           token=ann["token"], json=PART_INFO), 404, "no such session")
        refused(server.api("PUT", f"{base(room, plain_session, ann['performer_id'])}/parts/0",
                           token=ann["token"], json=PART_INFO), 404, "no such session")
        refused(server.api("PUT", f"{base(plain, plain_session, elsewhere['performer_id'])}/parts/0",
                           token=elsewhere["token"], json=PART_INFO),
                409, "this session takes no high-quality upload")
        # no consent
        refused(server.api("PUT", f"{base(room, session, quiet['performer_id'])}/parts/0",
                           token=quiet["token"], json=PART_INFO), 403, "consent required")

        # Ann's part, then chunks that are refused for what they carry
        declared = server.api("PUT", f"{ann_base}/parts/0", token=ann["token"], json=PART_INFO)
        assert declared.status_code == 201, declared.text
        before = files_under(uploads)
        chunk0 = EBML + b"\x00" * 1000
        refused(put_chunk(server, f"{ann_base}/parts/0/chunks/0", ann["token"], chunk0,
                          digest="0" * 64), 422, "X-Chunk-Sha256 does not match the chunk")
        garbage = b"RIFF" + b"\x00" * 1000
        response = put_chunk(server, f"{ann_base}/parts/0/chunks/0", ann["token"], garbage)
        assert response.status_code == 422 and "WebM" in response.json()["detail"], response.text
        assert files_under(uploads) == before
        response = put_chunk(server, f"{ann_base}/parts/0/chunks/1", ann["token"],
                             b"\x00" * (8 * 1024 * 1024 + 1))
        assert response.status_code == 413, response.text
        assert files_under(uploads) == before

        # a good chunk is acknowledged once, a repeat is idempotent, a changed one conflicts
        ok = put_chunk(server, f"{ann_base}/parts/0/chunks/0", ann["token"], chunk0)
        assert ok.status_code == 201, ok.text
        assert ok.json()["sha256"] == hashlib.sha256(chunk0).hexdigest()
        again = put_chunk(server, f"{ann_base}/parts/0/chunks/0", ann["token"], chunk0)
        assert again.status_code == 200 and again.json()["sha256"] == ok.json()["sha256"]
        before = files_under(uploads)
        changed = put_chunk(server, f"{ann_base}/parts/0/chunks/0", ann["token"], EBML + b"\x01" * 1000)
        assert changed.status_code == 409, changed.text
        assert files_under(uploads) == before

        # revocation: the pending chunks go, and every later request gets 410
        revoked = server.api("POST", f"/api/v1/performers/{ann['performer_id']}/revoke",
                             json={"reason": "asked"})
        assert revoked.status_code == 200, revoked.text
        kept = [f for f in files_under(uploads) if ann["performer_id"] in f]
        assert kept and not [f for f in kept if f.endswith(".chunk")], kept  # a marker stays
        before = files_under(uploads)
        refused(put_chunk(server, f"{ann_base}/parts/0/chunks/1", ann["token"], EBML + b"\x02"),
                410, "consent revoked: the high-quality copy was deleted")
    finally:
        for ws in sockets:
            await ws.close()
    stop_recording(server, room)
    stop_recording(server, plain)
