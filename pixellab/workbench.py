"""The workbench: everything one piece of work uses, resolved from one home.

No global state: two workbenches in one notebook (say, a scratch ledger and the team's) never
fight. A workbench reads the settings once (:mod:`pixellab.settings`) and decides from its home
which files the work follows:

=====================  =====================================================================
``ledger.duckdb``      the ledger (a notebook may name another: ``ledger_path``)
``store/``             outputs, unless ``PIXELLAB_STORE`` names a folder or fsspec URL
``catalog/*.toml``     models and chains, over the package's and plugins' (then
                       ``PIXELLAB_CATALOG``)
``defaults.toml``      the routing table ``generate`` follows (``PIXELLAB_DEFAULTS`` when the
                       home is the default one)
``tasks.toml``         task scoring (metrics, gates, composites), else the package's
``categories.toml``    the analysis taxonomy, else ``PIXELLAB_CATEGORIES``, else the package's
``marketplaces.toml``  marketplace compliance profiles, else the package's
``spend.toml``         daily and monthly caps and alerts (``PIXELLAB_SPEND`` when the home
                       is the default one); the spend book beside the ledger
=====================  =====================================================================
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from pixellab.catalog import Catalog, load_catalog
from pixellab.intel.taxonomy import Taxonomy, load_taxonomy
from pixellab.ledger import Ledger
from pixellab.providers import default_providers
from pixellab.providers.base import Provider
from pixellab.scoring import TaskScoring, load_task_scoring
from pixellab.scoring.quality import MarketplaceProfile, load_marketplace_profiles
from pixellab.settings import Settings
from pixellab.settings import current as current_settings
from pixellab.spend import SpendGovernor, governor_for
from pixellab.store import Store


def default_home() -> Path:
    return current_settings().home


def routes_path_for(home: str | os.PathLike[str] | None, settings: Settings) -> Path:
    """``<home>/defaults.toml`` for an explicit data dir, else ``$PIXELLAB_DEFAULTS``, else
    ``<PIXELLAB_HOME>/defaults.toml``."""
    if home is not None:
        return Path(home) / "defaults.toml"
    return settings.defaults or settings.home / "defaults.toml"


def resolve_paths(ledger_path: str | os.PathLike[str] | None = None,
                  store_path: str | None = None) -> tuple[Path, str]:
    """Where a notebook's ledger and store are: the given paths, or the defaults (empty
    strings, as papermill parameters default to, mean the defaults)."""
    settings = current_settings()
    return (Path(ledger_path) if ledger_path else settings.home / "ledger.duckdb",
            store_path or settings.store or str(settings.home / "store"))


class Workbench:
    def __init__(self, home: str | os.PathLike[str] | None = None, *,
                 catalog: Catalog | None = None, store_url: str | None = None,
                 providers: dict[str, Provider] | None = None,
                 ledger_path: str | os.PathLike[str] | None = None,
                 settings: Settings | None = None) -> None:
        self.settings = settings or current_settings()
        self._home_given = home is not None
        self.home = Path(home) if home is not None else self.settings.home
        self.home.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(Path(ledger_path) if ledger_path else self.home / "ledger.duckdb")
        self.store = Store(store_url or self.settings.store or self.home / "store")
        self.catalog = catalog if catalog is not None else load_catalog(home=self.home)
        self.providers: dict[str, Provider] = providers or default_providers()
        self._governors: dict[str, SpendGovernor | None] = {}

    async def aclose(self) -> None:
        """Close the connections the providers hold in the running loop: the synchronous runs
        (``Sweep.run``, ``pixellab.generate``) call it before their loop ends, so the next run
        starts clean (see :class:`pixellab.providers.base.LoopBound`). The workbench stays
        usable: a later call opens new ones."""
        for provider in self.providers.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()

    @property
    def spend_policy_path(self) -> Path:
        """``<home>/spend.toml``, else ``$PIXELLAB_SPEND`` for the default home."""
        own = self.home / "spend.toml"
        if self._home_given or own.exists() or self.settings.spend is None:
            return own
        return self.settings.spend

    def spend_governor(self, project: str | None = None) -> SpendGovernor | None:
        """The caps and alerts every paid call of this workbench is held to, for ``project``
        (default ``PIXELLAB_PROJECT``); None without a policy file. One per project, so the
        alerts one process sends are waited for once (:meth:`SpendGovernor.flush`)."""
        label = project or self.settings.project
        if label not in self._governors:
            self._governors[label] = governor_for(self.spend_policy_path, self.ledger.path,
                                                  label)
        return self._governors[label]

    @property
    def routes_path(self) -> Path:
        """The routing table this workbench's ``generate`` follows and ``select`` writes."""
        return routes_path_for(self.home if self._home_given else None, self.settings)

    def _own(self, name: str) -> Path | None:
        path = self.home / name
        return path if path.is_file() else None

    @functools.cached_property
    def task_scoring(self) -> dict[str, TaskScoring]:
        return load_task_scoring(self._own("tasks.toml"))

    @functools.cached_property
    def taxonomy(self) -> Taxonomy:
        return load_taxonomy(self._own("categories.toml") or self.settings.categories)

    @functools.cached_property
    def marketplaces(self) -> dict[str, MarketplaceProfile]:
        return load_marketplace_profiles(self._own("marketplaces.toml"))

    def __repr__(self) -> str:
        return f"Workbench(home={str(self.home)!r}, store={self.store.root!r})"
