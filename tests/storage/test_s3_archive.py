"""Storing one session directory in S3 (moto's server over real HTTP): multipart with each
part's checksum, every object's sha256 the manifest's, the manifest last, a later revision
storing only what changed and deleting what is no longer listed; the local copy's removal."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from improv_capture.recorder.files import file_entry, write_json_atomic
from improv_capture.recorder.finalise import write_sha256sums
from improv_capture.recorder.withdraw import withdraw_performer
from improv_capture.settings import Settings
from improv_capture.storage import s3_client
from improv_capture.storage.local_copy import remove_local_media
from improv_capture.storage.s3_archive import UploadFailed, put_file, upload_session
from tests.storage.store import BUCKET, CREDENTIALS, MotoStore

pytestmark = pytest.mark.process  # real HTTP to a store on loopback (in this process)

PART = 5 * 1024 * 1024
KEY = "sessions/ses_unit/"


def make_session(root: Path, big: int = 2 * PART + 123) -> Path:
    """A finalised session: events, two performers (one larger than two parts)."""
    session = root / "sessions" / "ses_unit"
    (session / "performers").mkdir(parents=True)
    (session / "events.jsonl").write_text('{"t_s": 0, "type": "start"}\n')
    (session / "performers" / "p_ann.webm").write_bytes(os.urandom(big))
    (session / "performers" / "p_bob.webm").write_bytes(os.urandom(1000))
    performers = [{"performer_id": p, "display_name": p, "withdrawn": None,
                   "file": file_entry(session, session / "performers" / f"{p}.webm")}
                  for p in ("p_ann", "p_bob")]
    files = [file_entry(session, session / "events.jsonl")] + [p["file"] for p in performers]
    write_json_atomic(session / "manifest.json", {
        "schema_version": 1, "session_id": "ses_unit", "room_id": "room_x", "state": "complete",
        "started_at": "2026-01-01T00:00:00.000000Z", "revision": 1, "performers": performers,
        "markers": [], "prompts": [], "files": files})
    write_sha256sums(session)
    return session


def settings_for(store: MotoStore, **kw: Any) -> Settings:
    return Settings(s3_url=store.url, s3_bucket=BUCKET, s3_part_bytes=PART, **kw)


@pytest.fixture
def client(store: MotoStore) -> Any:
    return s3_client.make_client(settings_for(store), environ=dict(CREDENTIALS))


def manifest_of(session: Path) -> dict[str, Any]:
    return dict(json.loads((session / "manifest.json").read_text()))


def test_a_session_is_stored_whole_and_its_manifest_last(store: MotoStore, client: Any,
                                                         tmp_path: Path) -> None:
    session = make_session(tmp_path)
    target = s3_client.target(settings_for(store))
    store.record()
    copy = upload_session(client, target, session)
    assert (copy.bucket, copy.key, copy.revision) == (BUCKET, KEY, 1)
    manifest = manifest_of(session)
    objects = store.objects(KEY)
    assert set(objects) == {KEY + f["path"] for f in manifest["files"]} | {
        KEY + "manifest.json", KEY + "SHA256SUMS"}
    for entry in manifest["files"]:
        assert store.sha256(KEY + entry["path"]) == entry["sha256"]
    assert store.read(KEY + "manifest.json") == (session / "manifest.json").read_bytes()
    assert store.read(KEY + "SHA256SUMS") == (session / "SHA256SUMS").read_bytes()
    # the large file went in three parts; nothing was written after the manifest
    writes = store.recorded_writes()
    parts = [url for method, url in writes if "p_ann.webm" in url and "partNumber=" in url]
    assert len(parts) == 3, writes
    assert "manifest.json" in writes[-1][1] and "SHA256SUMS" in writes[-2][1], writes
    head = client.head_object(Bucket=BUCKET, Key=KEY + "performers/p_ann.webm")
    assert head["Metadata"]["sha256"] == manifest["files"][1]["sha256"]


def test_a_later_revision_stores_what_changed_and_deletes_what_left(
        store: MotoStore, client: Any, tmp_path: Path) -> None:
    session = make_session(tmp_path, big=1000)
    target = s3_client.target(settings_for(store))
    upload_session(client, target, session)
    assert withdraw_performer(session, "p_bob", "2026-01-01T01:00:00Z", "asked")
    store.record()
    copy = upload_session(client, target, session)
    assert copy.revision == 2 and copy.deleted == 1 and copy.uploaded == 2  # sums and manifest
    assert KEY + "performers/p_bob.webm" not in store.objects(KEY)
    assert json.loads(store.read(KEY + "manifest.json"))["revision"] == 2
    writes = store.recorded_writes()
    assert [m for m, _ in writes] == ["DELETE", "PUT", "PUT"], writes
    assert writes[0][1].endswith("p_bob.webm") and writes[-1][1].endswith("manifest.json")


def test_content_other_than_the_manifest_says_is_never_completed(
        store: MotoStore, client: Any, tmp_path: Path) -> None:
    session = make_session(tmp_path)
    target = s3_client.target(settings_for(store))
    big = session / "performers" / "p_ann.webm"
    entry = file_entry(session, big)
    with open(big, "r+b") as f:  # one byte of the last part changes after the manifest
        f.seek(2 * PART + 5)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    with pytest.raises(UploadFailed, match="does not match the manifest"):
        put_file(client, target, KEY + "performers/p_ann.webm", big, str(entry["sha256"]),
                 int(str(entry["bytes"])))
    assert store.objects(KEY) == {}
    assert client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    with pytest.raises(UploadFailed):
        upload_session(client, target, session)
    assert KEY + "manifest.json" not in store.objects(KEY)
    # a server that stops ends a multipart upload between two parts, completing nothing
    stopping = threading.Event()
    stopping.set()
    with pytest.raises(UploadFailed, match="stopping"):
        put_file(client, target, KEY + "x.webm", big, "0" * 64, 3 * PART, stopping)
    assert KEY + "x.webm" not in store.objects(KEY)
    assert client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_the_local_copy_goes_only_once_stored_and_sums_stay_whole(
        store: MotoStore, client: Any, tmp_path: Path) -> None:
    session = make_session(tmp_path, big=1000)
    target = s3_client.target(settings_for(store))
    assert not remove_local_media(session, 0)  # not the stored revision: kept
    upload_session(client, target, session)
    full_sums = (session / "SHA256SUMS").read_bytes()
    assert remove_local_media(session, 1)
    assert sorted(p.name for p in session.rglob("*") if p.is_file()) == ["SHA256SUMS", "manifest.json"]
    # a withdrawal after removal: the store loses the file, its SHA256SUMS keeps the others
    assert withdraw_performer(session, "p_ann", "2026-01-01T01:00:00Z", None)
    upload_session(client, target, session)
    sums = store.read(KEY + "SHA256SUMS").decode()
    names = [line.split("  ")[1] for line in sums.splitlines()]
    assert names == ["events.jsonl", "manifest.json", "performers/p_bob.webm"]
    manifest_digest = hashlib.sha256(store.read(KEY + "manifest.json")).hexdigest()
    assert f"{manifest_digest}  manifest.json" in sums
    assert set(full_sums.decode().splitlines()) >= {
        line for line in sums.splitlines() if "manifest" not in line}
    assert KEY + "performers/p_ann.webm" not in store.objects(KEY)


def test_settings_that_cannot_work_stop_the_start_in_one_line() -> None:
    for kw, error in (({"s3_url": "http://127.0.0.1:9000"}, "needs IMPROV_S3_BUCKET"),
                      ({"s3_url": "minio:9000", "s3_bucket": "b"}, "http:// or https://"),
                      ({"s3_url": "http://h", "s3_bucket": "b", "s3_prefix": "x"}, "end with /"),
                      ({"s3_url": "http://h", "s3_bucket": "b", "s3_part_bytes": 1024},
                       "greater than or equal")):
        with pytest.raises(ValidationError, match=error):
            Settings(**kw)
    with pytest.raises(s3_client.StoreConfigError, match="AWS_SECRET_ACCESS_KEY is not"):
        s3_client.credentials({"AWS_ACCESS_KEY_ID": "x"})
    assert Settings().s3_url is None and Settings().s3_keep_local
