"""What every format writer shares: the files of a sample (made once, written by each format
that wants them) and the deterministic serialisations (sorted keys, no times)."""

from __future__ import annotations

import functools
import gzip
import io
import json
from typing import Any

from improv_capture.recorder.export.samples import Sample
from improv_capture.recorder.export.source import Session
from improv_capture.recorder.export.takes import Take
from improv_capture.recorder.export.writer import Staging


def canonical_json(value: Any, sort_keys: bool = True) -> str:
    """One line, keys sorted (or in the order the code built them: a table's columns), UTF-8
    text as is: the same value gives the same bytes."""
    return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False)


def jsonl(rows: list[dict[str, Any]], sort_keys: bool = True) -> bytes:
    return "".join(canonical_json(row, sort_keys) + "\n" for row in rows).encode("utf-8")


def gzip_bytes(data: bytes) -> bytes:
    """gzip without a file name or a time in its header."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=6) as f:
        f.write(data)
    return buffer.getvalue()


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
        return (canonical_json(self.meta) + "\n").encode("utf-8")

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
