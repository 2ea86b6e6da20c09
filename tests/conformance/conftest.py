"""Fixtures for the conformance tests: a recording emulator and a product photo."""

from __future__ import annotations

import ssl

from pixellab.emulator import Emulator, ResponseRecord
from tests.conformance.support import Schema, errors


def tls(emu: Emulator) -> ssl.SSLContext:
    """Trust the emulator's HTTPS port (and nothing else)."""
    return ssl.create_default_context(cafile=emu.ca_pem)


def nonconforming(records: list[ResponseRecord], schema_for: object) -> list[str]:
    """Every recorded JSON answer that breaks its schema, as ``METHOD route status: error``.

    ``schema_for(record)`` returns the schema, ``None`` for a non-JSON answer (bytes), or
    raises ``LookupError`` for an answer no schema covers (which is reported too).
    """
    problems: list[str] = []
    for record in records:
        if record.route.startswith("/__emu/"):
            continue  # the emulator's own control routes (and webhook sinks)
        where = f"{record.method} {record.route} {record.status}"
        try:
            schema: Schema | None = schema_for(record)  # type: ignore[operator]
        except LookupError as exc:
            problems.append(f"{where}: no schema ({exc})")
            continue
        if schema is None:
            continue
        try:
            body = record.json()
        except ValueError:
            problems.append(f"{where}: not JSON: {record.body[:80]!r}")
            continue
        problems.extend(f"{where}: {line}" for line in errors(schema, body))
    return problems
