"""Pointing pixellab's real-SDK adapters at the loopback emulator, for the tests that need it."""

from __future__ import annotations

import time

import fal_client.client as fal_wire
import pytest

from pixellab.emulator import Emulator
from pixellab.providers.base import Provider
from pixellab.providers.fal import FalProvider
from pixellab.providers.local import LocalProvider
from pixellab.providers.openai import OpenAIProvider
from pixellab.providers.replicate import ReplicateProvider


def point_fal_at(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """fal-client has no base-URL option and reads its hosts at import: its module constants
    are patched (restored after the test) and ``SSL_CERT_FILE`` set before a client makes its
    first request (``AsyncCDNTokenManager`` copies ``REST_URL`` when it is built)."""
    monkeypatch.setenv("SSL_CERT_FILE", emulator.ca_pem)
    for constant, value in (("QUEUE_URL_FORMAT", emulator.fal_queue_url),
                            ("RUN_URL_FORMAT", emulator.fal_run_url),
                            ("REST_URL", emulator.fal_rest_url),
                            ("CDN_URL", emulator.fal_cdn_url)):
        monkeypatch.setattr(fal_wire, constant, value)


def point_sdks_at(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys of realistic shape, the emulator's CA, and fal-client's hard-coded hosts redirected."""
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_" + "t" * 37)
    monkeypatch.setenv("FAL_KEY", "emu-key-id:emu-key-secret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-emulator-" + "x" * 20)
    point_fal_at(emulator, monkeypatch)


def emulated_providers(emulator: Emulator) -> dict[str, Provider]:
    return {"local": LocalProvider(),
            "replicate": ReplicateProvider(base_url=emulator.replicate_base_url),
            "fal": FalProvider(),
            "openai": OpenAIProvider(base_url=emulator.openai_base_url)}


def remote_models(endpoint: str, openai_endpoint: str, usd_per_image: float,
                  timeout_s: float) -> str:
    """A catalog file with one enhance model per remote provider, all on the emulator."""
    return "".join(f"""
[models."{provider}:{name}"]
tasks = ["enhance"]
endpoint = "{name}"
inputs = {{ prompt = "prompt"{image} }}
pricing = {{ unit = "image", usd_per_unit = {usd_per_image} }}
timeout_s = {timeout_s}
""" for provider, name, image in (("replicate", endpoint, ', image = "input_image"'),
                                  ("fal", endpoint, ', image = "image_url"'),
                                  ("openai", openai_endpoint, "")))


def settled(emulator: Emulator, provider: str | None = None, since: int = 0,
            timeout_s: float = 30.0) -> None:
    """Wait until every job the emulator accepted (of ``provider``, from the ``since``-th on)
    has ended: jobs a client let go of still run, and are billed when they end."""
    deadline = time.monotonic() + timeout_s
    terminal = {"succeeded", "failed", "canceled"}
    while any(j.status not in terminal for j in emulator.creates(provider)[since:]):
        assert time.monotonic() < deadline, "emulated jobs did not finish"
        time.sleep(0.02)
