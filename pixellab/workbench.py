"""The workbench: the ledger, store, catalog and providers one piece of work uses.

No global state: two workbenches in one notebook (say, a scratch ledger and the team's) never
fight. Where data goes: ``PIXELLAB_HOME`` (default ``./.pixellab``) holds ``ledger.duckdb`` and
``store/``; ``PIXELLAB_STORE`` moves the store to any fsspec URL.
"""

from __future__ import annotations

import os
from pathlib import Path

from pixellab.catalog import Catalog, load_catalog
from pixellab.ledger import Ledger
from pixellab.providers.base import Provider
from pixellab.providers.local import LocalProvider
from pixellab.store import Store


def default_home() -> Path:
    return Path(os.environ.get("PIXELLAB_HOME") or ".pixellab")


class Workbench:
    def __init__(self, home: str | os.PathLike[str] | None = None, *,
                 catalog: Catalog | None = None, store_url: str | None = None,
                 providers: dict[str, Provider] | None = None) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.home / "ledger.duckdb")
        self.store = Store(store_url or os.environ.get("PIXELLAB_STORE") or self.home / "store")
        self.catalog = catalog if catalog is not None else load_catalog()
        self.providers: dict[str, Provider] = providers or {"local": LocalProvider()}

    def __repr__(self) -> str:
        return f"Workbench(home={str(self.home)!r}, store={self.store.root!r})"
