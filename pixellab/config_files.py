"""Reading a user's YAML or TOML file (a sweep spec, a notebook's parameters, a catalog, a
routing table, task scoring, a taxonomy, marketplace profiles) into a mapping or a model.

These files come from schedulers and colleagues, so reading one is bounded and its errors are one
line that never quotes the file: PyYAML's messages reprint the offending lines, which for a file
that is not what it claims (a link to ``/etc/shadow``) would echo it into a log. A file is
refused over :data:`MAX_CONFIG_BYTES`; YAML anchors and aliases may not expand past
:data:`MAX_NODES` values (the "billion laughs" file is a few lines long).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from pixellab.errors import ConfigError

MAX_CONFIG_BYTES = 1024 * 1024
"""A sweep spec or a parameters file is a few hundred bytes."""

MAX_NODES = 100_000
"""Values in a loaded file, aliases expanded."""


def read_mapping(path: str | os.PathLike[str], *, what: str = "file") -> dict[str, Any]:
    """The mapping a YAML file (or TOML, by its ``.toml`` suffix) holds; :class:`ConfigError`
    naming the file, and the line where the parser says, otherwise."""
    path = Path(path)
    kind = "TOML" if path.suffix == ".toml" else "YAML"
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"is over {MAX_CONFIG_BYTES // 1024} KiB; a {what} is much "
                              "smaller", path=str(path))
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or type(exc).__name__}",
                          path=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("is not UTF-8 text", path=str(path)) from None
    try:
        raw = tomllib.loads(text) if kind == "TOML" else yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"not valid YAML: {exc.problem or exc.context}{where}",
                          path=str(path)) from None
    except (yaml.YAMLError, tomllib.TOMLDecodeError, RecursionError, ValueError) as exc:
        message = " ".join(str(exc).split())[:200] if kind == "TOML" else type(exc).__name__
        raise ConfigError(f"not valid {kind}: {message}", path=str(path)) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"a {what} must be a mapping", path=str(path))
    _count_nodes(raw, path)
    return raw


def _count_nodes(value: Any, path: Path) -> None:
    """Refuse a document that expands past :data:`MAX_NODES` values (aliases reuse objects, so
    the walk counts what a consumer would walk), without recursion."""
    budget = MAX_NODES
    stack = [value]
    while stack:
        item = stack.pop()
        budget -= 1
        if budget < 0:
            raise ConfigError(f"holds over {MAX_NODES} values (aliases expanded)",
                              path=str(path))
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


M = TypeVar("M", bound=BaseModel)


def read_toml(path: str | os.PathLike[str], *, what: str = "file") -> dict[str, Any]:
    """A TOML file's table, read as :func:`read_mapping` reads any config file (bounded,
    UTF-8, errors naming the file and the line)."""
    path = Path(path)
    if path.suffix != ".toml":  # read_mapping picks the parser by suffix
        raise ConfigError(f"a {what} must be a .toml file", path=str(path))
    return read_mapping(path, what=what)


def error_key(loc: Sequence[int | str], prefix: str = "") -> str | None:
    """A pydantic error location as the dotted key a user finds in the file."""
    parts = [prefix] if prefix else []
    for item in loc:
        if item == "[key]":
            continue
        text = str(item)
        parts.append(f'"{text}"' if ":" in text or "/" in text else text)
    return ".".join(parts) or None


def invalid(exc: ValidationError, path: str | os.PathLike[str], prefix: str = "") -> ConfigError:
    """One line for a failed validation: the first error's key and reason (with the value when
    it is short), then the others' keys and reasons."""
    def text(error: Any) -> str:
        message = str(error["msg"]).removeprefix("Value error, ")
        if error.get("type") not in ("missing", "value_error") and "input" in error:
            shown = repr(error["input"])
            if len(shown) <= 60:
                message += f" (got {shown})"
        return message

    errors = exc.errors()
    message = text(errors[0])
    more = [f"{error_key(e['loc'], prefix)}: {text(e)}" for e in errors[1:]]
    if more:
        message += "; also " + "; ".join(more)
    return ConfigError(message, path=str(path), key=error_key(errors[0]["loc"], prefix))


def load_toml_model(path: str | os.PathLike[str], model: type[M], *, what: str = "file",
                    extra: Mapping[str, Any] | None = None) -> M:
    """Read a TOML file and validate it as ``model`` (with ``extra`` fields added), or raise
    :class:`ConfigError` naming the file, the key and the reason."""
    raw = read_toml(path, what=what)
    try:
        return model.model_validate({**raw, **(extra or {})})
    except ValidationError as exc:
        raise invalid(exc, path) from None
