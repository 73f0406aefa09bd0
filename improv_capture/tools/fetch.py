"""`improv-capture fetch`: an incremental, resumable, verified mirror of finished sessions.

Each session is downloaded into DEST/.partial/<session_id>/ and renamed into DEST/<session_id>/
only once every file matches its sha256, so a session in DEST is always whole. An interrupted
file resumes with a Range request. The revocation feed is applied first: withdrawn
performers' files leave the mirror and the session's manifest and SHA256SUMS are refreshed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import httpx

from improv_capture.recorder.files import fsync_dir, sha256_file, write_json_atomic

STATE_FILE = ".improv-fetch.json"
PARTIAL_DIR = ".partial"
CHUNK = 1 << 20


class FetchError(Exception):
    """The server or the network failed (not a verification failure)."""


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
        )
        self.failures: list[str] = []
        self.fetched: list[str] = []
        self.bytes_downloaded = 0

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
        state = self._state()
        state["revocations_after"] = self.apply_revocations(state.get("revocations_after", 0))
        write_json_atomic(self.dest / STATE_FILE, state)
        for summary in self.sessions():
            session_id = summary["session_id"]
            if (self.dest / session_id).is_dir():
                continue
            self.fetch_session(session_id)
        self._say(
            f"fetched {len(self.fetched)} session(s), {self.bytes_downloaded / 1e6:.1f} MB; "
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

    def fetch_session(self, session_id: str) -> bool:
        partial = self.dest / PARTIAL_DIR / session_id
        partial.mkdir(parents=True, exist_ok=True)
        manifest = self._get(f"/api/v1/sessions/{session_id}")
        ok = True
        for entry in manifest.get("files", []):
            ok = self._download(session_id, entry["path"], partial, entry["sha256"], entry["bytes"]) and ok
        for name in ("manifest.json", "SHA256SUMS"):
            ok = self._download(session_id, name, partial, None, None, restart=True) and ok
        ok = ok and self._check_sums(session_id, partial)
        if not ok:
            return False
        target = self.dest / session_id
        os.replace(partial, target)
        fsync_dir(self.dest)
        self.fetched.append(session_id)
        return True

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
        if restart:
            target.unlink(missing_ok=True)
        have = target.stat().st_size if target.exists() else 0
        url = f"/api/v1/sessions/{session_id}/files/{path}"
        if size is None or have < size:
            headers = {"Range": f"bytes={have}-"} if have else {}
            with self.client.stream("GET", url, headers=headers) as response:
                if response.status_code == 200:
                    have = 0  # the server sent the whole file
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
        ok = True
        for line in (session_dir / "SHA256SUMS").read_text().splitlines():
            digest, _, name = line.partition("  ")
            path = session_dir / name
            if not path.exists() or sha256_file(path) != digest:
                self.failures.append(f"{session_id}/{name}: does not match SHA256SUMS")
                ok = False
        return ok

    # revocations

    def apply_revocations(self, after: int) -> int:
        while True:
            feed = self._get("/api/v1/revocations", after=after, limit=500)
            for revocation in feed["items"]:
                for session_id in revocation["sessions"]:
                    self._withdraw(session_id, revocation["performer_id"])
                after = revocation["id"]
            if feed["next"] is None:
                return after

    def _withdraw(self, session_id: str, performer_id: str) -> None:
        session_dir = self.dest / session_id
        if not session_dir.is_dir():
            return
        for media in (session_dir / "performers").glob(f"{performer_id}.*"):
            media.unlink()
        for name in ("manifest.json", "SHA256SUMS"):
            fresh = self.client.get(f"/api/v1/sessions/{session_id}/files/{name}")
            if fresh.status_code != 200:
                raise FetchError(f"refreshing {session_id}/{name}: {fresh.status_code}")
            tmp = session_dir / f".{name}.tmp"
            tmp.write_bytes(fresh.content)
            os.replace(tmp, session_dir / name)
        self._check_sums(session_id, session_dir)
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
