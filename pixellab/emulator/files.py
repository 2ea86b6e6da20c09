"""The emulator's file store: uploads and model outputs, kept in memory.

Files are served at ``/files/<id>.<ext>`` on both ports (no auth, like a CDN) and Replicate
uploads also at ``/replicate/v1/files/<id>/download``. Input URLs that point back here are
resolved locally (:meth:`FileStore.resolve`), including a Replicate file's ``urls.get``
(``/replicate/v1/files/<id>``): the emulator never makes HTTP requests to itself, nor to
anything off the machine.

A file may carry an expiry (``expires_at``, unix seconds): once it has passed the file is gone
for every route and for input resolution, as Replicate deletes uploads after 24 h and
prediction outputs with the prediction's data (see ``replicate_api``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
import time
import uuid
from dataclasses import dataclass, replace
from urllib.parse import unquote, urlsplit

from pixellab.emulator.imaging import EmulatedModelError

__all__ = ["LOOPBACK_HOSTS", "FileStore", "StoredFile", "content_hash"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
"""Hosts the emulator will talk to (file URLs it resolves, webhooks it delivers)."""


@dataclass(frozen=True)
class StoredFile:
    """A file held by the emulator: an upload, or a model output."""

    id: str
    name: str
    content_type: str
    data: bytes
    created_at: float
    expires_at: float | None = None

    @property
    def ext(self) -> str:
        """File extension (without the dot) used in its ``/files/<id>.<ext>`` URL."""
        return self.name.rsplit(".", 1)[-1] if "." in self.name else "bin"


class FileStore:
    """In-memory files by id (thread-safe: tests read it while the loop writes)."""

    _PATHS = (
        re.compile(r"^/files/([A-Za-z0-9_-]+)(?:\.[A-Za-z0-9]+)?$"),
        re.compile(r"^/replicate/v1/files/([A-Za-z0-9_-]+)(?:/download)?$"),
    )

    def __init__(self) -> None:
        self._files: dict[str, StoredFile] = {}
        self._lock = threading.Lock()

    def put(self, data: bytes, content_type: str, name: str, file_id: str | None = None,
            *, ttl_s: float | None = None) -> StoredFile:
        """Store ``data`` and return its record (a fresh id unless ``file_id`` is given);
        with ``ttl_s`` it expires that many seconds from now."""
        now = time.time()
        stored = StoredFile(file_id or uuid.uuid4().hex, name, content_type or
                            "application/octet-stream", bytes(data), now,
                            None if ttl_s is None else now + ttl_s)
        with self._lock:
            self._files[stored.id] = stored
        return stored

    def expire_at(self, file_id: str, when: float) -> None:
        """Make a stored file expire at unix time ``when`` (no-op for an unknown id)."""
        with self._lock:
            stored = self._files.get(file_id)
            if stored is not None:
                self._files[file_id] = replace(stored, expires_at=when)

    def get(self, file_id: str) -> StoredFile | None:
        """The file with this id, or None (also once it has expired: it is then forgotten)."""
        with self._lock:
            stored = self._files.get(file_id)
            if stored is not None and stored.expires_at is not None and (
                    time.time() >= stored.expires_at):
                del self._files[file_id]
                return None
            return stored

    def delete(self, file_id: str) -> bool:
        """Forget a file; whether it existed."""
        with self._lock:
            return self._files.pop(file_id, None) is not None

    def all(self) -> list[StoredFile]:
        """Every stored file that has not expired, oldest first."""
        with self._lock:
            ids = list(self._files)
        return [f for f in (self.get(i) for i in ids) if f is not None]

    def resolve(self, url: str) -> bytes:
        """Bytes behind an input URL: a ``data:`` URI or one of this emulator's file URLs.

        Raises:
            EmulatedModelError: a URL off this machine (the emulator is offline by design), or
                an unknown file, or a malformed data URI.
        """
        if url.startswith("data:"):
            header, _, payload = url.partition(",")
            try:
                if header.endswith(";base64"):
                    return base64.b64decode(payload, validate=False)
                return unquote(payload).encode("latin-1")
            except (binascii.Error, ValueError) as exc:
                raise EmulatedModelError(f"malformed data URI: {exc}") from exc
        parts = urlsplit(url)
        if parts.hostname not in LOOPBACK_HOSTS:
            raise EmulatedModelError(
                f"cannot fetch {url!r}: the emulator only serves files it stores itself")
        for pattern in self._PATHS:
            match = pattern.match(parts.path)
            if match and (stored := self.get(match.group(1))) is not None:
                return stored.data
        raise EmulatedModelError(f"file not found: {url}")


def content_hash(data: bytes) -> str:
    """MD5 hex of ``data`` (Replicate's file ``etag`` / checksum)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
