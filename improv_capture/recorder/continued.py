"""A session that goes on with one recorded on a node that died (several nodes): the earlier
part joins it when that node comes back.

Until then the session's ``continues`` says the part is ``missing``. When it joins, the earlier
session's performer files (live and high-quality copies, as that node recovered them) are
placed under ``parts/<earlier session_id>/`` of this session, each performer's entry gets an
``earlier`` entry (the earlier session's entry for them, its paths in this session), a performer
who was only in the earlier part is added with ``file`` null, and ``continues`` says ``merged``
with where the earlier timeline sits on this one (``offset_s``), its markers and prompts, and
the stretch between the parts, which neither node recorded (``gap``). One rewrite of the
manifest, under the session's lock (manifest.py): a new revision, so mirrors fetch it again."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from improv_capture.clock import parse_utc
from improv_capture.recorder.files import fsync_dir, safe_path
from improv_capture.recorder.manifest import read_manifest, rewrite_manifest

PARTS_DIR = "parts"
MISSING = "missing"
MERGED = "merged"


class PartRefused(ValueError):
    """The earlier session cannot join this one (named, never written into the session)."""


def missing_part(session_id: str, started_at: str, node_id: str | None) -> dict[str, Any]:
    """``continues`` while the earlier part is on a node that is down."""
    return {"session_id": session_id, "started_at": started_at, "node_id": node_id,
            "state": MISSING}


def waiting_for(manifest: dict[str, Any]) -> str | None:
    """The earlier session this finalised session waits for, or None."""
    continues = manifest.get("continues") or {}
    if continues.get("state") != MISSING or manifest.get("state") == "recording":
        return None
    return str(continues["session_id"])


def performer_files(performer: dict[str, Any]) -> list[dict[str, Any]]:
    """A performer's live and high-quality copy (``{path, bytes, sha256}``). PartRefused for
    a path that would leave the session directory."""
    files = []
    for entry in (performer.get("file"), (performer.get("hq") or {}).get("file")):
        if entry:
            if not safe_path(str(entry.get("path", ""))):
                raise PartRefused(f"{entry.get('path')!r}: a path outside the session")
            files.append({k: entry[k] for k in ("path", "bytes", "sha256")})
    return files


def part_files(earlier: dict[str, Any]) -> list[dict[str, Any]]:
    """The earlier session's files that join: every performer's (performer_files)."""
    return [f for performer in earlier.get("performers", []) for f in performer_files(performer)]


def join_earlier_part(session_dir: Path, earlier: dict[str, Any], downloaded: Path) -> dict[str, Any] | None:
    """Place the earlier session's files, downloaded (and checked against ``part_files``) into
    ``downloaded`` under their own paths, into this session, and write the manifest. Returns
    it, or None when the part had joined already (a second notice). PartRefused when
    ``earlier`` is not the session this one continues, or is still recording."""
    if waiting_for(read_manifest(session_dir)) != earlier.get("session_id"):
        return None
    check_part(earlier)  # all of it before anything moves
    prefix = f"{PARTS_DIR}/{earlier['session_id']}"

    def change(manifest: dict[str, Any]) -> bool:
        if waiting_for(manifest) != earlier["session_id"]:
            return False
        try:
            place(manifest)
        except BaseException:
            shutil.rmtree(session_dir / prefix, ignore_errors=True)  # SHA256SUMS stays true
            raise
        return True

    def place(manifest: dict[str, Any]) -> None:
        entries = {p["performer_id"]: p for p in manifest.get("performers", [])}
        for performer in earlier.get("performers", []):
            pid = performer["performer_id"]
            if pid not in entries:  # in the earlier part only
                entries[pid] = {"performer_id": pid, "display_name": performer.get("display_name"),
                                "consent": performer.get("consent"), "capture": None,
                                "joined_at_s": None, "left_at_s": None, "file": None,
                                "tracks": [], "sync": None}
                manifest["performers"].append(entries[pid])
            if entries[pid].get("withdrawn"):
                continue  # consent withdrawn here: the earlier media never joins
            for entry in performer_files(performer):
                target = session_dir / prefix / entry["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(downloaded / entry["path"], target)
                fsync_dir(target.parent)
                manifest["files"].append({**entry, "path": f"{prefix}/{entry['path']}"})
            entries[pid]["earlier"] = moved_entry(performer, prefix)
        start = parse_utc(manifest["started_at"])
        ended_at = earlier.get("ended_at") or manifest["started_at"]
        end_s = round(parse_utc(ended_at) - start, 6)
        manifest["continues"] = {
            **manifest["continues"], "state": MERGED, "path": prefix,
            "offset_s": round(parse_utc(earlier["started_at"]) - start, 6),
            "ended_at": ended_at, "duration_s": earlier.get("duration_s"),
            "part_state": earlier.get("state"), "part_reason": earlier.get("reason"),
            "markers": earlier.get("markers", []), "prompts": earlier.get("prompts", []),
            "gap": {"start_s": min(end_s, 0.0), "end_s": 0.0, "reason": "reconnected"},
        }

    return rewrite_manifest(session_dir, change)


def check_part(earlier: dict[str, Any]) -> None:
    """PartRefused unless ``earlier`` is a finalised session's manifest as a node writes it."""
    if earlier.get("state") == "recording":
        raise PartRefused(f"{earlier.get('session_id')} is still recording")
    try:
        parse_utc(str(earlier["started_at"]))
        parse_utc(str(earlier.get("ended_at") or earlier["started_at"]))
        if not all(isinstance(p, dict) and isinstance(p["performer_id"], str)
                   for p in earlier["performers"]):
            raise TypeError("a performer without an id")
        part_files(earlier)
    except (KeyError, TypeError, ValueError) as exc:
        raise PartRefused(f"not a session manifest: {exc!r}") from exc


def moved_entry(performer: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The earlier session's entry for a performer, its file paths under ``prefix``."""
    entry = {k: v for k, v in performer.items() if k not in ("performer_id", "display_name")}
    if entry.get("file"):
        entry["file"] = {**entry["file"], "path": f"{prefix}/{entry['file']['path']}"}
    if (entry.get("hq") or {}).get("file"):
        entry["hq"] = {**entry["hq"], "file": {**entry["hq"]["file"],
                                                "path": f"{prefix}/{entry['hq']['file']['path']}"}}
    return entry
