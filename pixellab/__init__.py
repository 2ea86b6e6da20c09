"""pixellab: decide, with evidence, which AI model, prompt and fallback chain to use per
product category and photo task, then serve that decision.

The public face, in the order a notebook uses it::

    from pixellab import Workbench, Sweep, SweepSpec, select, route, generate, load_catalog

    bench = Workbench(".pixellab")                       # ledger, store, catalog, providers
    result = Sweep(SweepSpec.from_file("sweep.yaml"), bench).run()
    selection = select(bench.ledger, [result.sweep_id])  # the decision, with intervals
    generate("photo.jpg", "packshot", workbench=bench)   # follows defaults.toml

Nothing heavy loads at import: each name imports its module on first use (PEP 562), so
``import pixellab`` stays cheap for the CLI and for plugins.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pixellab.catalog import load_catalog
    from pixellab.routing import generate, route
    from pixellab.selection import select
    from pixellab.sweep import Sweep, SweepSpec
    from pixellab.workbench import Workbench

_EXPORTS = {
    "Workbench": "pixellab.workbench",
    "Sweep": "pixellab.sweep",
    "SweepSpec": "pixellab.sweep",
    "select": "pixellab.selection",
    "route": "pixellab.routing",
    "generate": "pixellab.routing",
    "load_catalog": "pixellab.catalog",
}

__all__ = ["Sweep", "SweepSpec", "Workbench", "generate", "load_catalog", "route", "select"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pixellab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
