"""SHA256SUMS has one reader (recorder/files.py): what the recorder writes reads back, and a
file that cannot be trusted (a malformed line, a path leaving the session) is refused whole,
by each of its callers with its own clear error, before any listed path is opened."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from improv_capture.recorder.export import ExportError
from improv_capture.recorder.export.source import check_files
from improv_capture.recorder.files import (
    SUMS,
    SumsError,
    file_entry,
    parse_sums,
    read_sums,
)
from improv_capture.recorder.finalise import write_sha256sums
from improv_capture.recorder.verify import check_sums
from improv_capture.storage.s3_archive import UploadFailed, snapshot
from improv_capture.tools.fetch import Mirror

pytestmark = pytest.mark.unit

DIGEST = "0" * 64
HOSTILE = {
    "no two spaces": (f"{DIGEST} performers/a.webm\n", "line 2: not '<sha256>  <path>'"),
    "a short digest": ("abc  performers/a.webm\n", "line 2: not '<sha256>  <path>'"),
    "no path": (f"{DIGEST}  \n", "line 2: not '<sha256>  <path>'"),
    "a blank line": ("\n", "line 2: not '<sha256>  <path>'"),
    "up and out": (f"{DIGEST}  ../secret\n", "line 2: ../secret: a path outside the session"),
    "absolute": (f"{DIGEST}  /etc/passwd\n", "line 2: /etc/passwd: a path outside the session"),
    "up inside": (f"{DIGEST}  performers/../../x\n", "line 2: performers/../../x: a path outside the session"),
    "backslash": (f"{DIGEST}  ..\\x\n", "line 2: ..\\x: a path outside the session"),
    "twice": (f"{DIGEST}  events.jsonl\n", "line 2: events.jsonl: listed twice"),
}


def make_session(root: Path) -> Path:
    """A session directory as finalising leaves it (events, one performer file)."""
    session = root / "ses_sums"
    (session / "performers").mkdir(parents=True)
    (session / "events.jsonl").write_text('{"t_s": 0, "type": "start"}\n')
    (session / "performers" / "p_ann.webm").write_bytes(b"webm" * 100)
    files = [file_entry(session, session / name) for name in ("events.jsonl", "performers/p_ann.webm")]
    (session / "manifest.json").write_text(json.dumps({
        "session_id": "ses_sums", "state": "complete", "revision": 1, "files": files,
        "performers": [{"performer_id": "p_ann", "file": files[1]}]}))
    write_sha256sums(session)
    return session


def test_what_is_written_reads_back_in_order() -> None:
    text = f"{'a' * 64}  events.jsonl\n{'b' * 64}  performers/p a.webm\n{'c' * 64}  x"
    assert list(parse_sums(text.encode()).items()) == [
        ("events.jsonl", "a" * 64), ("performers/p a.webm", "b" * 64), ("x", "c" * 64)]
    assert parse_sums(b"") == {}


def test_the_recorder_s_own_file_reads_back(tmp_path: Path) -> None:
    session = make_session(tmp_path)
    assert list(read_sums(session)) == ["events.jsonl", "manifest.json", "performers/p_ann.webm"]
    assert check_sums(session) == []
    check_files(session, json.loads((session / "manifest.json").read_text()))
    with pytest.raises(FileNotFoundError):
        read_sums(tmp_path)
    assert read_sums(tmp_path, missing_ok=True) == {}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_sums_are_refused_by_every_reader(tmp_path: Path, case: str) -> None:
    line, problem = HOSTILE[case]
    session = make_session(tmp_path)
    sums = session / SUMS
    sums.write_text(sums.read_text().splitlines(keepends=True)[0] + line)
    message = f"{SUMS} {problem}"
    with pytest.raises(SumsError) as error:
        read_sums(session)
    assert str(error.value) == message
    # recorder: a defect of the archive
    assert check_sums(session) == [message]
    # export: the run stops with it
    with pytest.raises(ExportError) as stopped:
        check_files(session, json.loads((session / "manifest.json").read_text()))
    assert str(stopped.value) == f"corrupt archive: ses_sums/{message}"
    # fetch: the session fails verification (not installed)
    mirror = Mirror("http://127.0.0.1:9", "token", tmp_path / "mirror", progress=None)
    assert not mirror._check_sums("ses_sums", session)
    assert mirror.failures == [f"ses_sums/{message}"]
    # S3: not uploaded this time
    with pytest.raises(UploadFailed) as failed:
        snapshot(session)
    assert str(failed.value) == f"the local {message}"


def test_a_file_not_utf8_is_refused() -> None:
    with pytest.raises(SumsError, match="^SHA256SUMS: not UTF-8 text$"):
        parse_sums(f"{DIGEST}  caf\xe9".encode("latin-1"))
