"""The catalog is data: validated on load, with errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixellab.catalog import load_catalog
from pixellab.errors import ConfigError, UnknownModel
from pixellab.tasks import Task


def write(folder: Path, text: str, name: str = "extra.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return folder


def test_shipped_catalog_loads_with_a_chain_for_every_local_task() -> None:
    catalog = load_catalog()
    for task in (Task.ENHANCE, Task.REMOVE_BACKGROUND, Task.PACKSHOT, Task.UPSCALE):
        assert catalog.chain(task), task


def test_every_local_model_is_free() -> None:
    catalog = load_catalog()
    local = [m for m in catalog.models.values() if m.provider == "local"]
    assert local and all(m.pricing.usd_per_unit == 0 for m in local)


def test_adding_a_model_is_a_toml_edit(tmp_path: Path) -> None:
    folder = write(tmp_path / "cat", """
[models."local:autoenhance-strong"]
tasks = ["enhance"]
endpoint = "autoenhance"
defaults = { strength = 1.0 }
pricing = { unit = "image", usd_per_unit = 0.0 }

[chains]
enhance = ["local:autoenhance-strong", "local:autoenhance"]
""")
    catalog = load_catalog(folder)
    assert [m.id for m in catalog.chain("enhance")] == ["local:autoenhance-strong",
                                                        "local:autoenhance"]


def test_a_user_file_overrides_a_shipped_model_by_id(tmp_path: Path) -> None:
    folder = write(tmp_path / "cat", """
[models."local:autoenhance"]
tasks = ["enhance"]
endpoint = "autoenhance"
timeout_s = 5
pricing = { unit = "image", usd_per_unit = 0.0 }
""")
    assert load_catalog(folder).model("local:autoenhance").timeout_s == 5


@pytest.mark.parametrize(("text", "key", "reason"), [
    ('[models."local:x"]\ntasks = ["enhance"]\npricing = { usd_per_unit = "cheap" }\n',
     'models."local:x".pricing.usd_per_unit', "valid number"),
    ('[models."local:x"]\ntasks = ["paint"]\npricing = { usd_per_unit = 0 }\n',
     'models."local:x".tasks.0', "Input should be"),
    ('[models."local:x"]\ntasks = ["enhance"]\n', 'models."local:x".pricing', "Field required"),
    ('[models."nocolon"]\ntasks = ["enhance"]\npricing = { usd_per_unit = 0 }\n',
     'models."nocolon"', "provider:slug"),
    ('[models."mars:x"]\ntasks = ["enhance"]\npricing = { usd_per_unit = 0 }\n',
     'models."mars:x".provider', "unknown provider"),
    ('[models."local:x"]\ntasks = ["enhance"]\ntimeout = 3\npricing = { usd_per_unit = 0 }\n',
     'models."local:x".timeout', "Extra inputs"),
    ('[chains]\nenhance = ["local:nope"]\n', None, "unknown model 'local:nope'"),
    ('[chains]\npaint = ["local:autoenhance"]\n', "chains.paint", "unknown task"),
    ("[models\nbroken", None, "not valid TOML"),
])
def test_a_bad_file_gives_one_error_naming_file_key_and_reason(
        tmp_path: Path, text: str, key: str | None, reason: str) -> None:
    folder = write(tmp_path / "cat", text, name="bad.toml")
    with pytest.raises(ConfigError) as info:
        load_catalog(folder)
    message = str(info.value)
    assert "bad.toml" in message
    assert reason in message
    if key:
        assert key in message
    assert "\n" not in message


def test_a_chain_cannot_use_a_model_for_a_task_it_does_not_serve(tmp_path: Path) -> None:
    folder = write(tmp_path / "cat", '[chains]\nenhance = ["local:cutout"]\n')
    with pytest.raises(ConfigError, match="does not serve enhance"):
        load_catalog(folder)


def test_unknown_model_id_is_a_clear_error() -> None:
    with pytest.raises(UnknownModel, match="local:nope"):
        load_catalog().model("local:nope")


def test_provider_inputs_map_normalized_names_and_drop_undeclared_ones() -> None:
    model = load_catalog().model("local:packshot")
    mapped = model.provider_inputs({"size": 800, "prompt": "ignored", "seed": 1})
    assert mapped["size"] == 800 and "prompt" not in mapped and "seed" not in mapped
    assert mapped["fill"] == model.defaults["fill"]


def test_estimates_follow_the_pricing_unit(tmp_path: Path) -> None:
    folder = write(tmp_path / "cat", """
[models."replicate:x"]
tasks = ["upscale"]
pricing = { unit = "megapixel", usd_per_unit = 0.01, credits_per_unit = 1 }
""")
    model = load_catalog(folder).model("replicate:x")
    assert model.estimate_usd(megapixels=3.2) == pytest.approx(0.04)
    assert model.estimate_credits(megapixels=3.2) == 4


# --- billing as data -------------------------------------------------------------------------


def test_each_paid_provider_states_what_it_bills_per_outcome_with_its_sources() -> None:
    catalog = load_catalog()
    for provider in ("replicate", "fal", "openai"):
        rule = catalog.provider_settings(provider).billing
        assert rule.sources and all(s.startswith("https://") for s in rule.sources), provider
    fal = catalog.provider_settings("fal").billing
    assert (fal.succeeded, fal.failed, fal.timeout, fal.rejected) == (
        "billed", "free", "free", "billed")
    assert catalog.provider_settings("replicate").billing.failed == "usage"


def test_a_token_priced_image_model_prices_each_token_class() -> None:
    from pixellab.billing import Usage

    model = load_catalog().model("openai:gpt-image-1.5")
    usage = Usage(text_input_tokens=4, image_input_tokens=323, image_output_tokens=1056)
    assert model.pricing.cost_usd(usage) == pytest.approx(
        4 * 5e-6 + 323 * 8e-6 + 1056 * 32e-6)


def test_a_reservation_rate_below_a_token_class_price_is_refused(tmp_path: Path) -> None:
    folder = write(tmp_path / "cat", """
[models."openai:cheap-bound"]
tasks = ["enhance"]
[models."openai:cheap-bound".pricing]
unit = "token"
usd_per_unit = 0.00001
units_per_call = 100
token_prices = { image_output = 0.00004 }
""")
    with pytest.raises(ConfigError, match="highest token price"):
        load_catalog(folder)


def test_a_user_file_that_tunes_a_provider_keeps_its_billing_rule(tmp_path: Path) -> None:
    folder = write(tmp_path / "cat", "[providers.fal]\nmax_concurrency = 3\n")
    settings = load_catalog(folder).provider_settings("fal")
    assert settings.max_concurrency == 3 and settings.billing.failed == "free"


def test_a_model_may_override_one_outcome_of_its_providers_rule(tmp_path: Path) -> None:
    folder = write(tmp_path / "cat", """
[models."fal:free-failures-billed"]
tasks = ["enhance"]
pricing = { unit = "image", usd_per_unit = 0.01 }
billing = { failed = "billed" }
""")
    catalog = load_catalog(folder)
    rule = catalog.billing(catalog.model("fal:free-failures-billed"))
    assert (rule.failed, rule.timeout) == ("billed", "free")
