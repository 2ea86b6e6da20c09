"""Provider adapters, and the registry that builds them.

Every provider, pixellab's four included, is registered under the ``pixellab.providers``
entry-point group (see :mod:`pixellab.plugins`); :func:`default_providers` builds one of each.
A provider that cannot be loaded does not take the others down: its models are skipped with
the reason, exactly as a provider without credentials is (the reason is in the ledger).
"""

from __future__ import annotations

from pixellab.errors import ConfigError
from pixellab.plugins import provider_entries
from pixellab.providers.base import Job, Provider, ProviderRequest


class UnavailableProvider:
    """Stands in for a registered provider that failed to load: every model of it is skipped
    (``missing_credentials`` says why), nothing is called."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def missing_credentials(self) -> str | None:
        return self.reason

    async def submit(self, request: ProviderRequest) -> Job:  # pragma: no cover - never called
        raise ConfigError(self.reason)

    async def poll(self, job: Job) -> Job:  # pragma: no cover - never called
        raise ConfigError(self.reason)

    async def cancel(self, job: Job) -> None:  # pragma: no cover - never called
        return None


def default_providers() -> dict[str, Provider]:
    """One instance of every registered provider, by name; those without credentials skip
    their models with a reason.

    Keys come from the environment only (``REPLICATE_API_TOKEN``, ``FAL_KEY``,
    ``OPENAI_API_KEY``); base URLs from the SDKs' own variables (``REPLICATE_BASE_URL``,
    ``OPENAI_BASE_URL``) or ``PIXELLAB_FAL_*_URL``, which is how a dry run targets the emulator.
    """
    providers: dict[str, Provider] = {}
    for name, entry in provider_entries().items():
        try:
            provider = entry.load()()
        except ConfigError as exc:
            provider = UnavailableProvider(name, str(exc))
        except Exception as exc:  # a plugin's constructor failing is the plugin's problem
            provider = UnavailableProvider(
                name, f"provider plugin {name!r} ({entry.source}) failed to start: "
                      f"{type(exc).__name__}: {exc}")
        providers[name] = provider
    return providers
