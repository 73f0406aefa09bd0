"""`improv-capture fetch`: an incremental, resumable, verified mirror of finished sessions.

Each session is downloaded into DEST/.partial/<session_id>/ and renamed into DEST/<session_id>/
only once every file matches its sha256, so a session in DEST is always whole. An interrupted
file resumes with a Range request.

A finished session still changes (a high-quality copy joins, a performer withdraws), and each
change bumps its manifest's ``revision``. A mirrored session whose listed revision is newer
than its local manifest's is fetched again the same way, its unchanged files (same path, same
sha256) hard-linked from the local copy rather than downloaded, then swapped in: the old copy
is renamed to DEST/.replaced/<session_id>/, the new one renamed in, the old one removed. A run
that finds a copy aside completes or undoes that swap first, so a crash anywhere leaves the
whole old copy or the whole new one.

The revocation feed is applied first: a withdrawn performer's session is fetched again (their
files are no longer listed), and should that fail, their files are deleted from the local copy
anyway and the session is fetched again on a later run (``stale`` in the state file).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import httpx

from improv_capture.recorder.files import (
    SUMS,
    SumsError,
    fsync_dir,
    read_sums,
    safe_path,
    sha256_file,
    write_json_atomic,
)

STATE_FILE = ".improv-fetch.json"
PARTIAL_DIR = ".partial"
REPLACED_DIR = ".replaced"
CHUNK = 1 << 20
OWN_FILES = ("manifest.json", SUMS)
#: What the client accepts as a performer id from the feed: neither a path nor a glob pattern
#: (the server's own rule is stricter: api/auth.py).
PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+")


class FetchError(Exception):
    """The server or the network failed (not a verification failure)."""


def read_manifest(session_dir: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((session_dir / "manifest.json").read_text()))
    except (OSError, ValueError):
        return None


def revision(manifest: dict[str, Any] | None) -> int:
    """A manifest older than revisions was never changed after it was finalised: 1."""
    return 0 if manifest is None else int(manifest.get("revision") or 1)


def delete_media(session_dir: Path, performer_id: str) -> None:
    """The performer's files (live and high-quality copies, and those of an earlier part
    recorded on a node that died: parts/) in a session directory."""
    for folder in (session_dir / "performers", *(session_dir / "parts").glob("*/performers")):
        for media in folder.glob(f"{performer_id}.*"):
            media.unlink()


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link (no bytes copied; the old copy's removal leaves it), or a durable copy
    where links are not possible."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
        with open(target, "rb") as f:
            os.fsync(f.fileno())


class Mirror:
    def __init__(
        self,
        server: str,
        token: str,
        dest: Path,
        include_partial: bool = False,
        progress: TextIO | None = sys.stderr,
    ) -> None:
        self.dest = dest
        self.include_partial = include_partial
        self.progress = progress
        self.client = httpx.Client(
            base_url=server.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(30, read=120),
            # a file kept in S3-compatible storage only answers 307 to a presigned URL; httpx
            # drops the Authorization header when a redirect leaves the server's origin, and
            # keeps Range, so resuming works the same there
            follow_redirects=True,
        )
        self.failures: list[str] = []
        self.fetched: list[str] = []
        self.updated: list[str] = []
        self.bytes_downloaded = 0
        self.bytes_reused = 0
        #: mirrored sessions to fetch again whatever their revision (a withdrawal not applied whole)
        self.stale: set[str] = set()
        self.attempted: set[str] = set()  # once per run: a failure is retried by the next run

    # the feed and the listing

    def _get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params={k: v for k, v in params.items() if v is not None})
        if response.status_code != 200:
            raise FetchError(f"GET {path}: {response.status_code} {response.text[:200]}")
        return response.json()

    def sessions(self) -> Iterator[dict[str, Any]]:
        states = ["complete"] + (["partial"] if self.include_partial else [])
        for state in states:
            after = None
            while True:
                page = self._get("/api/v1/sessions", state=state, after=after, limit=500)
                yield from page["items"]
                after = page["next"]
                if after is None:
                    break

    # one run

    def run(self) -> int:
        self.dest.mkdir(parents=True, exist_ok=True)
        self.finish_swaps()
        state = self._state()
        self.stale = set(state.get("stale", []))
        state["revocations_after"] = self.apply_revocations(state.get("revocations_after", 0))
        self._save(state)
        for summary in self.sessions():
            session_id = summary["session_id"]
            if session_id in self.attempted:
                continue
            local = revision(read_manifest(self.dest / session_id))
            if not (self.dest / session_id).is_dir() or session_id in self.stale \
                    or int(summary.get("revision") or 1) > local:
                self.fetch_session(session_id)
        for session_id in sorted(self.stale - self.attempted):  # e.g. partial, without --include-partial
            if not (self.dest / session_id).is_dir() \
                    or self.client.get(f"/api/v1/sessions/{session_id}").status_code == 404:
                self.stale.discard(session_id)  # gone from here or the server: nothing to mirror
            else:
                self.fetch_session(session_id)
        self._save(state)
        self._say(
            f"fetched {len(self.fetched)} session(s), {self.bytes_downloaded / 1e6:.1f} MB; "
            f"updated {len(self.updated)} session(s) ({self.bytes_reused / 1e6:.1f} MB reused); "
            f"{len(self.failures)} verification failure(s)\n"
        )
        for failure in self.failures:
            self._say(f"FAILED: {failure}\n")
        return 1 if self.failures else 0

    def _state(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.dest / STATE_FILE).read_text()))
        except (OSError, ValueError):
            return {}

    def _save(self, state: dict[str, Any]) -> None:
        state["stale"] = sorted(self.stale)
        write_json_atomic(self.dest / STATE_FILE, state)

    # one session

    def fetch_session(self, session_id: str) -> bool:
        """Bring DEST/<session_id> to the server's current revision; True once it is there.
        A session that changes on the server while it downloads is tried once more."""
        self.attempted.add(session_id)
        for attempt in (1, 2):
            failures = len(self.failures)
            fetched = self._assemble(session_id)
            if fetched is None:
                return True
            if attempt == 2 or revision(self._get(f"/api/v1/sessions/{session_id}")) == fetched:
                return False
            del self.failures[failures:]  # they were about the revision the server replaced
        return False

    def _assemble(self, session_id: str) -> int | None:
        """Download into the partial directory and install it: None when done, else the
        revision that failed verification."""
        if not safe_path(session_id):
            raise FetchError(f"the server listed an invalid session id {session_id!r}")
        partial = self.dest / PARTIAL_DIR / session_id
        partial.mkdir(parents=True, exist_ok=True)
        before = read_manifest(partial)  # what an interrupted attempt downloaded for
        self._download(session_id, "manifest.json", partial, None, None, restart=True)
        manifest = read_manifest(partial)
        if manifest is None:
            raise FetchError(f"{session_id}/manifest.json is not JSON")
        entries = manifest.get("files", [])
        bad = [e.get("path") for e in entries if not safe_path(str(e.get("path", "")))]
        if bad:
            raise FetchError(f"{session_id}: the manifest names files outside the session: {bad}")
        self._prepare(partial, before, entries, self.dest / session_id)
        ok = True
        for entry in entries:
            ok = self._download(session_id, entry["path"], partial, entry["sha256"], entry["bytes"]) and ok
        ok = self._download(session_id, SUMS, partial, None, None, restart=True) and ok
        ok = ok and self._check_sums(session_id, partial)
        if not ok:
            return revision(manifest)
        self._install(session_id, partial)
        return None

    def _prepare(
        self, partial: Path, before: dict[str, Any] | None, entries: list[dict[str, Any]], local: Path
    ) -> None:
        """Leave in the partial directory only what the new manifest lists: files of an
        interrupted attempt that are still wanted (to resume), and the local copy's unchanged
        files (linked)."""
        wanted = {e["path"]: e["sha256"] for e in entries}
        started = {e["path"]: e.get("sha256") for e in (before or {}).get("files", [])}
        for path in sorted(partial.rglob("*"), reverse=True):  # files before their directories
            name = path.relative_to(partial).as_posix()
            if path.is_dir():
                if not any(path.iterdir()):
                    path.rmdir()
            elif name not in OWN_FILES and (
                    name not in wanted or (before is not None and started.get(name) != wanted[name])):
                path.unlink()  # no longer listed, or begun for other content
        have = {e["path"]: e["sha256"] for e in (read_manifest(local) or {}).get("files", [])}
        for name, digest in wanted.items():
            source, target = local / name, partial / name
            if have.get(name) == digest and source.is_file() and not source.is_symlink():
                target.unlink(missing_ok=True)
                link_or_copy(source, target)
                self.bytes_reused += target.stat().st_size

    def _install(self, session_id: str, partial: Path) -> None:
        """Rename the verified copy into place; an older copy goes aside first, then away."""
        for directory in sorted((p for p in partial.rglob("*") if p.is_dir()), reverse=True):
            fsync_dir(directory)  # the links and names are durable before the rename
        fsync_dir(partial)
        target = self.dest / session_id
        if not target.exists():
            os.replace(partial, target)
            fsync_dir(self.dest)
            self.fetched.append(session_id)
        else:
            aside = self.dest / REPLACED_DIR / session_id
            aside.parent.mkdir(exist_ok=True)
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(target, aside)
            fsync_dir(aside.parent)
            fsync_dir(self.dest)
            os.replace(partial, target)
            fsync_dir(self.dest)
            shutil.rmtree(aside)
            self.updated.append(session_id)
        fsync_dir(partial.parent)
        self.stale.discard(session_id)

    def finish_swaps(self) -> None:
        """After a crash during ``_install``: a copy aside whose replacement is in place is
        removed; one whose replacement is not is put back (the update is tried again)."""
        replaced = self.dest / REPLACED_DIR
        if not replaced.is_dir():
            return
        for aside in replaced.iterdir():
            target = self.dest / aside.name
            if target.exists():
                shutil.rmtree(aside)
            else:
                os.replace(aside, target)
                fsync_dir(self.dest)
                self._say(f"restored {aside.name} (an update was interrupted)\n")

    def _download(
        self,
        session_id: str,
        path: str,
        partial: Path,
        sha256: str | None,
        size: int | None,
        restart: bool = False,
    ) -> bool:
        target = partial / path
        target.parent.mkdir(parents=True, exist_ok=True)
        have = target.stat().st_size if target.exists() else 0
        if sha256 is not None and size is not None and target.exists() and have >= size:
            if have == size and sha256_file(target) == sha256:
                return True  # linked from the local copy, or downloaded by an earlier run
            have = 0  # whole but other content (a leftover, a damaged local copy): start over
        if restart or not have:
            target.unlink(missing_ok=True)
            have = 0
        url = f"/api/v1/sessions/{session_id}/files/{path}"
        if size is None or have < size:
            headers = {"Range": f"bytes={have}-"} if have else {}
            with self.client.stream("GET", url, headers=headers) as response:
                if response.status_code == 200:  # the server sent the whole file
                    target.unlink(missing_ok=True)  # never write through a hard link
                    have = 0
                elif response.status_code != 206:
                    raise FetchError(f"GET {url}: {response.status_code}")
                with open(target, "ab" if have else "wb") as f:
                    for chunk in response.iter_bytes(CHUNK):
                        f.write(chunk)
                        have += len(chunk)
                        self.bytes_downloaded += len(chunk)
                        self._bar(session_id, path, have, size)
                    f.flush()
                    os.fsync(f.fileno())
        if sha256 is not None and sha256_file(target) != sha256:
            self.failures.append(f"{session_id}/{path}: sha256 does not match the manifest")
            target.unlink(missing_ok=True)  # the next run downloads it again
            return False
        return True

    def _check_sums(self, session_id: str, session_dir: Path) -> bool:
        """Every file the downloaded SHA256SUMS lists is there with its digest (a SHA256SUMS
        that cannot be trusted is a failure like a mismatch)."""
        try:
            listed = read_sums(session_dir)
        except SumsError as exc:
            self.failures.append(f"{session_id}/{exc}")
            return False
        ok = True
        for name, digest in listed.items():
            path = session_dir / name
            if not path.is_file() or sha256_file(path) != digest:
                self.failures.append(f"{session_id}/{name}: does not match {SUMS}")
                ok = False
        return ok

    # revocations

    def apply_revocations(self, after: int) -> int:
        withdrawn: dict[str, set[str]] = {}
        while True:
            feed = self._get("/api/v1/revocations", after=after, limit=500)
            for revocation in feed["items"]:
                performer_id = revocation["performer_id"]
                if not PLAIN_NAME.fullmatch(performer_id):
                    raise FetchError(f"the revocation feed names an invalid performer {performer_id!r}")
                for session_id in filter(safe_path, revocation["sessions"]):
                    # a download not finished yet keeps none of it either
                    delete_media(self.dest / PARTIAL_DIR / session_id, performer_id)
                    if (self.dest / session_id).is_dir():
                        withdrawn.setdefault(session_id, set()).add(performer_id)
                after = revocation["id"]
            if feed["next"] is None:
                break
        for session_id, performers in sorted(withdrawn.items()):
            self._withdraw(session_id, sorted(performers))
        return int(after)

    def _withdraw(self, session_id: str, performers: list[str]) -> None:
        """Fetch the session's revision without the performers; whatever happens, their
        files leave the local copy."""
        done = False
        try:
            done = self.fetch_session(session_id)
        finally:
            if not done:
                for performer_id in performers:
                    delete_media(self.dest / session_id, performer_id)
                self.stale.add(session_id)
        for performer_id in performers:
            self._say(f"withdrew {performer_id} from {session_id}\n")

    # output

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress.write(text)
            self.progress.flush()

    def _bar(self, session_id: str, path: str, have: int, size: int | None) -> None:
        if self.progress is None:
            return
        if size:
            filled = int(30 * have / size)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {100 * have / size:5.1f}%"
        else:
            bar = f"{have / 1e6:.1f} MB"
        self.progress.write(f"\r{session_id} {path} {bar}")
        if size is None or have >= size:
            self.progress.write("\n")
        self.progress.flush()
