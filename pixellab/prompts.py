"""Versioned prompt templates: ``name@version``, Jinja2 over product fields.

Templates live in ``prompts/<name>@<version>.j2``. A version is immutable once used: every
request stores the template's content hash, and planning a sweep refuses a template whose
hash differs from the one recorded for the same ``name@version`` (bump the version instead), so
results are always traceable to the exact words that produced them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from pixellab.errors import ConfigError

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False,
                          keep_trailing_newline=False)


@dataclass(frozen=True)
class Prompt:
    name: str
    version: str
    template: str
    path: Path

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()[:16]

    def render(self, fields: dict[str, Any]) -> str:
        try:
            return _ENV.from_string(self.template).render(**fields).strip()
        except jinja2.TemplateError as exc:
            raise ConfigError(f"cannot render: {exc}", path=str(self.path)) from None


def prompts_dir() -> Path:
    return Path(os.environ.get("PIXELLAB_PROMPTS", "prompts"))


def load_prompt(prompt_id: str, folder: str | os.PathLike[str] | None = None) -> Prompt:
    """Load ``name@version`` from ``folder`` (default ``./prompts``)."""
    name, sep, version = prompt_id.partition("@")
    if not sep or not name or not version:
        raise ConfigError(f"prompt id {prompt_id!r} must look like name@version")
    path = Path(folder or prompts_dir()) / f"{prompt_id}.j2"
    if not path.exists():
        raise ConfigError(f"prompt {prompt_id!r} not found", path=str(path))
    template = path.read_text(encoding="utf-8")
    try:
        _ENV.parse(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"template syntax error line {exc.lineno}: {exc.message}",
                          path=str(path)) from None
    return Prompt(name=name, version=version, template=template, path=path)
