"""The one S3 client of a server: generic S3 (AWS, MinIO, Ceph, moto), built from the settings
and exactly AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, so no other credential source (a
profile file, instance metadata) is ever consulted by surprise."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from improv_capture.settings import Settings

CREDENTIAL_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


class StoreConfigError(ValueError):
    """The store cannot be used as configured (said in one line, at start)."""


@dataclass(frozen=True)
class StoreTarget:
    """Where sessions go: the bucket and the key prefix (``<prefix><session_id>/<path>``)."""

    bucket: str
    prefix: str
    part_bytes: int

    def session_key(self, session_id: str) -> str:
        return f"{self.prefix}{session_id}/"


def credentials(environ: dict[str, str] | None = None) -> tuple[str, str]:
    env = os.environ if environ is None else environ
    missing = [name for name in CREDENTIAL_NAMES if not env.get(name)]
    if missing:
        raise StoreConfigError(f"IMPROV_S3_URL is set but {' and '.join(missing)} "
                               f"{'is' if len(missing) == 1 else 'are'} not (the store's credentials)")
    return env[CREDENTIAL_NAMES[0]], env[CREDENTIAL_NAMES[1]]


def make_client(settings: Settings, environ: dict[str, str] | None = None) -> Any:
    """A boto3 S3 client (blocking: call it from a worker thread). Path-style addressing works
    with every S3-compatible server; boto3's own retries are few, the uploader's policy
    (settings.s3_retry_*) does the waiting."""
    import boto3
    from botocore.config import Config

    key_id, secret = credentials(environ)
    config = Config(
        region_name=settings.s3_region,
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        connect_timeout=settings.s3_timeout_s,
        read_timeout=settings.s3_timeout_s,
        retries={"max_attempts": 2, "mode": "standard"},
        # checksums only where we ask for them (SHA256, per part): some stores refuse the
        # CRC32 trailers newer boto3 adds to every upload by default
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=max(10, 2 * settings.s3_concurrency),
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.s3_url, aws_access_key_id=key_id,
        aws_secret_access_key=secret, config=config,
    )


def target(settings: Settings) -> StoreTarget:
    assert settings.s3_bucket is not None
    return StoreTarget(settings.s3_bucket, settings.s3_prefix, settings.s3_part_bytes)
