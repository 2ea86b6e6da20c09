"""The model catalog: which models exist, what they cost, and the fallback chain per task.

The catalog is data: TOML files shipped in this package (``pixellab/catalog/*.toml``), then the
user's files (``$PIXELLAB_HOME/catalog/*.toml`` or any folder passed explicitly), later files
overriding earlier ones model by model and chain by chain. Adding a model is a TOML edit, never a
code change. Every file is validated on load; a bad file raises
:class:`~pixellab.errors.ConfigError` whose one-line message names the file, the key and the reason.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pixellab.billing import BillingRule, Charge, TokenPrices, Usage
from pixellab.config_files import invalid, read_toml
from pixellab.errors import ConfigError, UnknownModel
from pixellab.plugins import catalog_folders, provider_names
from pixellab.settings import current as current_settings
from pixellab.tasks import Task

PACKAGE_CATALOG_DIR = Path(__file__).parent

PricingUnit = Literal["image", "megapixel", "second", "gpu_second", "token", "call"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Pricing(_Strict):
    """Price per unit, in the provider's credits and in USD.

    ``unit`` is what the provider bills: an output image, an output megapixel, a second of video,
    a second of GPU time, a token, or a call.
    """

    unit: PricingUnit = "image"
    usd_per_unit: float = Field(ge=0, le=10_000)
    credits_per_unit: float = Field(default=0, ge=0, le=1_000_000)
    units_per_call: float | None = Field(default=None, gt=0, le=1e9)
    """Upper bound of billed units in one call (GPU-seconds, seconds of video, tokens) used to
    reserve budget; without it seconds are bounded by the model's timeout."""
    token_prices: TokenPrices | None = None
    """Per-class USD per token, for providers that price token classes differently (OpenAI's
    GPT image models: text in, image in, image out). ``usd_per_unit`` stays the rate the budget
    reserves at, so it must be at least the highest class price."""

    @model_validator(mode="after")
    def _reserve_covers_every_class(self) -> Pricing:
        if self.token_prices is not None:
            if self.unit != "token":
                raise ValueError("token_prices needs unit = \"token\"")
            if self.usd_per_unit < self.token_prices.highest:
                raise ValueError(
                    f"usd_per_unit ({self.usd_per_unit:g}) must be at least the highest token "
                    f"price ({self.token_prices.highest:g}), so that the budget reservation "
                    "bounds a call")
        return self

    def cost_usd(self, usage: Usage | None) -> float | None:
        """What ``usage`` costs at these prices; None when the usage does not say (the caller
        then charges the catalog estimate)."""
        if usage is None:
            return None
        if self.unit == "token" and usage.tokens:
            if self.token_prices is not None:
                return self.token_prices.cost(usage)
            return usage.tokens * self.usd_per_unit
        if self.unit == "gpu_second" and usage.seconds is not None:
            return usage.seconds * self.usd_per_unit
        if self.unit == "second" and usage.video_seconds is not None:
            return usage.video_seconds * self.usd_per_unit
        return None

    @property
    def per_output(self) -> bool:
        """Priced by what is delivered (an image, a megapixel, a second of video, a call), not by
        time or tokens consumed: a job that delivered nothing used none of it."""
        return self.unit in ("image", "megapixel", "second", "call")

    def credits_for(self, usd: float) -> float:
        """Credits at the same ratio as the list price (0 for a free model)."""
        if self.usd_per_unit <= 0:
            return 0.0
        return usd / self.usd_per_unit * self.credits_per_unit


class Model(_Strict):
    """One catalog entry. ``id`` is ``provider:slug``; ``endpoint`` is the provider-side name."""

    id: str
    provider: str
    slug: str
    endpoint: str
    tasks: tuple[Task, ...] = Field(min_length=1)
    inputs: dict[str, str] = Field(default_factory=dict)
    defaults: dict[str, Any] = Field(default_factory=dict)
    pricing: Pricing
    timeout_s: float = Field(default=120, gt=0, le=86_400)
    max_concurrency: int = Field(default=4, ge=1, le=1024)
    preserves_size: bool = False
    """The output has exactly the input's size (classical ops, most cut-out services), so a
    different size is an invalid output. Generative models pick their own size."""
    billing: dict[str, Charge] = Field(default_factory=dict)
    """Overrides of the provider's billing rule for this model (see :mod:`pixellab.billing`)."""
    description: str = ""

    @field_validator("billing")
    @classmethod
    def _known_outcomes(cls, value: dict[str, Charge]) -> dict[str, Charge]:
        unknown = sorted(set(value) - set(BillingRule.model_fields) - {"sources"})
        if unknown:
            raise ValueError(f"unknown outcome {unknown[0]!r}")
        return value

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        known = provider_names()
        if value not in known:
            raise ValueError(f"unknown provider {value!r}; expected one of {', '.join(known)} "
                             f"(a provider package registers more: see README)")
        return value

    def provider_inputs(self, normalized: Mapping[str, Any]) -> dict[str, Any]:
        """Map normalized inputs (``image``, ``prompt``, ``scale``…) to the provider's names.

        Defaults come first, then every normalized input the model declares in ``inputs``; inputs
        the model does not declare are dropped, because a provider rejects unknown fields.
        """
        mapped = dict(self.defaults)
        for name, value in normalized.items():
            if name in self.inputs and value is not None:
                mapped[self.inputs[name]] = value
        return mapped

    def estimate_usd(self, *, megapixels: float = 1.0, seconds: float = 0.0,
                     tokens: int = 0) -> float:
        """Upper-bound estimate of one call, used to reserve budget before submitting."""
        return self._units(megapixels, seconds, tokens) * self.pricing.usd_per_unit

    def estimate_credits(self, *, megapixels: float = 1.0, seconds: float = 0.0,
                         tokens: int = 0) -> float:
        return self._units(megapixels, seconds, tokens) * self.pricing.credits_per_unit

    def _units(self, megapixels: float, seconds: float, tokens: int) -> float:
        unit = self.pricing.unit
        if self.pricing.units_per_call is not None and unit not in ("image", "call"):
            return self.pricing.units_per_call
        if unit == "megapixel":
            return math.ceil(megapixels)
        if unit in ("second", "gpu_second"):
            return seconds or self.timeout_s
        if unit == "token":
            return float(tokens)
        return 1.0


class ProviderSettings(_Strict):
    """Limits shared by every model of one provider (an account's concurrency quota), and what
    the provider bills per outcome (:class:`~pixellab.billing.BillingRule`)."""

    max_concurrency: int = Field(default=8, ge=1, le=1024)
    billing: BillingRule = Field(default_factory=BillingRule)


class Catalog(BaseModel):
    """Models by id and chains by task, after merging every catalog file."""

    model_config = ConfigDict(frozen=True)

    models: dict[str, Model]
    chains: dict[Task, tuple[str, ...]]
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    sources: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _chains_reference_models(self) -> Catalog:
        for task, chain in self.chains.items():
            for model_id in chain:
                model = self.models.get(model_id)
                if model is None:
                    raise ValueError(f"chains.{task.value}: unknown model {model_id!r}")
                if task not in model.tasks:
                    raise ValueError(
                        f"chains.{task.value}: model {model_id!r} does not serve {task.value}")
        return self

    def model(self, model_id: str) -> Model:
        try:
            return self.models[model_id]
        except KeyError:
            raise UnknownModel(
                f"unknown model {model_id!r}; `pixellab catalog` lists them") from None

    def chain(self, task: Task | str) -> tuple[Model, ...]:
        task = Task(task)
        ids = self.chains.get(task)
        if not ids:
            raise ConfigError(f"no chain for task {task.value!r}", key=f"chains.{task.value}")
        return tuple(self.models[i] for i in ids)

    def provider_settings(self, provider: str) -> ProviderSettings:
        return self.providers.get(provider, ProviderSettings())

    def billing(self, model: Model) -> BillingRule:
        """The provider's billing rule with the model's own overrides applied."""
        rule = self.provider_settings(model.provider).billing
        return rule.override(model.billing) if model.billing else rule

    def for_task(self, task: Task | str) -> list[Model]:
        task = Task(task)
        return [m for m in self.models.values() if task in m.tasks]


_Parsed = tuple[dict[str, Model], dict[Task, tuple[str, ...]], dict[str, ProviderSettings]]


def _parse_file(path: Path) -> _Parsed:
    raw = read_toml(path, what="catalog file")
    unknown = set(raw) - {"models", "chains", "providers"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError("unknown top-level table; expected models, chains or providers",
                          path=str(path), key=key)
    for table in ("models", "chains", "providers"):
        if not isinstance(raw.get(table, {}), dict):
            raise ConfigError("must be a table", path=str(path), key=table)
    providers: dict[str, ProviderSettings] = {}
    for name, body in raw.get("providers", {}).items():
        key = f"providers.{name}"
        if name not in provider_names():
            raise ConfigError(f"unknown provider; expected one of {', '.join(provider_names())}",
                              path=str(path), key=key)
        try:
            providers[name] = ProviderSettings.model_validate(body)
        except ValidationError as exc:
            raise invalid(exc, path, prefix=key) from None
    models: dict[str, Model] = {}
    for model_id, body in raw.get("models", {}).items():
        key = f'models."{model_id}"'
        if not isinstance(body, dict):
            raise ConfigError("must be a table", path=str(path), key=key)
        provider, sep, slug = model_id.partition(":")
        if not sep or not provider or not slug:
            raise ConfigError("model id must look like provider:slug", path=str(path), key=key)
        data = {"id": model_id, "provider": provider, "slug": slug, "endpoint": slug, **body}
        try:
            models[model_id] = Model.model_validate(data)
        except ValidationError as exc:
            raise invalid(exc, path, prefix=key) from None
    chains: dict[Task, tuple[str, ...]] = {}
    for task_name, chain in raw.get("chains", {}).items():
        key = f"chains.{task_name}"
        try:
            task = Task(task_name)
        except ValueError:
            raise ConfigError(f"unknown task; expected one of {', '.join(t.value for t in Task)}",
                              path=str(path), key=key) from None
        if not isinstance(chain, list) or not all(isinstance(m, str) for m in chain) or not chain:
            raise ConfigError("must be a non-empty list of model ids", path=str(path), key=key)
        chains[task] = tuple(chain)
    return models, chains, providers


def catalog_dirs(home: Path | None = None) -> list[Path]:
    """Where catalog files are read from, in override order (later wins): pixellab's own,
    those provider packages ship, ``<home>/catalog`` (home: the workbench's, else
    ``$PIXELLAB_HOME``), then ``$PIXELLAB_CATALOG``."""
    dirs = [PACKAGE_CATALOG_DIR, *catalog_folders()]
    settings = current_settings()
    user_dir = (home if home is not None else settings.home) / "catalog"
    if user_dir.is_dir():
        dirs.append(user_dir)
    dirs.extend(settings.catalog_paths)
    return dirs


def load_catalog(*extra_dirs: str | os.PathLike[str], include_defaults: bool = True,
                 home: Path | None = None) -> Catalog:
    """Read and validate every catalog file; later files override earlier ones by key."""
    dirs = (catalog_dirs(home) if include_defaults else []) + [Path(d) for d in extra_dirs]
    models: dict[str, Model] = {}
    chains: dict[Task, tuple[str, ...]] = {}
    providers: dict[str, ProviderSettings] = {}
    sources: list[str] = []
    for folder in dirs:
        files = sorted(folder.glob("*.toml")) if folder.is_dir() else [folder]
        for path in files:
            if folder.is_dir() and not path.resolve().is_relative_to(folder.resolve()):
                raise ConfigError(f"is a link to a file outside the catalog folder {folder}; "
                                  "catalog files must live in it", path=str(path))
            file_models, file_chains, file_providers = _parse_file(path)
            models.update(file_models)
            chains.update(file_chains)
            for name, settings in file_providers.items():  # a later file overrides by key
                before = providers.get(name)
                providers[name] = settings if before is None else before.model_copy(
                    update={key: getattr(settings, key) for key in settings.model_fields_set})
            sources.append(str(path))
    try:
        return Catalog(models=models, chains=chains, providers=providers,
                       sources=tuple(sources))
    except ValidationError as exc:
        raise ConfigError(str(exc.errors()[0]["msg"]).removeprefix("Value error, "),
                          path=", ".join(sources[-1:]) or None) from None
