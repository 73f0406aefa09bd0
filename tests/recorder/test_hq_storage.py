"""A disk that refuses writes: the chunk is refused with 507 and the page keeps it; nothing
acknowledged is touched, and the upload goes on once there is room again.

The refusal is real: a child process whose file size limit (RLIMIT_FSIZE) makes every write
past it fail with EFBIG, as a full disk fails with ENOSPC (the tests run as root, so a
read-only directory would not stop them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.process

SCRIPT = r"""
import json, resource, signal, sys
from pathlib import Path
from improv_capture.recorder.hq.errors import StorageFull
from improv_capture.recorder.hq.uploads import EBML_MAGIC, UploadStore, read_upload
from tests.recorder.hq_media import LIMITS, part_info, sha256

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
store = UploadStore(Path(sys.argv[1]))
S, P = "ses_full", "p_full"
store.declare_part(S, P, 0, part_info(1.7e12))
chunks = [EBML_MAGIC + b"a" * 1000] + [bytes([i]) * 100 for i in range(1, 80)]
store.put_chunk(S, P, 0, 0, chunks[0], sha256(chunks[0]), None, LIMITS)
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
result = {"refused": []}
big = b"b" * 10000
try:
    store.put_chunk(S, P, 0, 1, big, sha256(big), None, LIMITS)
except StorageFull as exc:
    result["refused"].append([1, str(exc), exc.status])
for index in range(2, 80):  # each acknowledgement's line grows acks.jsonl up to the limit
    try:
        store.put_chunk(S, P, 0, index, chunks[index], sha256(chunks[index]), None, LIMITS)
    except StorageFull as exc:
        result["refused"].append([index, str(exc), exc.status])
        break
part = read_upload(store.performer_dir(S, P)).parts[0]
result["acked_while_full"] = sorted(part.acks)
result["acks_file"] = (part.path / "acks.jsonl").read_text()
result["chunk0_intact"] = part.chunk_path(0).read_bytes() == chunks[0]
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # room again: the page retries
retry = [1] + [r[0] for r in result["refused"][1:]]
for index in retry:
    data = big if index == 1 else chunks[index]
    store.put_chunk(S, P, 0, index, data, sha256(data), None, LIMITS)
result["status"] = store.status(S, P)
print(json.dumps(result))
"""


def test_a_full_disk_refuses_the_chunk_and_keeps_what_was_acknowledged(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "uploads")], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    (index, message, status), (cut, _, cut_status) = result["refused"]
    assert index == 1 and status == cut_status == 507
    assert message == "the server's disk is full: keep the chunk and retry later (File too large)"
    # the acknowledgement that did not fit was cut off again: every line is whole
    lines = result["acks_file"].splitlines()
    assert result["acks_file"].endswith("\n") and all(json.loads(line) for line in lines)
    assert result["acked_while_full"] == [0, *range(2, cut)] and len(lines) == cut - 1
    assert result["chunk0_intact"]
    assert result["status"]["parts"][0]["acked"] == [[0, cut]]
