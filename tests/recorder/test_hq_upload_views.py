"""What the upload store keeps of each upload between requests is the disk's, however the disk
changed: another store over the same files (another process of a cluster, a restarted server)
sees every acknowledgement, a line a crash cut short is no acknowledgement until it is whole,
and a chunk costs the store its own line, not a read of all the others."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from improv_capture.recorder.hq.errors import ChunkConflict, Revoked, UploadClosed
from improv_capture.recorder.hq.uploads import EBML_MAGIC, UploadStore
from tests.recorder.hq_media import LIMITS, part_info, sha256

pytestmark = pytest.mark.unit

SID, PID = "ses_20261201T120000Z_abcdef", "p_0123456789ab"


def body(index: int) -> bytes:
    return (EBML_MAGIC if index == 0 else b"") + index.to_bytes(4, "big") * 4


def put(store: UploadStore, index: int, data: bytes | None = None, part: int = 0) -> dict[str, Any]:
    data = body(index) if data is None else data
    return store.put_chunk(SID, PID, part, index, data, sha256(data), index + 1, LIMITS)


def acked(store: UploadStore, part: int = 0) -> list[list[int]]:
    return next(p["acked"] for p in store.status(SID, PID)["parts"] if p["part"] == part)


@pytest.fixture
def root() -> Iterator[Path]:
    """A tmpfs directory where there is one: these tests count reads, and thousands of
    fsyncs on a disk would only make them slow."""
    shm = Path("/dev/shm")
    path = Path(tempfile.mkdtemp(prefix="hq-views-", dir=shm if shm.is_dir() else None))
    yield path / "uploads"
    shutil.rmtree(path)


def test_another_store_over_the_same_files_sees_every_acknowledgement(root: Path) -> None:
    mine, theirs = UploadStore(root), UploadStore(root)
    mine.declare_part(SID, PID, 0, part_info(1.7e12))
    for index in range(5):
        put(mine, index)
    assert acked(theirs) == [[0, 4]]
    assert theirs.status(SID, PID)["bytes"] == mine.status(SID, PID)["bytes"] == 4 + 5 * 16
    for index in (5, 6, 8):  # more lines after the other one looked
        put(mine, index)
    assert acked(theirs) == [[0, 6], [8, 8]]
    assert theirs.status(SID, PID)["acked_chunks"] == 8

    # the other one writes: this one's next request sees its chunk, as a repeat or a conflict
    assert put(theirs, 7)["upload"]["acked_chunks"] == 9
    assert put(mine, 7)["repeat"] is True
    with pytest.raises(ChunkConflict):
        put(mine, 7, b"another body")
    assert acked(mine) == [[0, 8]]
    # and upload.json: a part it declared, the end it recorded
    theirs.declare_part(SID, PID, 1, part_info(1.8e12, "device_change"))
    assert put(mine, 0, part=1)["upload"]["recorded_chunks"] == 9 + 1
    theirs.end_part(SID, PID, 1, 1)
    assert mine.end_part(SID, PID, 0, 9)["complete"] is True
    assert theirs.status(SID, PID)["state"] == mine.status(SID, PID)["state"] == "uploaded"
    # a restarted server reads the same
    assert UploadStore(root).status(SID, PID) == mine.status(SID, PID)

    theirs.settle(SID, PID, "complete")
    with pytest.raises(UploadClosed):
        put(mine, 9)
    theirs.delete(SID, PID)
    assert mine.revoked(SID, PID) and mine.status(SID, PID)["state"] == "revoked"
    with pytest.raises(Revoked):
        put(mine, 9)


def test_a_line_cut_short_is_no_acknowledgement_until_it_is_whole(root: Path) -> None:
    store = UploadStore(root)
    store.declare_part(SID, PID, 0, part_info(1.7e12))
    for index in range(3):
        put(store, index)
    part = store.performer_dir(SID, PID) / "p0000"
    acks = part / "acks.jsonl"

    def crash_while_acknowledging(index: int, cut: int | None = None) -> None:
        """What a crash leaves: the chunk written, its line without the newline (or cut at
        ``cut`` bytes)."""
        (part / f"{index:06d}.chunk").write_bytes(body(index))
        line = json.dumps({"index": index, "bytes": 16, "sha256": sha256(body(index)),
                           "at": "2026-12-01T12:00:01.000000Z", "recorded": index + 1})
        with open(acks, "a") as f:
            f.write(line[:cut])

    crash_while_acknowledging(3)  # all of it but the newline
    assert acked(store) == acked(UploadStore(root)) == [[0, 2]]
    assert store.status(SID, PID)["acked_chunks"] == 3
    # the next chunk ends the line first: it was whole, so it acknowledges chunk 3
    assert put(store, 4)["upload"]["acked_chunks"] == 5
    assert acked(store) == acked(UploadStore(root)) == [[0, 4]]
    assert put(store, 3)["repeat"] is True  # the page sends it again: it is there
    assert acks.read_text().endswith("\n")

    crash_while_acknowledging(5, cut=30)  # half a line
    assert acked(store) == [[0, 4]]
    assert put(store, 6)["upload"]["acked_chunks"] == 6  # the half line is skipped
    assert acked(store) == acked(UploadStore(root)) == [[0, 4], [6, 6]]
    assert put(store, 5)["repeat"] is False  # so chunk 5 is written and acknowledged again
    assert acked(store) == acked(UploadStore(root)) == [[0, 6]]

    # a whole line cut before its newline decides what its index holds, even before it is read
    crash_while_acknowledging(7)
    with pytest.raises(ChunkConflict):
        put(UploadStore(root), 7, b"another body")
    assert (part / "000007.chunk").read_bytes() == body(7)
    lines = acks.read_text().splitlines()
    assert acks.read_text().endswith("\n") and len(lines) == 9  # 8 acknowledgements, 1 half line


def test_a_chunk_costs_its_own_line(root: Path) -> None:
    store, watcher = UploadStore(root), UploadStore(root)
    store.declare_part(SID, PID, 0, part_info(1.7e12))
    acks = store.performer_dir(SID, PID) / "p0000" / "acks.jsonl"
    read_at: dict[int, int] = {}
    for index in range(2000):
        put(store, index)
        if index % 100 == 99:  # the page asks for the status now and then, so does another view
            assert acked(store) == acked(watcher) == [[0, index]]
        if index + 1 in (1000, 2000):
            read_at[index + 1] = store.acks_read
            # every byte of acks.jsonl was read once (each line by the request that wrote it),
            # by this store and by the one that looked from the side
            assert store.acks_read == watcher.acks_read == acks.stat().st_size
    # linear: the second thousand chunks cost what the first did (their lines are a little
    # longer: 4-digit indices); reading every line per chunk would be 1000 times that
    longest = max(len(line) for line in acks.read_bytes().splitlines(keepends=True))
    assert read_at[2000] - read_at[1000] <= 1000 * longest
    assert read_at[2000] - read_at[1000] <= 1.02 * read_at[1000]
    # upload.json was read after it was written, never per chunk
    assert store.records_read == watcher.records_read == 1


def test_the_kept_uploads_are_bounded_and_an_evicted_one_is_read_again(root: Path) -> None:
    store = UploadStore(root, cache_acks=30)
    other = "p_another"
    for performer in (PID, other):
        store.declare_part(SID, performer, 0, part_info(1.7e12))
    for index in range(20):
        put(store, index)
    read = store.acks_read
    for index in range(20):  # the other upload pushes this one out: 2 x 21 > 30
        store.put_chunk(SID, other, 0, index, body(index), sha256(body(index)), None, LIMITS)
    assert store.acks_read - read == (store.performer_dir(SID, other) / "p0000" / "acks.jsonl").stat().st_size
    read = store.acks_read
    assert acked(store) == [[0, 19]]  # read again from disk, all of it
    assert store.acks_read - read == (store.performer_dir(SID, PID) / "p0000" / "acks.jsonl").stat().st_size
    assert put(store, 20)["upload"]["acked_chunks"] == 21


def test_a_revocation_marks_sessions_nothing_was_uploaded_into_yet(root: Path) -> None:
    store = UploadStore(root)
    assert not store.revoked(SID, PID)
    assert store.revoke_performer(PID, also=(SID,)) == [SID]
    assert store.revoked(SID, PID) and store.status(SID, PID)["state"] == "revoked"
    with pytest.raises(Revoked):
        store.declare_part(SID, PID, 0, part_info(1.7e12))
