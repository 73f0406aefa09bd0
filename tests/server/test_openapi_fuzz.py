"""schemathesis against /openapi.json, as the operator: no input makes the server answer 5xx."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import ServerProcess

pytestmark = pytest.mark.process


def test_no_request_from_the_schema_gets_a_server_error(server: ServerProcess, tmp_path: Path) -> None:
    room = server.create_room("kept")
    server.invite(room, "someone")
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli is not None, "schemathesis is part of the test extras"
    done = subprocess.run(
        [cli, "run", f"{server.url}/openapi.json",
         "-H", f"Authorization: Bearer {server.token}",
         "--checks", "not_a_server_error", "--max-examples", "50",
         "--phases", "examples,fuzzing",
         "--exclude-path", "/api/v1/events",  # a stream that never ends by design
         "--seed", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert " 500 " not in server.log() and "Traceback" not in server.log()
