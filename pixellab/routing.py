"""Auto-routing: the chain a product's task should run, from ``defaults.toml``, and running it.

``pixellab select`` writes the routing table (see :mod:`pixellab.selection`); this module reads it.
Which chain a request gets, in order of preference:

1. ``routes.<task>.<category>`` when that category has a decision (a non-empty chain);
2. ``routes.<task>."*"``, the global default, for an unknown category or one without a decision;
3. the catalog's chain for the task when there is no routing table or it has nothing for the
   task.

The :class:`Route` says which of these it used, so a surprising choice can be traced to its
evidence. :func:`generate` then runs the chain like a one-request sweep: the same runner
(retries, fallbacks, validation), the same ledger rows, the same content-addressed store, and
the same ``request_key``: generating the same image twice calls no provider the second time.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pixellab.blocking import run_blocking
from pixellab.budget import Budget
from pixellab.catalog import Catalog, Model, load_catalog
from pixellab.config_files import load_toml_model
from pixellab.datasets import Product
from pixellab.errors import ConfigError
from pixellab.ledger import Ledger, LedgerWriter, queries
from pixellab.media import EXTENSIONS
from pixellab.prompts import load_prompt
from pixellab.requests import Request, file_sha256
from pixellab.runner import RequestOutcome, Runner
from pixellab.settings import current as current_settings
from pixellab.tasks import Task
from pixellab.workbench import Workbench, routes_path_for

ALL_CATEGORIES = "*"
"""The category key of the global default: every category pooled."""


class RouteEntry(BaseModel):
    """One category × task of the routing table; the evidence fields are kept as written."""

    model_config = ConfigDict(extra="allow", frozen=True)

    chain: list[str] = Field(default_factory=list)
    verdict: str = ""


class RoutingTable(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    routes: dict[Task, dict[str, RouteEntry]] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)
    source: str = ""


def default_routes_path(home: str | os.PathLike[str] | None = None) -> Path:
    """``<home>/defaults.toml`` for an explicit data dir, else ``$PIXELLAB_DEFAULTS``, else
    ``<PIXELLAB_HOME>/defaults.toml``."""
    return routes_path_for(home, current_settings())


def load_routes(path: str | os.PathLike[str] | None = None) -> RoutingTable | None:
    """The routing table at ``path`` (default :func:`default_routes_path`), ``None`` when there
    is none; a malformed file is a :class:`ConfigError` naming the file and the key."""
    path = Path(path) if path is not None else default_routes_path()
    if not path.exists():
        return None
    return load_toml_model(path, RoutingTable, what="routing table",
                           extra={"source": str(path)})


@dataclass(frozen=True)
class Route:
    task: Task
    category: str
    chain: tuple[Model, ...]
    source: str
    """Where the chain came from, in words (the file and key, or the catalog)."""
    verdict: str = ""

    @property
    def model_ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.chain)


def route(product: Product | str | None, task: Task | str, *,
          routes: RoutingTable | str | os.PathLike[str] | None = None,
          catalog: Catalog | None = None) -> Route:
    """The chain ``task`` should run for ``product`` (a :class:`Product`, a category name, or
    ``None`` for no category); see the module docstring for the order of preference."""
    task = Task(task)
    catalog = catalog or load_catalog()
    category = product.category if isinstance(product, Product) else (product or "")
    table = routes if isinstance(routes, RoutingTable) else load_routes(routes)
    cells = table.routes.get(task, {}) if table is not None else {}
    for key, label in ((category, category), (ALL_CATEGORIES, "the global default")):
        entry = cells.get(key) if key else None
        if entry is None or not entry.chain:
            continue
        models = []
        for position, model_id in enumerate(entry.chain):
            if model_id not in catalog.models:
                raise ConfigError(f"unknown model {model_id!r}: the catalog no longer has it; "
                                  "run `pixellab select` again or edit the chain",
                                  path=table.source if table else None,
                                  key=f"routes.{task.value}.{key}.chain[{position}]")
            models.append(catalog.models[model_id])
        why = "" if key == category else (
            f" (no decision for category {category!r})" if category else " (no category given)")
        assert table is not None
        return Route(task=task, category=category, chain=tuple(models), verdict=entry.verdict,
                     source=f"{table.source}: routes.{task.value}.{key_text(key)}, {label}{why}")
    reason = ("no routing table" if table is None
              else f"{table.source} has no decision for {task.value}")
    return Route(task=task, category=category, chain=catalog.chain(task),
                 source=f"the catalog's {task.value} chain ({reason})")


def key_text(key: str) -> str:
    return f'"{key}"' if key == ALL_CATEGORIES else key


def current_defaults(routes: RoutingTable | None, catalog: Catalog) -> dict[tuple[str, str], str]:
    """(task, category) → the first model of the chain in use today: the routing table's where
    it decides, else the catalog's chain (as the global default)."""
    current: dict[tuple[str, str], str] = {
        (task.value, ALL_CATEGORIES): chain[0] for task, chain in catalog.chains.items() if chain}
    if routes is not None:
        for task, cells in routes.routes.items():
            for category, entry in cells.items():
                if entry.chain:
                    current[(task.value, category)] = entry.chain[0]
    return current


# -- running a routed request --------------------------------------------------------------------


@dataclass(frozen=True)
class Generated:
    route: Route
    request_key: str
    outcome: RequestOutcome
    reused: bool
    """True when the ledger already had this request's output: no provider was called."""
    stored_at: str | None
    """The output's path in the store."""
    written_to: Path | None
    """Where a copy was written (``out``), if asked for."""

    @property
    def succeeded(self) -> bool:
        return self.outcome.status == "succeeded"


def generate(image: str | os.PathLike[str], task: Task | str, *, category: str | None = None,
             workbench: Workbench | None = None,
             routes: RoutingTable | str | os.PathLike[str] | None = None,
             params: dict[str, Any] | None = None, prompt: str | None = None,
             title: str | None = None, seed: int = 0,
             out: str | os.PathLike[str] | None = None,
             product_id: str | None = None) -> Generated:
    """Route ``image`` for ``task`` and run the chain; see :func:`agenerate`."""
    workbench = workbench or Workbench()
    return run_blocking(agenerate(image, task, category=category, workbench=workbench,
                                  routes=routes, params=params, prompt=prompt, title=title,
                                  seed=seed, out=out, product_id=product_id),
                        cleanup=workbench.aclose)


async def agenerate(image: str | os.PathLike[str], task: Task | str, *,
                    category: str | None = None, workbench: Workbench | None = None,
                    routes: RoutingTable | str | os.PathLike[str] | None = None,
                    params: dict[str, Any] | None = None, prompt: str | None = None,
                    title: str | None = None, seed: int = 0,
                    out: str | os.PathLike[str] | None = None,
                    product_id: str | None = None) -> Generated:
    """Run one routed request: the route's chain with fallbacks, validation, the ledger and the
    store, exactly as a sweep would (no sweep id). A request that already succeeded is reused."""
    workbench = workbench or Workbench()
    task = Task(task)
    path = Path(image)
    if not path.is_file():
        raise ConfigError(f"no image file at {path}")
    chosen = route(category, task, routes=routes, catalog=workbench.catalog)
    product = Product(id=product_id or path.stem,
                      title=title or path.stem.replace("-", " ").replace("_", " "),
                      description="", category=category or "uncategorized", image=path)
    template = load_prompt(prompt) if prompt else None
    text = template.render(product.fields()) if template else None
    request_params = {**(params or {}), "seed": seed}
    request = Request.build(
        product_id=product.id, category=product.category, task=task, chain=chosen.chain,
        arm="route:" + ">".join(chosen.model_ids), image_path=path,
        input_sha256=file_sha256(path), prompt=template, prompt_text=text, params=request_params)
    key = request.request_key
    ledger = workbench.ledger
    stored = queries.request_output(ledger, key) if ledger.succeeded_request_keys([key]) else None
    reused = stored is not None
    if stored is not None:
        outcome = RequestOutcome(key, "succeeded", model_id=stored[0], output_sha256=stored[1])
    else:
        ledger.write([Ledger.plan_request(request.row())])
        writer = LedgerWriter(ledger, batch_window_s=workbench.settings.ledger_batch_window_s)
        governor = workbench.spend_governor()
        try:
            runner = Runner(catalog=workbench.catalog, providers=workbench.providers,
                            writer=writer, store=workbench.store, concurrency=1,
                            budget=Budget(None, governor=governor),
                            resume=ledger.resume_state([key]))
            summary = await runner.run([request])
        finally:
            writer.close()
            if governor is not None:
                await asyncio.to_thread(governor.flush)
        outcome = summary.outcomes[0]
    stored_at = written = None
    if outcome.status == "succeeded" and outcome.output_sha256:
        media_type = (queries.output_media_type(ledger, outcome.output_sha256)
                      or "application/octet-stream")
        stored_at = workbench.store.path_for(outcome.output_sha256, media_type)
        if out is not None:
            written = Path(out)
            if written.is_dir() or not written.suffix:  # a folder: name the file
                written = written / f"{path.stem}.{task.value}{EXTENSIONS.get(media_type, '')}"
            written.parent.mkdir(parents=True, exist_ok=True)
            data = workbench.store.get(outcome.output_sha256, media_type)
            tmp = written.with_name(written.name + ".part")
            tmp.write_bytes(data)
            shutil.move(tmp, written)
    return Generated(route=chosen, request_key=key, outcome=outcome, reused=reused,
                     stored_at=stored_at, written_to=written)
