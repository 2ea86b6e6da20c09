"""Plugins: providers and catalogs other packages add through entry points.

A provider is registered under the ``pixellab.providers`` entry-point group (name → a class or
factory taking no arguments that returns a :class:`~pixellab.providers.base.Provider`), and
its models under ``pixellab.catalogs`` (name → a package whose ``*.toml`` files are catalog
files). pixellab's own four register the same way in its ``pyproject.toml``; this is how
``llm`` and ``papermill`` take plugins, and it means installing a package is all it takes.

Why names are read here, below the catalog, and classes loaded only by
:func:`pixellab.providers.default_providers`: validating a catalog needs to know which
provider names exist, not to import their SDKs.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.resources
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixellab.errors import ConfigError

PROVIDER_GROUP = "pixellab.providers"
CATALOG_GROUP = "pixellab.catalogs"

SHIPPED: dict[str, str] = {
    "local": "pixellab.providers.local:LocalProvider",
    "replicate": "pixellab.providers.replicate:ReplicateProvider",
    "fal": "pixellab.providers.fal:FalProvider",
    "openai": "pixellab.providers.openai:OpenAIProvider",
}
"""pixellab's own entry points, as its ``pyproject.toml`` declares them; used as they are when
pixellab runs from a source tree that was never installed (no entry points to read)."""


@dataclass(frozen=True)
class ProviderEntry:
    """One registered provider: its name, what to load (``module:attribute``) and who
    registered it (a distribution name)."""

    name: str
    target: str
    source: str

    def load(self) -> Callable[[], Any]:
        """The provider's class or factory; :class:`ConfigError` naming the plugin when it
        cannot be imported."""
        module, _, attribute = self.target.partition(":")
        try:
            loaded = importlib.import_module(module)
            for part in attribute.split(".") if attribute else []:
                loaded = getattr(loaded, part)
        except Exception as exc:  # a plugin's import error is the plugin's, said as such
            raise ConfigError(f"provider plugin {self.name!r} ({self.source}: {self.target}) "
                              f"cannot be loaded: {type(exc).__name__}: {exc}") from None
        if not callable(loaded):
            raise ConfigError(f"provider plugin {self.name!r} ({self.source}: {self.target}) "
                              "is not a class or factory")
        return loaded


def _entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
    return sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name)


def _source(entry: importlib.metadata.EntryPoint) -> str:
    return entry.dist.name if entry.dist is not None else "unknown distribution"


@functools.cache
def provider_entries() -> dict[str, ProviderEntry]:
    """Every registered provider by name. Two distributions claiming one name with different
    targets is a :class:`ConfigError` (which one runs must never depend on install order)."""
    entries: dict[str, ProviderEntry] = {}
    for point in _entry_points(PROVIDER_GROUP):
        entry = ProviderEntry(point.name, point.value, _source(point))
        before = entries.get(point.name)
        if before is not None and before.target != entry.target:
            raise ConfigError(f"provider {point.name!r} is registered twice: by {before.source} "
                              f"({before.target}) and by {entry.source} ({entry.target}); "
                              "uninstall one")
        entries[point.name] = entry
    shipped = {name: entries.pop(name, ProviderEntry(name, target, "pixellab"))
               for name, target in SHIPPED.items()}
    return {**shipped, **entries}  # pixellab's own first, then plugins by name


def provider_names() -> tuple[str, ...]:
    """The names a catalog may use as a model's provider."""
    return tuple(provider_entries())


@functools.cache
def catalog_folders() -> tuple[Path, ...]:
    """The folders of catalog files that plugins ship (``pixellab.catalogs``), by name."""
    folders = []
    for point in _entry_points(CATALOG_GROUP):
        try:
            folders.append(Path(str(importlib.resources.files(point.value))))
        except (ImportError, TypeError, ValueError) as exc:
            raise ConfigError(f"catalog plugin {point.name!r} ({_source(point)}: "
                              f"{point.value}) cannot be found: {exc}") from None
    return tuple(folders)
