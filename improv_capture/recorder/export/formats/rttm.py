"""Who speaks when, per session: ``rttm/<session_id>.rttm`` (one SPEAKER line per speech turn,
on the session clock, sorted by start then performer) and ``rttm/<session_id>.uem`` (the
scored stretches: one line per take)."""

from __future__ import annotations

from typing import Any

from improv_capture.recorder.export.formats.base import ExportFormat, SampleFiles
from improv_capture.recorder.export.source import Session
from improv_capture.recorder.export.takes import Take

DIR = "rttm"


class RttmFormat(ExportFormat):
    name = "rttm"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns: list[tuple[float, str, float]] = []
        self._takes: dict[str, list[Take]] = {}

    def begin_session(self, session: Session, takes: list[Take]) -> None:
        self._takes[session.session_id] = takes

    def add(self, files: SampleFiles) -> None:
        for start, end in files.sample.session_turns() or []:
            self._turns.append((start, files.sample.performer_id, end))

    def end_session(self, session: Session) -> None:
        sid = session.session_id
        lines = [f"SPEAKER {sid} 1 {start:.3f} {end - start:.3f} <NA> <NA> {pid} <NA> <NA>\n"
                 for start, pid, end in sorted(self._turns)]
        uem = [f"{sid} 1 {take.start_s:.3f} {take.end_s:.3f}\n" for take in self._takes.get(sid, [])]
        self.staging.put(f"{DIR}/{sid}.rttm", "".join(lines).encode())
        self.staging.put(f"{DIR}/{sid}.uem", "".join(uem).encode())
        self._turns = []
