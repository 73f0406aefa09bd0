"""The upload store of high-quality copies: nothing acknowledged is lost or changed, every
refusal says why (and maps to its HTTP status), and revocation leaves nothing behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from improv_capture.recorder.hq.errors import (
    BadUpload,
    ChunkConflict,
    ChunkDigestError,
    NotWebm,
    Revoked,
    UploadClosed,
    UploadConflict,
    UploadTooLarge,
)
from improv_capture.recorder.hq.uploads import (
    EBML_MAGIC,
    UploadLimits,
    UploadStore,
    read_upload,
    upload_cap_bytes,
)
from tests.recorder.hq_media import LIMITS, part_info, sha256

pytestmark = pytest.mark.unit

SID, PID = "ses_20261201T120000Z_abcdef", "p_0123456789ab"
CHUNK0 = EBML_MAGIC + b"\x9f" * 100


@pytest.fixture
def store(tmp_path: Path) -> UploadStore:
    store = UploadStore(tmp_path / "uploads")
    store.declare_part(SID, PID, 0, part_info(1.7e12))
    return store


def put(store: UploadStore, index: int, data: bytes, part: int = 0,
        limits: UploadLimits = LIMITS) -> dict[str, Any]:
    return store.put_chunk(SID, PID, part, index, data, sha256(data), index + 1, limits)


def answer(result: dict[str, Any]) -> dict[str, Any]:
    """A store's answer without its ``upload`` summary (what the HTTP routes send)."""
    return {k: v for k, v in result.items() if k != "upload"}


def test_part_info_is_idempotent_and_checked(store: UploadStore) -> None:
    again = store.declare_part(SID, PID, 0, part_info(1.7e12))
    assert answer(again) == {"part": 0, "repeat": True}
    assert again["upload"] == {"state": "pending", "complete": False, "acked_chunks": 0,
                               "recorded_chunks": 0, "bytes": 0, "first_chunk_at": None,
                               "last_chunk_at": None}
    with pytest.raises(UploadConflict, match="part 0 was declared with different info") as conflict:
        store.declare_part(SID, PID, 0, part_info(1.8e12))
    assert conflict.value.status == 409
    bad = [
        ({**part_info(1.7e12), "mime_type": "video/mp4"}, "mime_type must be a WebM type"),
        ({**part_info(1.7e12), "started_at_ms": "soon"}, "started_at_ms must be"),
        ({**part_info(1.7e12), "reason": "whim"}, "reason must be one of"),
        ({**part_info(1.7e12), "video": {"width": -3}}, r"video.width must be an integer"),
        ({**part_info(1.7e12), "audio": {"echo_cancellation": "no"}}, "audio.echo_cancellation"),
        ({**part_info(1.7e12), "note": "x" * 17000}, "part info over 16384 bytes"),
        ([1, 2], "must be a JSON object"),
    ]
    for info, message in bad:
        with pytest.raises(BadUpload, match=message) as refused:
            store.declare_part(SID, PID, 1, info)
        assert refused.value.status == 422 and isinstance(refused.value, ValueError)
    with pytest.raises(BadUpload, match="part must be 0..63"):
        store.declare_part(SID, PID, 64, part_info(1.7e12))
    with pytest.raises(BadUpload, match="not an id"):
        store.declare_part("../etc", PID, 1, part_info(1.7e12))


def test_chunks_are_acknowledged_once_and_never_changed(store: UploadStore) -> None:
    first = put(store, 0, CHUNK0)
    assert answer(first) == {"part": 0, "index": 0, "bytes": 104, "sha256": sha256(CHUNK0),
                             "repeat": False}
    assert first["upload"]["acked_chunks"] == 1 and first["upload"]["bytes"] == 104
    assert first["upload"]["first_chunk_at"] == first["upload"]["last_chunk_at"] is not None
    again = put(store, 0, CHUNK0)  # the page sends it again: same answer
    assert answer(again) == {**answer(first), "repeat": True} and again["upload"] == first["upload"]
    with pytest.raises(ChunkConflict, match="chunk 0 of part 0 was acknowledged with a different body") as conflict:
        put(store, 0, EBML_MAGIC + b"other")
    assert conflict.value.status == 409
    part = read_upload(store.performer_dir(SID, PID)).parts[0]
    assert part.chunk_path(0).read_bytes() == CHUNK0
    with pytest.raises(ChunkDigestError, match="X-Chunk-Sha256 does not match the chunk") as wrong:
        store.put_chunk(SID, PID, 0, 1, b"data", sha256(b"other data"), None, LIMITS)
    assert wrong.value.status == 422
    with pytest.raises(UploadConflict, match="part 5 is not declared"):
        put(store, 0, CHUNK0, part=5)
    with pytest.raises(BadUpload, match="index must be 0..999999"):
        put(store, 1_000_000, b"x")
    assert not part.chunk_path(1).exists()


def test_a_part_must_start_as_webm(store: UploadStore) -> None:
    store.declare_part(SID, PID, 1, part_info(1.7e12, "device_change"))
    with pytest.raises(NotWebm, match="not a WebM stream") as refused:
        put(store, 0, b"RIFF....WAVEfmt ", part=1)
    assert refused.value.status == 422
    assert put(store, 1, b"any middle bytes", part=1)["repeat"] is False  # only chunk 0 has a header


def test_caps(store: UploadStore) -> None:
    limits = UploadLimits(max_chunk_bytes=200, max_total_bytes=300)
    with pytest.raises(UploadTooLarge, match="chunk over 200 bytes") as big:
        put(store, 0, CHUNK0 + b"x" * 200, limits=limits)
    assert big.value.status == 413
    put(store, 0, CHUNK0, limits=limits)
    put(store, 1, b"y" * 150, limits=limits)
    with pytest.raises(UploadTooLarge, match="upload cap of 300 bytes reached"):
        put(store, 2, b"z" * 100, limits=limits)
    # 4 Mbit/s + 128 kbit/s over a 10-minute take, plus 30 s, half again, plus 4 MiB
    assert upload_cap_bytes(4_000_000, 128_000, 600) == 487_620_000 + 4 * 1024 * 1024


def test_status_resume_and_end(store: UploadStore) -> None:
    assert store.status(SID, PID)["state"] == "pending"
    for index in (0, 1, 2, 4, 5):
        put(store, index, CHUNK0 if index == 0 else bytes([index]) * 10)
    status = store.status(SID, PID, LIMITS)
    assert status["state"] == "uploading" and not status["complete"]
    assert status["parts"] == [{"part": 0, "acked": [[0, 2], [4, 5]], "ended": False, "chunks": None,
                                "recorded": 6, "bytes": 144}]
    assert status["acked_chunks"] == 5 and status["bytes"] == 144
    assert status["max_bytes"] == LIMITS.max_total_bytes
    with pytest.raises(UploadConflict, match="cannot end at 5 chunks: chunk 5 is acknowledged"):
        store.end_part(SID, PID, 0, 5)
    assert answer(store.end_part(SID, PID, 0, 6)) == {"part": 0, "chunks": 6, "complete": False,
                                                      "repeat": False}
    assert store.end_part(SID, PID, 0, 6)["repeat"] is True
    with pytest.raises(UploadConflict, match="ended with 6 chunks already"):
        store.end_part(SID, PID, 0, 7)
    with pytest.raises(UploadConflict, match="part 0 ended with 6 chunks"):
        put(store, 6, b"late")
    assert list(store.pending()) == [(SID, PID)]
    filled = put(store, 3, b"\x03" * 10)  # the hole, resent after a reload
    assert filled["upload"]["state"] == "uploaded" and filled["upload"]["complete"]
    status = store.status(SID, PID)
    assert status["state"] == "uploaded" and status["complete"]
    assert status["parts"][0]["acked"] == [[0, 5]]


def test_settled_and_revoked_uploads_refuse_everything(store: UploadStore) -> None:
    put(store, 0, CHUNK0)
    store.end_part(SID, PID, 0, 1)
    store.settle(SID, PID, "complete")
    assert list(store.performer_dir(SID, PID).glob("p*/*.chunk")) == []
    assert list(store.pending()) == []
    with pytest.raises(UploadClosed, match=r"the upload is closed \(complete\)") as closed:
        put(store, 0, CHUNK0)
    assert closed.value.status == 409
    assert store.status(SID, PID)["state"] == "complete"

    store.declare_part(SID, "p_other", 0, part_info(1.7e12))
    put_other = store.put_chunk(SID, "p_other", 0, 0, CHUNK0, sha256(CHUNK0), None, LIMITS)
    assert put_other["repeat"] is False
    assert store.revoke_performer("p_other") == [SID]
    left = sorted(p.name for p in store.performer_dir(SID, "p_other").iterdir())
    assert left == [".lock", "upload.json"]  # the marker; every chunk is gone
    for attempt in (
        lambda: store.put_chunk(SID, "p_other", 0, 0, CHUNK0, sha256(CHUNK0), None, LIMITS),
        lambda: store.declare_part(SID, "p_other", 1, part_info(1.7e12)),
        lambda: store.end_part(SID, "p_other", 0, 1),
    ):
        with pytest.raises(Revoked, match="consent revoked: the high-quality copy was deleted") as gone:
            attempt()
        assert gone.value.status == 410
    assert store.status(SID, "p_other")["state"] == "revoked"
