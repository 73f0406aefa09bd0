"""What every format writer shares: the files of a sample (made once, written by each format
that wants them) and the deterministic serialisations (sorted keys, no times)."""

from __future__ import annotations

import functools
import gzip
import json
from typing import Any, BinaryIO

from improv_capture.recorder.export.samples import Sample
from improv_capture.recorder.export.source import Session
from improv_capture.recorder.export.takes import Take
from improv_capture.recorder.export.writer import Staging


def canonical_json(value: Any, sort_keys: bool = True) -> str:
    """One line, keys sorted (or in the order the code built them: a table's columns), UTF-8
    text as is: the same value gives the same bytes."""
    return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False)


def json_line(value: Any, sort_keys: bool = True) -> bytes:
    """One JSONL line (canonical_json and its newline) as UTF-8."""
    return (canonical_json(value, sort_keys) + "\n").encode("utf-8")


class JsonlFile:
    """A staged JSONL file written a row at a time, so that a format holds none of its rows
    (memory stays flat however many samples an export has); gzip without a file name or a
    time in its header when ``name`` ends in ``.gz``. zlib's output does not depend on how
    its input is split, so the same rows give the same bytes. :meth:`close` stages the file
    (empty when no row came)."""

    def __init__(self, staging: Staging, name: str, sort_keys: bool = True) -> None:
        self.staging, self.name, self.sort_keys = staging, name, sort_keys
        self._file: BinaryIO | None = None
        self._gzip: gzip.GzipFile | None = None  # over _file, for a .gz name

    def _out(self) -> BinaryIO | gzip.GzipFile:
        """The stream rows go to, opened on first use."""
        if self._file is None:
            # open across add() calls: close() ends it (as webdataset's shards)
            self._file = open(self.staging.path(self.name), "wb")  # noqa: SIM115
            if self.name.endswith(".gz"):
                self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._file, mtime=0,
                                           compresslevel=6)
        return self._file if self._gzip is None else self._gzip

    def write(self, row: dict[str, Any]) -> None:
        self._out().write(json_line(row, self.sort_keys))

    def close(self) -> None:
        self._out().close()
        if self._file is not None:
            self._file.close()  # GzipFile leaves the file it was given open
        self.staging.added(self.name)


def media_path(directory: str, session_id: str, name: str) -> str:
    """``<directory>/<session_id>/<name>``: media are kept per session, so that a change in
    one session touches no other session's files."""
    return f"{directory}/{session_id}/{name}"


class SampleFiles:
    """A sample as files: its JSON (the ``meta`` dict and its bytes), WAV and WebM (None
    without video), each made once, when a format first asks for it. Basenames are the
    sample key in every format."""

    def __init__(self, sample: Sample, display_names: bool) -> None:
        self.sample = sample
        self.key = sample.key
        self.meta = sample.meta(display_names)

    @functools.cached_property
    def json(self) -> bytes:
        return json_line(self.meta)

    @functools.cached_property
    def wav(self) -> bytes:
        return self.sample.wav()

    @functools.cached_property
    def webm(self) -> bytes | None:
        return self.sample.webm()


class ExportFormat:
    """A format writer: told of every sample in order (sessions by id, takes by index,
    performers by id), of each session's end, and of the run's end."""

    name = ""

    def __init__(self, staging: Staging, display_names: bool) -> None:
        self.staging = staging
        self.display_names = display_names

    def begin_session(self, session: Session, takes: list[Take]) -> None:
        """The samples of ``session`` come next."""

    def add(self, files: SampleFiles) -> None:
        """One sample that is exported."""

    def end_session(self, session: Session) -> None:
        """Every sample of ``session`` was added."""

    def finish(self) -> None:
        """Every session was added: write what spans them."""

    def report(self) -> dict[str, Any]:
        """What export.json says about this format's output."""
        return {}
