"""The emulator bills the catalog's remote models at the same list prices the catalog believes.

Sources: each price in :data:`pixellab.emulator.billing.MODEL_PRICES` names the provider page it
was read from (Replicate model and pricing pages, fal model pages, OpenAI model pages); the
catalog (``pixellab/catalog/*.toml``) holds pixellab's own, offline-researched figures. The two
are kept apart on purpose (the emulator never imports the catalog) and compared here, so a
price that drifts on either side fails. Discrepancies found against a published figure are
listed in :data:`KNOWN_DISCREPANCIES` (reported, not silently aligned); the test fails when one
disappears, so the list stays true.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pixellab.catalog import load_catalog
from pixellab.emulator import billing

EMULATOR = Path(billing.__file__).parent

KNOWN_DISCREPANCIES: dict[str, str] = {}
"""catalog model id -> why the catalog and the published price differ."""


def _remote_models() -> list[tuple[str, str, str, object]]:
    catalog = load_catalog()
    found = []
    for model_id, model in sorted(catalog.models.items()):
        if model.provider not in ("replicate", "fal", "openai"):
            continue
        found.append((model_id, model.provider, model.endpoint.partition(":")[0],
                      model.pricing))
    return found


REMOTE = _remote_models()


def test_the_catalog_has_remote_models_to_compare() -> None:
    units = {pricing.unit for *_, pricing in REMOTE}  # type: ignore[attr-defined]
    assert {"image", "megapixel"} <= units


@pytest.mark.parametrize(("model_id", "provider", "name", "pricing"), REMOTE,
                         ids=[m[0] for m in REMOTE])
def test_the_emulator_prices_each_catalog_model_as_the_catalog_does(
        model_id: str, provider: str, name: str, pricing: object) -> None:
    unit = pricing.unit  # type: ignore[attr-defined]
    usd = pricing.usd_per_unit  # type: ignore[attr-defined]
    price = billing.MODEL_PRICES[provider].get(name)
    assert price is not None, f"the emulator has no list price for {model_id}"
    assert price.source, f"{model_id}: the emulator's price names no source"
    if model_id in KNOWN_DISCREPANCIES:
        assert (price.unit, price.usd_per_unit) != (unit, usd), (
            f"{model_id} agrees now: drop it from KNOWN_DISCREPANCIES")
        return
    if unit in ("image", "megapixel", "gpu_second", "second"):
        assert (price.unit, price.usd_per_unit) == (unit, pytest.approx(usd)), model_id
    token_prices = getattr(pricing, "token_prices", None)
    if token_prices is not None:
        assert price.tokens is not None, f"{model_id}: the emulator has no per-class prices"
        for token_class in ("text_input", "image_input", "image_output", "cached_text_input",
                            "cached_image_input", "text_output"):
            listed = getattr(token_prices, token_class, None)
            if listed is not None:
                assert getattr(price.tokens, token_class) == pytest.approx(listed), (
                    f"{model_id}.{token_class}")


def test_unknown_test_models_fall_back_to_a_price_per_image_by_operation() -> None:
    price = billing.price_for("replicate", "emu/enhance", "enhance")
    assert (price.unit, price.usd_per_unit) == ("image", 0.02)
    assert billing.price_for("openai", "gpt-4o-mini", "chat").unit == "call"


def test_the_emulator_never_reads_the_catalog() -> None:
    for source in EMULATOR.glob("*.py"):
        assert "pixellab.catalog" not in source.read_text(), source.name
