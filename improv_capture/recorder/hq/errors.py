"""Why an upload request is refused. Each error's message is what the performer's page shows
(the API answers it as ``detail``), and ``status`` is the HTTP status the upload routes answer
with it; 401, 403 and 404 are the server's own checks, before the store is asked."""

from __future__ import annotations


class UploadError(Exception):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)


class BadUpload(UploadError, ValueError):
    """A request the protocol does not allow: a part or index out of range, bad part info."""

    status = 422


class ChunkDigestError(BadUpload):
    def __init__(self) -> None:
        super().__init__("X-Chunk-Sha256 does not match the chunk")


class NotWebm(BadUpload):
    def __init__(self) -> None:
        super().__init__("not a WebM stream")


class UploadTooLarge(UploadError):
    status = 413


class UploadConflict(UploadError):
    """The request contradicts what is already acknowledged (nothing acknowledged changes)."""

    status = 409


class ChunkConflict(UploadConflict):
    def __init__(self, part: int, index: int) -> None:
        super().__init__(f"chunk {index} of part {part} was acknowledged with a different body")


class UploadClosed(UploadConflict):
    def __init__(self, state: str) -> None:
        super().__init__(f"the upload is closed ({state})")
        self.state = state


class UploadNotReady(UploadConflict):
    """Placing asked for before every part ended and arrived (and not at the deadline)."""


class Revoked(UploadError):
    status = 410

    def __init__(self) -> None:
        super().__init__("consent revoked: the high-quality copy was deleted")


class StorageFull(UploadError):
    """Writing failed (a full disk, most often): the page keeps the chunk and retries."""

    status = 507

    def __init__(self, strerror: str | None) -> None:
        super().__init__(
            "the server's disk is full: keep the chunk and retry later"
            + (f" ({strerror})" if strerror else "")
        )
        self.strerror = strerror
