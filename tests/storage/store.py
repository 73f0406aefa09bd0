"""A real S3 endpoint for tests: moto's standalone server (real HTTP, the S3 protocol) on
loopback, in a thread of the test process, with a bucket; stopped and started again on the
same port to play a store that goes down (its objects stay: moto keeps them in memory)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import free_port

#: moto's request recorder writes to a file named when moto is first imported (by default
#: ./moto_recording, in the repository): one in the temp dir of each test process instead
#: (set, not defaulted: an xdist worker inherits its parent's environment)
os.environ["MOTO_RECORDER_FILEPATH"] = str(Path(tempfile.gettempdir()) / f"moto-recording-{os.getpid()}")

BUCKET = "improv-archive"
#: moto accepts any credentials; the server reads exactly these names
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test-key-id", "AWS_SECRET_ACCESS_KEY": "test-secret-key"}


@dataclass
class MotoStore:
    port: int = field(default_factory=free_port)
    server: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        """What a server process needs to use this store."""
        return {**CREDENTIALS, "IMPROV_S3_URL": self.url, "IMPROV_S3_BUCKET": BUCKET, **extra}

    def start(self) -> MotoStore:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def forget(self) -> None:
        """The end of a test: the recording goes too."""
        self.stop()
        Path(os.environ["MOTO_RECORDER_FILEPATH"]).unlink(missing_ok=True)

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def create_bucket(self) -> None:
        """An empty bucket: moto keeps its objects per process, across its servers, so an
        earlier test's are dropped first."""
        import httpx

        httpx.post(f"{self.url}/moto-api/reset").raise_for_status()
        self.client().create_bucket(Bucket=BUCKET)

    def objects(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """Every object under ``prefix``: key -> listing entry."""
        found: dict[str, dict[str, Any]] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            found.update({o["Key"]: o for o in page.get("Contents", [])})
        return found

    def read(self, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def sha256(self, key: str) -> str:
        return hashlib.sha256(self.read(key)).hexdigest()

    # the order requests reached the store, from moto's own recorder

    def record(self) -> None:
        import httpx

        httpx.post(f"{self.url}/moto-api/recorder/reset-recording").raise_for_status()
        httpx.post(f"{self.url}/moto-api/recorder/start-recording").raise_for_status()

    def recorded_writes(self) -> list[tuple[str, str]]:
        """(method, path) of every PUT, POST and DELETE since ``record``, in order."""
        import json

        import httpx

        text = httpx.get(f"{self.url}/moto-api/recorder/download-recording").text
        writes = []
        for line in text.splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            if entry.get("method") in ("PUT", "POST", "DELETE") and "moto-api" not in entry.get("url", ""):
                writes.append((entry["method"], entry["url"]))
        return writes
