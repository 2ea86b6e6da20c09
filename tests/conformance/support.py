"""Helpers shared by the conformance tests: schema building blocks and the validator."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

Schema = dict[str, Any]

TIMESTAMP: Schema = {
    "type": "string",
    "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$",
}
"""An RFC 3339 timestamp with a zone (what the SDKs parse as a tz-aware datetime)."""

URL: Schema = {"type": "string", "pattern": r"^(https?|data):"}
STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
ANY: Schema = {}


def nullable(schema: Schema) -> Schema:
    """``schema`` or JSON null."""
    return {"anyOf": [schema, {"type": "null"}]}


def closed(properties: dict[str, Schema], required: list[str] | tuple[str, ...] = ()
           ) -> Schema:
    """An object with exactly these properties (others fail), ``required`` among them."""
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


def opened(properties: dict[str, Schema], required: list[str] | tuple[str, ...] = ()
           ) -> Schema:
    """An object with these properties; others are allowed (the source does not enumerate)."""
    return {"type": "object", "properties": properties, "required": list(required)}


def errors(schema: Schema, instance: Any) -> list[str]:
    """Every way ``instance`` breaks ``schema``, as readable lines (empty: it conforms)."""
    validator = Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(instance), key=lambda e: list(e.path))]
