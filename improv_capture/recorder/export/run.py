"""One export run: check every session of SRC first (a bad one stops the run before anything
is written), then session by session, take by take, cut each performer's sample, measure it,
and hand it to the formats; finally write the tables and export.json and move everything into
DEST (writer.py). Memory holds one take of every performer of one session at a time."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from improv_capture.recorder.export import ExportError
from improv_capture.recorder.export.flags import FLAG_NAMES, measure, take_cross_talk
from improv_capture.recorder.export.formats.base import ExportFormat, SampleFiles
from improv_capture.recorder.export.formats.hf import HfFormat
from improv_capture.recorder.export.formats.lhotse import LhotseFormat
from improv_capture.recorder.export.formats.rttm import RttmFormat
from improv_capture.recorder.export.formats.tables import Tables
from improv_capture.recorder.export.formats.webdataset import SHARD_MAX_MB, WebDatasetFormat
from improv_capture.recorder.export.samples import COPIES, PerformerMedia, Sample, cut_sample, sample_key
from improv_capture.recorder.export.source import Session, load_session, session_dirs
from improv_capture.recorder.export.takes import Take, session_takes
from improv_capture.recorder.export.writer import INDEX, VERSION_KEY, Changes, Staging

FORMATS: dict[str, type[ExportFormat]] = {
    "lhotse": LhotseFormat, "hf": HfFormat, "webdataset": WebDatasetFormat, "rttm": RttmFormat,
}
#: The layout of DEST (docs/export.md); bumped when a file or field changes meaning.
EXPORT_VERSION = 1
#: The progress line is redrawn at most this often.
PROGRESS_EVERY_S = 0.5


@dataclass(frozen=True)
class Options:
    formats: tuple[str, ...]
    copy: str = "auto"
    #: flag names: a sample with any of them flagged is left out
    skip_flagged: frozenset[str] = frozenset()
    display_names: bool = False
    shard_max_mb: float = SHARD_MAX_MB
    vad: bool = True

    def check(self) -> None:
        if not self.formats:
            raise ExportError("no --format given (lhotse, hf, webdataset, rttm)")
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise ExportError(f"unknown format {unknown[0]} (one of {', '.join(FORMATS)})")
        if self.copy not in COPIES:
            raise ExportError(f"--copy {self.copy}: one of {', '.join(COPIES)}")
        wrong = sorted(self.skip_flagged - set(FLAG_NAMES))
        if wrong:
            raise ExportError(f"--skip-flagged: unknown flag {wrong[0]} (one of {', '.join(FLAG_NAMES)}, or all)")
        if not self.shard_max_mb > 0:
            raise ExportError("--shard-max-mb must be above 0")
        if not self.vad and "rttm" in self.formats:
            raise ExportError("rttm is made of speech turns: it needs VAD (drop --no-vad)")
        if not self.vad and "cross_talk" in self.skip_flagged:
            raise ExportError("--skip-flagged cross_talk needs speech turns (drop --no-vad)")

    def record(self) -> dict[str, Any]:
        return {"copy": self.copy, "skip_flagged": sorted(self.skip_flagged),
                "display_names": self.display_names, "shard_max_mb": self.shard_max_mb,
                "vad": self.vad}


def parse_skip_flagged(text: str | None) -> frozenset[str]:
    """``FLAG[,FLAG]`` or ``all``."""
    if not text:
        return frozenset()
    names = {n.strip() for n in text.split(",") if n.strip()}
    return frozenset(FLAG_NAMES) if "all" in names else frozenset(names)


@dataclass
class Report:
    """What a run did (the CLI prints it)."""

    changes: Changes
    notes: list[str] = field(default_factory=list)
    sessions: int = 0
    takes: int = 0
    samples: int = 0
    left_out: int = 0
    flagged: int = 0
    media_s: float = 0.0
    elapsed_s: float = 0.0


class Progress:
    """``export: 3/12 takes, 00:42 of media, 38x real time`` on one redrawn line."""

    def __init__(self, stream: TextIO | None, total: int) -> None:
        self.stream, self.total = stream, total
        self.done, self.media_s = 0, 0.0
        self.started = time.monotonic()
        self._drawn = 0.0

    def take(self, seconds: float) -> None:
        self.done += 1
        self.media_s += seconds
        now = time.monotonic()
        if self.stream is not None and (now - self._drawn >= PROGRESS_EVERY_S or self.done == self.total):
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        assert self.stream is not None
        elapsed = max(now - self.started, 1e-9)
        minutes, seconds = divmod(int(self.media_s), 60)
        line = (f"export: {self.done}/{self.total} takes, {minutes:02d}:{seconds:02d} of media, "
                f"{self.media_s / elapsed:.0f}x real time")
        end = "\r" if self.stream.isatty() and self.done < self.total else "\n"
        self.stream.write(line + end)
        self.stream.flush()

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


class _Run:
    def __init__(self, options: Options, staging: Staging, progress: Progress) -> None:
        self.options = options
        self.staging = staging
        self.progress = progress
        self.tables = Tables(staging, options.display_names)
        self.formats: list[ExportFormat] = [self.tables]
        for name in sorted(set(options.formats)):
            if name == "webdataset":
                self.formats.append(WebDatasetFormat(staging, options.display_names,
                                                     int(options.shard_max_mb * 2**20)))
            else:
                self.formats.append(FORMATS[name](staging, options.display_names))
        self.sessions: dict[str, Any] = {}
        self.flagged: list[dict[str, Any]] = []
        self.left_out: list[dict[str, Any]] = []
        self.samples = 0

    def _leave_out(self, session: Session, take: Take | None, performer_id: str, reason: str,
                   flags: list[str] | None = None) -> None:
        entry: dict[str, Any] = {"session_id": session.session_id, "performer_id": performer_id,
                                 "take_id": take.take_id if take else None,
                                 "key": sample_key(take, performer_id) if take else None, "reason": reason}
        if flags is not None:
            entry["flags"] = flags
        self.left_out.append(entry)

    def session(self, session: Session, takes: list[Take]) -> None:
        for fmt in self.formats:
            fmt.begin_session(session, takes)
        media: dict[str, PerformerMedia] = {}
        for performer in sorted(session.performers, key=lambda p: p["performer_id"]):
            item = PerformerMedia(session, performer)
            if item.paths:
                media[performer["performer_id"]] = item
            else:
                self._leave_out(session, None, performer["performer_id"], "no media file in the archive")
        exported = 0
        try:
            for take in takes:
                exported += self.take(session, take, media)
                self.progress.take(take.end_s - take.start_s)
        finally:
            for item in media.values():
                item.close()
        for fmt in self.formats:
            fmt.end_session(session)
        self.sessions[session.session_id] = {
            "revision": session.revision, "state": session.manifest.get("state"),
            "takes": len(takes), "samples": exported,
        }

    def take(self, session: Session, take: Take, media: dict[str, PerformerMedia]) -> int:
        samples: list[Sample] = []
        for performer_id, item in media.items():
            sample = cut_sample(session, item, take, self.options.copy)
            if sample is None:
                self._leave_out(session, take, performer_id, "no media in this take")
                continue
            measure(sample, self.options.vad)
            samples.append(sample)
        take_cross_talk(samples)
        exported = 0
        for sample in samples:
            flags = sample.flagged
            if flags:
                self.flagged.append({"key": sample.key, "flags": flags})
            skipped = [f for f in flags if f in self.options.skip_flagged]
            if skipped:
                self._leave_out(session, take, sample.performer_id, "flagged", skipped)
                continue
            files = SampleFiles(sample, self.options.display_names)
            for fmt in self.formats:
                fmt.add(files)
            exported += 1
        self.samples += exported
        return exported

    def index(self, skipped: list[str]) -> bytes:
        """export.json: what was asked, what each session gave, every file with its digest."""
        index = {
            VERSION_KEY: EXPORT_VERSION,
            "formats": sorted(set(self.options.formats)),
            "options": self.options.record(),
            "sessions": self.sessions,
            "skipped_sessions": skipped,
            "files": {name: record.entry() for name, record in sorted(self.staging.files.items())},
            "flagged": self.flagged,
            "left_out": self.left_out,
            **{fmt.name: fmt.report() for fmt in self.formats if fmt.report()},
        }
        return (json.dumps(index, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def run_export(src: Path, dest: Path, options: Options, progress: TextIO | None = None) -> Report:
    """Export every session of ``src`` into ``dest``. Raises ExportError (DEST untouched)."""
    options.check()
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"{dest}: is a file (DEST must be a directory)")
    skipped: list[str] = []
    sessions: list[tuple[Session, list[Take]]] = []
    for path in session_dirs(src):
        loaded = load_session(path)
        if isinstance(loaded, str):
            skipped.append(loaded)
        else:
            sessions.append((loaded, session_takes(loaded.manifest)))
    sessions.sort(key=lambda item: item[0].session_id)
    ids = [s.session_id for s, _ in sessions]
    if len(set(ids)) != len(ids):
        raise ExportError(f"session {next(i for i in ids if ids.count(i) > 1)} is in SRC twice")
    meter = Progress(progress, sum(len(t) for _, t in sessions))
    with Staging(dest) as staging:
        run = _Run(options, staging, meter)
        for session, takes in sessions:
            run.session(session, takes)
        for fmt in run.formats:
            fmt.finish()
        staging.put(INDEX, run.index(skipped))
        changes = staging.commit()
    return Report(changes=changes, notes=skipped + [f"{e['session_id']}: {e['performer_id']}: {e['reason']}"
                                                      for e in run.left_out if e["take_id"] is None],
                  sessions=len(sessions), takes=meter.total, samples=run.samples,
                  left_out=len(run.left_out), flagged=len(run.flagged), media_s=meter.media_s,
                  elapsed_s=meter.elapsed_s)


def default_progress(quiet: bool, forced: bool) -> TextIO | None:
    """stderr when it is a terminal (or ``--progress``), nothing with ``--quiet``."""
    if quiet:
        return None
    return sys.stderr if forced or sys.stderr.isatty() else None
