"""Server secrets that must survive restarts: kept in the data dir, readable by the owner only."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from improv_capture.settings import Settings


def load_or_create(path: Path, nbytes: int = 32) -> str:
    """Return the secret in ``path``, creating it (mode 0600) on first use."""
    try:
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)
    return value


def operator_token(settings: Settings) -> str:
    return settings.operator_token or load_or_create(settings.data_dir / "operator_token")


def invite_key(settings: Settings) -> str:
    """The HMAC key of invite tokens."""
    return settings.secret_key or load_or_create(settings.data_dir / "secret_key")
