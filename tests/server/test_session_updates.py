"""A finalised session that changes later (a high-quality copy joins, a performer withdraws):
the catalog's revision, the `session.updated` event and webhook, and `improv-capture fetch`
mirroring the change without downloading again what did not change. Real server processes,
real recorded sessions; the server-side change is made the way the server makes it
(recorder.manifest.rewrite_manifest, then Downstream.session_updated on the same data dir)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from improv_capture.cluster.internal_api import PrimaryNotifier
from improv_capture.downstream.service import Downstream
from improv_capture.recorder.files import file_entry
from improv_capture.recorder.manifest import rewrite_manifest
from improv_capture.settings import Settings
from improv_capture.tools.fetch import PARTIAL_DIR, REPLACED_DIR, STATE_FILE, Mirror
from tests.helpers import (
    PREENCODED_BOTS,
    BotFactory,
    ServerProcess,
    fetch,
    manifest,
    record_session,
    stored_events,
    verify,
    wait_for,
    write_manifest_only,
)
from tests.server.test_downstream import hooked_server, receiver  # noqa: F401
from tests.webhooks import SECRET, Receiver

# untimed, its bots loop pre-encoded media: beside the media tests
pytestmark = [pytest.mark.process, PREENCODED_BOTS]


def add_hq_copy(session_dir: Path, performer_id: str) -> dict[str, Any]:
    """What the server does when a performer's high-quality copy joins, as far as a mirror
    sees it: a new file, listed, in one manifest rewrite (a real WebM: the live copy stands in
    for the aligned one; the performer's ``hq`` entry, which verify checks, is left out)."""

    def change(archive: dict[str, Any]) -> None:
        hq = session_dir / f"performers/{performer_id}.hq.webm"
        shutil.copyfile(session_dir / f"performers/{performer_id}.webm", hq)
        archive["files"].append(file_entry(session_dir, hq))

    written = rewrite_manifest(session_dir, change)
    assert written is not None
    return written


def announce(server: ServerProcess, hook: Receiver, session_dir: Path, detail: dict[str, Any]) -> None:
    """Downstream.session_updated in this process against the server's data dir (where the
    server's own code calls it); its deliverer sends the webhook."""

    async def run() -> None:
        downstream = Downstream(Settings(
            data_dir=server.data_dir, webhook_urls=[hook.url], webhook_allow_private=True,
            webhook_backoff_s=0.2), SECRET)
        await downstream.open()
        downstream.deliverer.start()
        try:
            await downstream.session_updated(session_dir, detail)
            deadline = time.monotonic() + 10
            while not any(e["type"] == "session.updated" for e in hook.accepted.values()):
                assert time.monotonic() < deadline, hook.attempts
                await asyncio.sleep(0.05)
        finally:
            await downstream.stop()
            await downstream.close()

    asyncio.run(run())


def listed(server: ServerProcess, session_id: str) -> dict[str, Any]:
    items = server.api("GET", "/api/v1/sessions").json()["items"]
    return dict(next(s for s in items if s["session_id"] == session_id))


def test_a_later_high_quality_copy_reaches_events_webhooks_and_the_mirror(
    hooked_server: ServerProcess, receiver: Receiver, bots: BotFactory, tmp_path: Path  # noqa: F811
) -> None:
    server = hooked_server
    token = server.api("POST", "/api/v1/tokens", json={"role": "reader", "label": "job"}).json()["token"]
    session_id, invites = record_session(server, bots, ["Ann", "Ben"])
    ann, ben = (i["performer_id"] for i in invites)
    session_dir = server.session_dir(session_id)
    first = manifest(session_dir)
    assert listed(server, session_id)["revision"] == first["revision"] == 1
    dest = tmp_path / "mirror"
    assert fetch(server, token, dest).returncode == 0
    local = dest / session_id
    inodes = {f["path"]: (local / f["path"]).stat().st_ino for f in first["files"]}

    # the high-quality copy joins: a new revision, indexed and announced
    second = add_hq_copy(session_dir, ann)
    assert second["revision"] == 2
    detail = {"performer_id": ann, "hq": {"state": "complete"}}  # as rooms/hq_uploads.py sends
    announce(server, receiver, session_dir, detail)
    summary = listed(server, session_id)
    assert (summary["revision"], summary["updated_at"]) == (2, second["updated_at"])
    expected = {**detail, "session_id": session_id, "room_id": second["room_id"], "revision": 2,
                "updated_at": second["updated_at"], "state": "complete", "reason": None}
    event = stored_events(server)[-1]
    assert (event["type"], event["data"]) == ("session.updated", expected)
    hooked = next(e for e in receiver.accepted.values() if e["type"] == "session.updated")
    assert hooked["id"] == event["id"] and hooked["data"] == expected

    # an interrupted attempt at another revision left a file begun for other content (its
    # manifest says so): it is not resumed
    hq_path = f"performers/{ann}.hq.webm"
    partial = dest / PARTIAL_DIR / session_id
    (partial / "performers").mkdir(parents=True)
    (partial / hq_path).write_bytes(b"\x1a\x45\xdf\xa3 other content" * 100)
    (partial / "manifest.json").write_text(json.dumps({**second, "files": [
        {**f, "sha256": "0" * 64} if f["path"] == hq_path else f for f in second["files"]]}))

    # fetch mirrors the new file only: the unchanged ones are linked, not downloaded
    out = io.StringIO()
    mirror = Mirror(server.url, token, dest, progress=out)
    assert mirror.run() == 0, out.getvalue()
    assert (mirror.fetched, mirror.updated) == ([], [session_id])
    assert "fetched 0 session(s)" in out.getvalue() and "updated 1 session(s)" in out.getvalue()
    own = sum((session_dir / n).stat().st_size for n in ("manifest.json", "SHA256SUMS"))
    hq_entry = next(f for f in second["files"] if f["path"] == hq_path)
    assert mirror.bytes_downloaded == hq_entry["bytes"] + own
    assert mirror.bytes_reused == sum(f["bytes"] for f in first["files"])
    assert {f["path"]: (local / f["path"]).stat().st_ino for f in first["files"]} == inodes
    assert (local / hq_path).read_bytes() == (session_dir / hq_path).read_bytes()
    assert (local / "manifest.json").read_bytes() == (session_dir / "manifest.json").read_bytes()
    assert manifest(local)["revision"] == 2
    assert verify(local)[0] == 0
    assert not (dest / PARTIAL_DIR / session_id).exists() and not (dest / REPLACED_DIR / session_id).exists()

    # a withdrawal is a revision too; a crash between the two renames of an earlier update
    # left the old copy aside: the next run puts it back, then updates it
    revoked = server.api("POST", f"/api/v1/performers/{ben}/revoke", json={"reason": "asked"})
    assert revoked.status_code == 200 and revoked.json()["sessions"] == [session_id]
    assert listed(server, session_id)["revision"] == 3
    hq_inode = (local / hq_path).stat().st_ino
    os.replace(local, dest / REPLACED_DIR / session_id)
    done = fetch(server, token, dest)
    assert done.returncode == 0, done.stderr
    assert f"restored {session_id}" in done.stderr and f"withdrew {ben} from {session_id}" in done.stderr
    assert "fetched 0 session(s), 0.0 MB; updated 1 session(s)" in done.stderr  # nothing big again
    assert not list((local / "performers").glob(f"{ben}.*"))
    assert (local / hq_path).stat().st_ino == hq_inode
    assert manifest(local)["revision"] == 3 and verify(local)[0] == 0
    assert json.loads((dest / STATE_FILE).read_text())["stale"] == []
    assert not any((dest / REPLACED_DIR).iterdir())

    # a withdrawal whose update fails (a file that must be downloaded again arrives damaged):
    # the performer's files, live and high-quality, leave the local copy all the same, and
    # the next run brings the whole new revision
    events_path = "events.jsonl"
    good = (session_dir / events_path).read_bytes()
    damaged = bytes([good[0] ^ 0xFF]) + good[1:]
    assert server.api("POST", f"/api/v1/performers/{ann}/revoke", json={}).status_code == 200
    for copy in (local / events_path, session_dir / events_path):
        copy.write_bytes(damaged)
    failed = fetch(server, token, dest)
    assert failed.returncode == 1 and f"withdrew {ann} from {session_id}" in failed.stderr
    assert f"{session_id}/{events_path}: sha256 does not match" in failed.stderr
    assert not list((local / "performers").glob(f"{ann}.*")) and manifest(local)["revision"] == 3
    assert json.loads((dest / STATE_FILE).read_text())["stale"] == [session_id]
    (session_dir / events_path).write_bytes(good)
    mirror = Mirror(server.url, token, dest, progress=io.StringIO())
    assert mirror.run() == 0 and mirror.updated == [session_id]
    own = sum((session_dir / n).stat().st_size for n in ("manifest.json", "SHA256SUMS"))
    assert mirror.bytes_downloaded == len(good) + own
    assert manifest(local)["revision"] == 4 and verify(local)[0] == 0
    assert json.loads((dest / STATE_FILE).read_text())["stale"] == []
    again = fetch(server, token, dest)
    assert "fetched 0 session(s), 0.0 MB; updated 0 session(s)" in again.stderr


def worker_url(cluster: ServerProcess, index: int) -> str:
    """A worker's own address (the router never forwards /internal), from its command line."""
    pid = cluster.api("GET", "/api/v1/status").json()["workers"][index]["pid"]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return f"http://127.0.0.1:{argv[argv.index('--port') + 1]}"


async def test_a_worker_forwards_session_updates_to_the_primary(tmp_path: Path) -> None:
    """What a worker other than the primary does: PrimaryNotifier.session_updated reaches the
    primary's catalog and events through the internal API. Sessions indexed before revisions
    existed list as revision 1."""
    session_dir = tmp_path / "data" / "sessions" / "ses_old"
    write_manifest_only(session_dir, 1_700_000_000, "complete")
    cluster = ServerProcess(tmp_path / "data", env={"IMPROV_WORKERS": "2"}).start(timeout=60)
    try:
        summary = listed(cluster, "ses_old")
        assert (summary["revision"], summary["updated_at"]) == (1, summary["ended_at"])
        def change(archive: dict[str, Any]) -> None:
            archive["reason"] = "a later change"

        rewrite_manifest(session_dir, change)
        notifier = PrimaryNotifier(worker_url(cluster, 0), cluster.token)
        notifier.start()
        try:
            await notifier.session_updated(session_dir, {"change": "test"})
        finally:
            await notifier.stop()
        assert listed(cluster, "ses_old")["revision"] == 2
        event = wait_for(lambda: next((e for e in stored_events(cluster)
                                       if e["type"] == "session.updated"), None), 5, "the event")
        assert event["data"]["change"] == "test" and event["data"]["revision"] == 2
        assert event["data"]["reason"] == "a later change"
        refused = await asyncio.to_thread(
            cluster.api, "POST", "/internal/v1/sessions/ses_old/updated", json={"detail": {}})
        assert refused.status_code == 404  # the router keeps the internal API inside
    finally:
        cluster.stop()
