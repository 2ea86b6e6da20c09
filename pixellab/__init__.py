"""pixellab: decide, with evidence, which AI model, prompt and fallback chain to use per
product category and photo task.

The package imports nothing heavy at the top level; ``pixellab.route`` and
``pixellab.generate`` (auto-routing from ``defaults.toml``) load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["generate", "route"]


def __getattr__(name: str) -> Any:
    if name in ("route", "generate"):
        from pixellab import routing

        return getattr(routing, name)
    raise AttributeError(f"module 'pixellab' has no attribute {name!r}")
