"""Every ``PIXELLAB_*`` setting, read in one place and validated.

Why one module: the variables used to be read in twelve, each with its own default and its own
way of failing on a typo (``PIXELLAB_WEBHOOK_PORT=80a`` was a bare ``ValueError`` deep in a
sweep). Here each is a typed field with its default and its reason; a bad value is one
:class:`~pixellab.errors.ConfigError` naming the variable. :func:`current` reads the
environment when called, so a test or a notebook that changes a variable sees the change; a
:class:`~pixellab.workbench.Workbench` reads it once and carries it.

Secrets are not settings: provider keys and webhook secrets are read where they are used and
never held here, so a ``Settings`` can be printed or logged.

pydantic-settings does the reading (one model, ``PIXELLAB_`` prefix, types and bounds checked),
the library the rest of the configuration already validates with.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pixellab.errors import ConfigError

ProjectLabel = Annotated[str, Field(min_length=1, max_length=64,
                                    pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
"""A project label paid calls are counted under (``PIXELLAB_PROJECT``, a sweep's ``project``)."""


class Settings(BaseSettings):
    """What the environment says. Field ``x`` is ``PIXELLAB_X``."""

    model_config = SettingsConfigDict(env_prefix="PIXELLAB_", extra="ignore", frozen=True,
                                      env_ignore_empty=True)

    home: Path = Path(".pixellab")
    """The data dir: ``ledger.duckdb``, ``store/``, ``defaults.toml``, ``catalog/``."""
    store: str | None = None
    """Where outputs go instead of ``<home>/store``: a folder or any fsspec URL."""
    catalog: str | None = None
    """More catalog folders or files, ``os.pathsep``-separated, read after the others."""
    defaults: Path | None = None
    """The routing table ``generate`` follows, instead of ``<home>/defaults.toml``."""
    categories: Path | None = None
    """The analysis taxonomy, instead of the package's ``intel/categories.toml``."""
    prompts: Path = Path("prompts")
    """The folder of ``name@version.j2`` prompt templates."""

    clip_backbone: str = "ViT-B-32"
    clip_pretrained: str = "laion2b_s34b_b79k"
    """A pretrained tag looked up in the local hub cache; ``none`` = random init (tests)."""
    clip_checkpoint: Path | None = None
    clip_download: bool = False
    """Allow open_clip to download weights (off: CLIP never reaches the network unasked)."""

    ledger_batch_window_s: float = Field(default=1.0, ge=0.0, le=60.0)
    """How long a sweep lets finished attempts gather before one commit (0 = commit each at
    once). Larger spends less CPU per attempt; smaller lets a notebook reading the ledger live
    see progress sooner and loses less to a kill (the next run settles it either way)."""

    executor: Literal["threads", "ray"] = "threads"
    """Where the score pass measures outputs (:mod:`pixellab.executors`)."""
    ray_address: str | None = None
    """With ``executor = ray``: a cluster to join (``auto``, ``ray://host:10001``); none starts
    a local one."""

    spend: Path | None = None
    """The spend policy (caps and alerts), instead of ``<home>/spend.toml``."""
    project: ProjectLabel = "default"
    """The project label paid calls are counted under (a sweep's ``project`` overrides it)."""

    webhook_url: str = ""
    """The public base URL providers post webhooks to; empty keeps webhooks off."""
    webhook_host: str = "127.0.0.1"
    webhook_port: int = Field(default=8787, ge=1, le=65535)

    fal_queue_url: str | None = None
    fal_run_url: str | None = None
    fal_rest_url: str | None = None
    fal_cdn_url: str | None = None
    """fal-client's hosts, e.g. the emulator's for a zero-cost dry run."""
    fal_jwks_url: str | None = None

    @field_validator("webhook_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.strip().rstrip("/")

    @property
    def catalog_paths(self) -> tuple[Path, ...]:
        return tuple(Path(p) for p in (self.catalog or "").split(os.pathsep) if p)


def current() -> Settings:
    """The settings the environment holds now; :class:`ConfigError` naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        variable = "PIXELLAB_" + str(error["loc"][0]).upper() if error["loc"] else "PIXELLAB_*"
        raise ConfigError(f"{variable}: {error['msg']}") from None
