"""WebDataset shards: ``webdataset/<session_id>-<NNNN>.tar``, one sample per performer per
take as ``<key>.json``, ``<key>.wav`` and ``<key>.webm`` (when there is video), in sample
order. Shards are per session, so a change in one session (a performer withdrawn) rewrites
only that session's shards. Each shard holds at most ``shard_max_bytes``; a sample larger
than that goes alone in its own shard (export.json lists it).

The tar is GNU format with fixed metadata (mtime 0, uid/gid 0, no user or group names, mode
0644): the same samples give the same bytes."""

from __future__ import annotations

import io
import tarfile
from typing import Any, BinaryIO

from improv_capture.recorder.export.formats.base import ExportFormat, SampleFiles
from improv_capture.recorder.export.source import Session
from improv_capture.recorder.export.writer import Staging

DIR = "webdataset"
#: Default bound of a shard (``--shard-max-mb``).
SHARD_MAX_MB = 1024
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
#: The end of an archive: two zero blocks, then padding to a whole record.
END = 2 * BLOCK


def member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def member_bytes(info: tarfile.TarInfo) -> int:
    """Bytes one member takes in the archive: header blocks and data padded to a block."""
    header = len(info.tobuf(tarfile.GNU_FORMAT, tarfile.ENCODING, "surrogateescape"))
    return header + -(-info.size // BLOCK) * BLOCK


def archive_bytes(members: int) -> int:
    return -(-(members + END) // RECORD) * RECORD


class WebDatasetFormat(ExportFormat):
    name = "webdataset"

    def __init__(self, staging: Staging, display_names: bool, shard_max_bytes: int = SHARD_MAX_MB << 20) -> None:
        super().__init__(staging, display_names)
        self.shard_max_bytes = shard_max_bytes
        self.shards: list[str] = []
        self.oversized: list[str] = []
        self._tar: tarfile.TarFile | None = None
        self._file: BinaryIO | None = None
        self._name: str | None = None
        self._used = 0  # member bytes in the open shard
        self._count = 0  # shards of the current session
        self._session: str | None = None

    def add(self, files: SampleFiles) -> None:
        session_id = files.sample.session.session_id
        if session_id != self._session:
            self._close()
            self._session, self._count = session_id, 0
        items = [(f"{files.key}.json", files.json), (f"{files.key}.wav", files.wav)]
        if files.webm is not None:
            items.append((f"{files.key}.webm", files.webm))
        infos = [(member(name, len(data)), data) for name, data in items]
        size = sum(member_bytes(info) for info, _ in infos)
        if self._tar is not None and archive_bytes(self._used + size) > self.shard_max_bytes:
            self._close()
        if self._tar is None:
            self._open(session_id)
        if archive_bytes(size) > self.shard_max_bytes:
            self.oversized.append(files.key)
        assert self._tar is not None
        for info, data in infos:
            self._tar.addfile(info, io.BytesIO(data))
        self._used += size

    def _open(self, session_id: str) -> None:
        self._name = f"{DIR}/{session_id}-{self._count:04d}.tar"
        self._count += 1
        self._file = open(self.staging.path(self._name), "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.GNU_FORMAT)
        self._used = 0

    def _close(self) -> None:
        if self._tar is None or self._file is None or self._name is None:
            return
        self._tar.close()
        self._file.close()
        self.staging.added(self._name)
        self.shards.append(self._name)
        self._tar = self._file = self._name = None

    def end_session(self, session: Session) -> None:
        self._close()
        self._session = None

    def finish(self) -> None:
        self._close()

    def report(self) -> dict[str, Any]:
        return {"shards": self.shards, "shard_max_bytes": self.shard_max_bytes,
                "oversized": self.oversized}
