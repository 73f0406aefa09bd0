"""One session directory into S3-compatible storage, so that a reader listing the bucket
never sees a partial session: every media file first (large ones in parts, each part's
SHA-256 and MD5 sent for the store to check, each whole file's SHA-256 checked against the
manifest before the upload is completed), then objects no longer listed are deleted (a
withdrawn performer's files leave the store), then SHA256SUMS, then manifest.json last.

A later revision uploads only what changed: an object whose stored size and ``sha256``
metadata match the manifest stays. So the store itself says what is there, and an upload
interrupted anywhere (a crash, the store down) is simply done again. Blocking: run it in a
worker thread.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from improv_capture.recorder.files import (
    SUMS,
    SumsError,
    format_sums,
    read_sums,
    safe_path,
)
from improv_capture.recorder.manifest import session_lock
from improv_capture.storage.s3_client import StoreTarget

MANIFEST = "manifest.json"
#: the object metadata (x-amz-meta-sha256) that says which content an object holds
SHA256_META = "sha256"
CONTENT_TYPES = {".webm": "video/webm", ".json": "application/json",
                 ".jsonl": "application/x-ndjson"}


#: S3's limit of parts in one multipart upload: a larger file gets larger parts.
MAX_PARTS = 10_000


class UploadFailed(Exception):
    """The session could not be stored this time (retried later): a file changed or vanished
    under the upload, or the store did not confirm what it received."""


@dataclass(frozen=True)
class Snapshot:
    """A session as one revision: its manifest's bytes and the SHA256SUMS the store gets."""

    manifest_bytes: bytes
    manifest: dict[str, Any]
    sums: bytes

    @property
    def revision(self) -> int:
        return int(self.manifest.get("revision") or 1)

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return {f["path"]: f for f in self.manifest.get("files", [])}


@dataclass(frozen=True)
class StoredCopy:
    bucket: str
    key: str
    revision: int
    uploaded: int  # objects written (manifest and sums included)
    deleted: int


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def store_sums(local_sums: dict[str, str], manifest_bytes: bytes, files: dict[str, dict[str, Any]],
               session_dir: Path) -> bytes:
    """SHA256SUMS as the store holds it: every listed file and the manifest. The local file
    covers what is on disk; a file whose local copy was removed (IMPROV_S3_KEEP_LOCAL=false)
    keeps its line from the manifest, which a later rewrite of the local SHA256SUMS drops."""
    digests = {name: digest for name, digest in local_sums.items()
               if name in files or (session_dir / name).is_file()}
    for path, entry in files.items():
        digests.setdefault(path, entry["sha256"])
    digests[MANIFEST] = hashlib.sha256(manifest_bytes).hexdigest()
    return format_sums(digests)


def snapshot(session_dir: Path) -> Snapshot:
    """The manifest and SHA256SUMS as one consistent pair (read under the session's lock)."""
    try:
        with session_lock(session_dir):
            manifest_bytes = (session_dir / MANIFEST).read_bytes()
            local_sums = read_sums(session_dir, missing_ok=True)
    except SumsError as exc:
        raise UploadFailed(f"the local {exc}") from None
    manifest = json.loads(manifest_bytes)
    files = {f["path"]: f for f in manifest.get("files", [])}
    bad = [p for p in files if not safe_path(p)]
    if bad:
        raise UploadFailed(f"the manifest names files outside the session: {bad}")
    return Snapshot(manifest_bytes, manifest,
                    store_sums(local_sums, manifest_bytes, files, session_dir))


def content_type(path: str) -> str:
    return CONTENT_TYPES.get(PurePosixPath(path).suffix, "application/octet-stream") \
        if path != SUMS else "text/plain; charset=utf-8"


def stored_objects(client: Any, bucket: str, prefix: str) -> set[str]:
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


def holds(client: Any, bucket: str, key: str, sha256: str, size: int) -> bool:
    """Whether the stored object is this content (size and the sha256 it was stored with)."""
    head = client.head_object(Bucket=bucket, Key=key)
    return bool(head["ContentLength"] == size and head.get("Metadata", {}).get(SHA256_META) == sha256)


def put_bytes(client: Any, bucket: str, key: str, data: bytes, ctype: str) -> None:
    """One request: the store checks the body against its MD5 and SHA-256 (which for a
    whole object is the manifest's digest)."""
    digest = hashlib.sha256(data)
    response = client.put_object(
        Bucket=bucket, Key=key, Body=data, ContentType=ctype,
        ContentMD5=b64(hashlib.md5(data).digest()),
        ChecksumAlgorithm="SHA256", ChecksumSHA256=b64(digest.digest()),
        Metadata={SHA256_META: digest.hexdigest()},
    )
    echoed = response.get("ChecksumSHA256")
    if echoed is not None and echoed != b64(digest.digest()):
        raise UploadFailed(f"{key}: the store holds other content than was sent")


def put_file(client: Any, target: StoreTarget, key: str, path: Path, sha256: str, size: int,
             stopping: threading.Event | None = None) -> None:
    """A file whose manifest entry says ``sha256`` and ``size``: read once, hashed as it is
    sent; content that is not the manifest's is never completed in the store. ``stopping``
    (the server stops) ends a multipart upload between two parts."""
    ctype = content_type(path.name)
    part_bytes = max(target.part_bytes, -(-size // MAX_PARTS))
    if size <= part_bytes:
        data = path.read_bytes()
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
            raise UploadFailed(f"{key}: the local file does not match the manifest")
        put_bytes(client, target.bucket, key, data, ctype)
        return
    upload_id = client.create_multipart_upload(
        Bucket=target.bucket, Key=key, ContentType=ctype, ChecksumAlgorithm="SHA256",
        Metadata={SHA256_META: sha256},
    )["UploadId"]
    try:
        whole = hashlib.sha256()
        parts = []
        sent = 0
        with open(path, "rb") as f:
            while part := f.read(part_bytes):
                if stopping is not None and stopping.is_set():
                    raise UploadFailed(f"{key}: the server is stopping")
                whole.update(part)
                sent += len(part)
                checksum = b64(hashlib.sha256(part).digest())
                response = client.upload_part(
                    Bucket=target.bucket, Key=key, UploadId=upload_id, PartNumber=len(parts) + 1,
                    Body=part, ContentMD5=b64(hashlib.md5(part).digest()),
                    ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum,
                )
                if response.get("ChecksumSHA256", checksum) != checksum:
                    raise UploadFailed(f"{key}: part {len(parts) + 1} arrived changed")
                parts.append({"PartNumber": len(parts) + 1, "ETag": response["ETag"],
                              "ChecksumSHA256": checksum})
        if whole.hexdigest() != sha256 or sent != size:
            raise UploadFailed(f"{key}: the local file does not match the manifest")
        client.complete_multipart_upload(
            Bucket=target.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    except BaseException:
        try:
            client.abort_multipart_upload(Bucket=target.bucket, Key=key, UploadId=upload_id)
        except Exception:  # noqa: BLE001 - the store may be the reason we are here
            pass
        raise
    if not holds(client, target.bucket, key, sha256, size):
        raise UploadFailed(f"{key}: the store does not hold what was sent")


def upload_session(client: Any, target: StoreTarget, session_dir: Path,
                   stopping: threading.Event | None = None) -> StoredCopy:
    """Store the session's current revision (see the module's docstring for the order)."""
    snap = snapshot(session_dir)
    session_key = target.session_key(session_dir.name)
    stored = stored_objects(client, target.bucket, session_key)
    uploaded = 0
    for path, entry in snap.files.items():
        key = session_key + path
        if key in stored and holds(client, target.bucket, key, entry["sha256"], entry["bytes"]):
            continue
        local = session_dir / path
        if not local.is_file():
            raise UploadFailed(f"{session_dir.name}/{path} is neither here nor in the store")
        if stopping is not None and stopping.is_set():
            raise UploadFailed(f"{session_dir.name}: the server is stopping")
        put_file(client, target, key, local, entry["sha256"], entry["bytes"], stopping)
        uploaded += 1
    keep = {session_key + p for p in (*snap.files, MANIFEST, SUMS)}
    gone = sorted(stored - keep)
    for key in gone:
        client.delete_object(Bucket=target.bucket, Key=key)
    put_bytes(client, target.bucket, session_key + SUMS, snap.sums, content_type(SUMS))
    put_bytes(client, target.bucket, session_key + MANIFEST, snap.manifest_bytes,
              content_type(MANIFEST))
    return StoredCopy(target.bucket, session_key, snap.revision, uploaded + 2, len(gone))


def presigned_get(client: Any, bucket: str, key: str, ttl_s: int) -> str:
    """A URL anyone holding it may GET (Range included) for ``ttl_s`` seconds."""
    return str(client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=ttl_s))
