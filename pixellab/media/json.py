"""JSON outputs (``analyze``): checked against the task's schema, stored inside an envelope
that names the request, shown in the report as the answer's text."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pixellab.tasks import Task
from pixellab.validate import ImageCheck, check_json_output


@dataclass(frozen=True)
class JsonKind:
    name: str = "json"
    extensions = {"application/json": ".json"}
    default_metrics: tuple[str, ...] = ("category_match",)

    def check(self, data: bytes, *, task: Task, declared_media_type: str | None,
              expected_size: tuple[int, int] | None, source: bytes | None,
              params: Mapping[str, Any] | None = None) -> ImageCheck:
        """UTF-8 JSON, bounded, valid for the task's schema."""
        return check_json_output(data, task.value)

    def stored_form(self, request_key: str, data: bytes) -> bytes:
        return envelope_json(request_key, data)

    def cell_html(self, data: bytes, *, alt: str, caption: str) -> str:
        text = open_envelope(data).decode("utf-8", errors="replace")[:600]
        return f"<pre class='plx-json' title='{html.escape(alt)}'>{html.escape(text)}</pre>"


JSON = JsonKind()


def envelope_json(request_key: str, answer: bytes) -> bytes:
    """How a JSON output (an ``analyze`` answer) is stored: inside an envelope that names the
    request it answers.

    Why: the store is content-addressed and scores are keyed by the output's hash. Two products
    analysed as the same category get byte-identical answers, but a score such as
    ``category_match`` depends on each product's own label, so each answer must be an object of
    its own. The answer itself is kept byte for byte (``answer`` is its text).
    """
    return json.dumps({"request_key": request_key, "answer": answer.decode("utf-8")},
                      sort_keys=True).encode()


def open_envelope(stored: bytes) -> bytes:
    """The answer inside :func:`envelope_json`'s envelope (bytes that are no envelope pass)."""
    try:
        body = json.loads(stored)
    except ValueError:
        return stored
    if isinstance(body, dict) and set(body) == {"request_key", "answer"}:
        return str(body["answer"]).encode()
    return stored
