"""Media kinds: what a task's output is, and everything that depends on it.

Each kind (:mod:`pixellab.media.image`, :mod:`pixellab.media.json`; video joins in P11) owns,
in one module: how an output is validated, the form and file extension it is stored under,
how the report shows it, and the metrics scored when a task names none. The runner, the store,
the score pass and the report ask the task's kind instead of branching on it, so a new kind is
one module and one line in :data:`KINDS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pixellab.errors import ConfigError
from pixellab.tasks import Task
from pixellab.validate import ImageCheck


class MediaKind(Protocol):
    """What pixellab needs to know about one kind of output."""

    @property
    def name(self) -> str:
        """The kind's name: a value of :attr:`pixellab.tasks.Task.output_kind`."""

    @property
    def extensions(self) -> Mapping[str, str]:
        """Media type → file extension in the store (``image/png`` → ``.png``)."""

    @property
    def default_metrics(self) -> tuple[str, ...]:
        """Scored when the task's scoring names no metrics."""

    def check(self, data: bytes, *, task: Task, declared_media_type: str | None,
              expected_size: tuple[int, int] | None, source: bytes | None,
              params: Mapping[str, Any] | None = None) -> ImageCheck:
        """Validate one provider output; never raises on bad bytes (the verdict's ``reason``
        is the stable code recorded in the ledger). ``params`` are the request's normalized
        inputs (a video is checked against the ``duration_s``, ``fps`` and ``aspect_ratio``
        asked for)."""

    def stored_form(self, request_key: str, data: bytes) -> bytes:
        """The bytes the store keeps for an output of ``request_key``."""

    def cell_html(self, data: bytes, *, alt: str, caption: str) -> str:
        """The output as a report cell's content (escaped, self-contained)."""


def _registered() -> dict[str, MediaKind]:
    from pixellab.media.image import IMAGE
    from pixellab.media.json import JSON
    from pixellab.media.video import VIDEO

    return {kind.name: kind for kind in (IMAGE, JSON, VIDEO)}


KINDS: dict[str, MediaKind] = _registered()
"""Every registered kind by name (the values of :attr:`pixellab.tasks.Task.output_kind`)."""

EXTENSIONS: dict[str, str] = {media_type: extension for kind in KINDS.values()
                              for media_type, extension in kind.extensions.items()}


def kind_for(task: Task | str) -> MediaKind:
    """The kind of ``task``'s outputs; :class:`ConfigError` for a kind not registered yet."""
    name = Task(task).output_kind
    kind = KINDS.get(name)
    if kind is None:
        raise ConfigError(f"task {Task(task).value!r} makes {name} outputs, and no media kind "
                          f"{name!r} is registered here yet (known: {', '.join(KINDS)})")
    return kind


def kind_of_media_type(media_type: str) -> MediaKind | None:
    """The kind a stored media type belongs to (None for one no kind claims)."""
    return next((k for k in KINDS.values() if media_type in k.extensions), None)


def extension_for(media_type: str) -> str:
    """The store's file extension for ``media_type`` (``.bin`` when no kind claims it)."""
    return EXTENSIONS.get(media_type, ".bin")
