"""takes.csv and performers.csv, written by every export: every take of every exported
session (skipped samples do not remove a take), and every performer who did not withdraw."""

from __future__ import annotations

import csv
import io
from typing import Any

from improv_capture.recorder.export.formats.base import ExportFormat
from improv_capture.recorder.export.source import Session
from improv_capture.recorder.export.takes import Take
from improv_capture.recorder.export.writer import Staging

TAKE_COLUMNS = ("session_id", "take_id", "index", "start_s", "end_s", "label", "prompt_text",
                "target_emotion", "intensity")
PERFORMER_COLUMNS = ("session_id", "performer_id", "display_name", "consent_version",
                     "consent_text_sha256", "consent_accepted_at")


def csv_bytes(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> bytes:
    """RFC 4180 with ``\\n`` line ends; None is an empty field."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
    return buffer.getvalue().encode("utf-8")


class Tables(ExportFormat):
    name = "tables"

    def __init__(self, staging: Staging, display_names: bool) -> None:
        super().__init__(staging, display_names)
        self.takes: list[dict[str, Any]] = []
        self.performers: list[dict[str, Any]] = []

    def begin_session(self, session: Session, takes: list[Take]) -> None:
        self.takes += [take.fields() for take in takes]
        for performer in sorted(session.performers, key=lambda p: p["performer_id"]):
            consent = performer.get("consent") or {}
            self.performers.append({
                "session_id": session.session_id, "performer_id": performer["performer_id"],
                "display_name": performer.get("display_name"),
                "consent_version": consent.get("version"),
                "consent_text_sha256": consent.get("text_sha256"),
                "consent_accepted_at": consent.get("accepted_at"),
            })

    def finish(self) -> None:
        self.staging.put("takes.csv", csv_bytes(TAKE_COLUMNS, self.takes))
        columns = PERFORMER_COLUMNS if self.display_names else tuple(
            c for c in PERFORMER_COLUMNS if c != "display_name")
        self.staging.put("performers.csv", csv_bytes(columns, self.performers))
