#!/usr/bin/env python
"""Benchmark: storing a 10-minute two-performer session in S3-compatible storage (issue #14).

Writes a synthetic capture with the live recorder's own writer and finalises it (the same
session as scripts/bench_finalise.py: real, decodable WebM files), then stores it with the
server's uploader code (storage/s3_archive.py `upload_session`, the boto3 client of
storage/s3_client.py) into moto's standalone S3 server, a process of its own on loopback
(real HTTP; the tests' MotoStore drives its bucket). Each run starts from an empty bucket;
after the last, the same revision is stored again (nothing changed: only checked). Usage:
  .venv/bin/python scripts/bench_s3_upload.py [--seconds 600] [--performers 2] [--runs 3]
      [--part-mib 16]"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from benchlib import free_port  # first: it puts the repository on sys.path

from improv_capture.recorder.finalise import finalise_session
from improv_capture.recorder.synthetic import write_session
from improv_capture.settings import Settings
from improv_capture.storage import s3_client
from improv_capture.storage.s3_archive import upload_session
from tests.storage.store import BUCKET, CREDENTIALS, MotoStore


def moto_process(store: MotoStore) -> subprocess.Popen[bytes]:
    """moto_server in its own process (not MotoStore's thread: the store's work must not share
    this process's GIL with the client being measured)."""
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                             "-p", str(store.port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}")
        try:
            httpx.get(store.url, timeout=1)
            return proc
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def parts_of(store: MotoStore, prefix: str) -> dict[str, int]:
    """Each stored object's number of parts, from its ETag (``"<md5>-N"`` for N parts)."""
    return {key.removeprefix(prefix): int(o["ETag"].strip('"').partition("-")[2] or 1)
            for key, o in store.objects(prefix).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--performers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--part-mib", type=int, default=16, help="IMPROV_S3_PART_BYTES in MiB")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    store = MotoStore(port=free_port())
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, root, True)
        stack.callback(store.forget)  # moto's request log
        began = time.perf_counter()
        session = write_session(root / "sessions" / "ses_bench_s3", args.performers, args.seconds)
        manifest = finalise_session(session)
        files = {f["path"]: f["bytes"] for f in manifest["files"]}
        total = sum(files.values()) + (session / "manifest.json").stat().st_size + (
            session / "SHA256SUMS").stat().st_size
        print(f"session of {args.performers} x {args.seconds:.0f} s written and finalised in "
              f"{time.perf_counter() - began:.1f} s, state {manifest['state']}: "
              + ", ".join(f"{p} {n / 1e6:.1f} MB" for p, n in files.items()))
        moto = moto_process(store)
        stack.callback(moto.wait, 30)
        stack.callback(moto.terminate)
        settings = Settings(s3_url=store.url, s3_bucket=BUCKET,
                            s3_part_bytes=args.part_mib * 1024 * 1024)
        client = s3_client.make_client(settings, environ=dict(CREDENTIALS))
        target = s3_client.target(settings)
        prefix = target.session_key(session.name)
        times = []
        for run in range(args.runs):
            store.create_bucket()  # empty: every object is sent again
            began, cpu = time.perf_counter(), time.process_time()
            copy = upload_session(client, target, session)
            seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
            times.append(seconds)
            parts = parts_of(store, prefix)
            print(f"run {run + 1}: {total / 1e6:.1f} MB in {seconds:.2f} s = "
                  f"{total / 1e6 / seconds:.1f} MB/s, client CPU {cpu:.2f} s; "
                  f"{copy.uploaded} objects, parts {json.dumps(parts)}")
        median = statistics.median(times)
        print(f"median {median:.2f} s = {total / 1e6 / median:.1f} MB/s "
              f"({args.part_mib} MiB parts)")
        began = time.perf_counter()
        copy = upload_session(client, target, session)
        print(f"the same revision stored again: {time.perf_counter() - began:.3f} s "
              f"({copy.uploaded - 2} media objects sent, manifest and SHA256SUMS rewritten)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
