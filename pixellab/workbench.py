"""The workbench: the ledger, store, catalog and providers one piece of work uses.

No global state: two workbenches in one notebook (say, a scratch ledger and the team's) never
fight. Where data goes: ``PIXELLAB_HOME`` (default ``./.pixellab``) holds ``ledger.duckdb`` and
``store/``; ``PIXELLAB_STORE`` moves the store to any fsspec URL; a notebook may name its own
ledger file (``ledger_path``), e.g. a scratch ledger beside the team's.
"""

from __future__ import annotations

import os
from pathlib import Path

from pixellab.catalog import Catalog, load_catalog
from pixellab.ledger import Ledger
from pixellab.providers import default_providers
from pixellab.providers.base import Provider
from pixellab.store import Store


def default_home() -> Path:
    return Path(os.environ.get("PIXELLAB_HOME") or ".pixellab")


def resolve_paths(ledger_path: str | os.PathLike[str] | None = None,
                  store_path: str | None = None) -> tuple[Path, str]:
    """Where a notebook's ledger and store are: the given paths, or the defaults (empty
    strings, as papermill parameters default to, mean the defaults)."""
    home = default_home()
    return (Path(ledger_path) if ledger_path else home / "ledger.duckdb",
            store_path or os.environ.get("PIXELLAB_STORE") or str(home / "store"))


class Workbench:
    def __init__(self, home: str | os.PathLike[str] | None = None, *,
                 catalog: Catalog | None = None, store_url: str | None = None,
                 providers: dict[str, Provider] | None = None,
                 ledger_path: str | os.PathLike[str] | None = None) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(Path(ledger_path) if ledger_path else self.home / "ledger.duckdb")
        self.store = Store(store_url or os.environ.get("PIXELLAB_STORE") or self.home / "store")
        self.catalog = catalog if catalog is not None else load_catalog()
        self.providers: dict[str, Provider] = providers or default_providers()

    def __repr__(self) -> str:
        return f"Workbench(home={str(self.home)!r}, store={self.store.root!r})"
