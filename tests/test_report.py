"""Report tables: pass means every gate held, a missing metric is missing, not zero, and the
recommended chain follows a rule that can be checked."""

from __future__ import annotations

import math
from pathlib import Path

import nbformat
import pandas as pd

from pixellab import evidence
from pixellab.ledger import Ledger
from pixellab.live import LiveProgress
from pixellab.notebook import WIDGET_VIEW, static_copy
from pixellab.runner import RequestOutcome
from pixellab.stats import wilson_interval


def seed(ledger: Ledger) -> None:
    cases = [("local:a", "succeeded", "h1"), ("local:a", "succeeded", "h2"),
             ("local:b", "succeeded", "h3"), ("local:b", "failed", None)]
    ledger.record_plan(Ledger.upsert_sweep("s", "s", "packshot", {}, None, "running"), "s", [
        dict(request_key=f"k{i}", product_id=f"p{i % 2}", category="kitchen", task="packshot",
             arm=arm, chain=[arm], prompt_id=None, prompt_hash=None, prompt_text=None, params={},
             seed=0, input_sha256="x") for i, (arm, _, _) in enumerate(cases)])
    rows = []
    for i, (arm, status, digest) in enumerate(cases):
        rows.append(Ledger.finish_request(f"k{i}", status=status, model_id=arm if digest else None,
                                          output_sha256=digest,
                                          error_class=None if digest else "ContentRejected",
                                          error_message=None if digest else "refused"))
        if digest:
            rows.append(Ledger.record_output(digest, "image/png", 10, 10, 100))
    rows += [
        Ledger.record_score("h1", "blank", "quality-1", 0.0, None, {}),
        Ledger.record_score("h1", "compliance_amazon_main", "quality-1", 1.0, None, {}),
        *(Ledger.record_score(h, "identity", "identity-1", 1.0, None, {})  # products kept
          for h in ("h1", "h2", "h3")),
        Ledger.record_score("h2", "blank", "quality-1", 0.0, None, {}),
        Ledger.record_score("h2", "compliance_amazon_main", "quality-1", 0.0, None, {}),
        Ledger.record_score("h3", "blank", "quality-1", 0.0, None, {}),
        Ledger.record_score("h3", "compliance_amazon_main", "quality-1", None,
                            "could not measure", {}),
    ]
    ledger.write(rows)


def test_pass_rate_counts_only_outputs_that_pass_every_gate(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.duckdb")
    seed(ledger)
    board = evidence.leaderboard(evidence.scored_requests(ledger, ["s"])).set_index("arm")
    assert board.loc["local:a", "pass_rate"] == 0.5
    assert board.loc["local:b", "pass_rate"] == 0.0  # a missing gate metric does not pass


def test_an_unmeasured_gate_is_missing_in_the_mean_and_a_failure_counts_zero(
        tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.duckdb")
    seed(ledger)
    frame = evidence.scored_requests(ledger, ["s"]).set_index("request_key")
    assert frame.loc["k0", "score"] == 1.0 and frame.loc["k1", "score"] == 0.0  # gate held/failed
    assert math.isnan(frame.loc["k2", "score"])  # its gate could not be measured: no score
    assert frame.loc["k3", "score"] == 0.0  # the model failed: nothing usable
    board = evidence.leaderboard(frame.reset_index()).set_index("arm")
    assert board.loc["local:a", "mean_score"] == 0.5 and board.loc["local:b", "mean_score"] == 0.0


def test_failures_carry_the_provider_reason(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.duckdb")
    seed(ledger)
    failed = evidence.failures(evidence.scored_requests(ledger, ["s"]))
    assert "ContentRejected: refused" in set(failed["reason"])
    assert len(failed) == 3  # h2 failed its gate, h3's gate is missing, k3 failed outright


# -- the decision helpers -------------------------------------------------------------------------

def test_wilson_interval_matches_published_values_and_never_collapses() -> None:
    low, high = wilson_interval(5, 5)  # 5/5 is not certainty
    assert (round(low, 4), high) == (0.5655, 1.0)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and round(high, 4) == 0.2775
    low, high = wilson_interval(81, 263)  # Newcombe (1998), method 3: 0.2553-0.3662
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_the_pareto_front_keeps_models_nothing_beats_on_both_quality_and_cost() -> None:
    table = pd.DataFrame({"arm": ["cheap-good", "dear-better", "dear-worse", "free-bad", "tie",
                                  "unscored"],
                          "usd_per_request": [0.01, 0.05, 0.06, 0.0, 0.01, 0.0],
                          "mean_score": [0.8, 0.9, 0.7, 0.2, 0.8, math.nan]})
    front = evidence.pareto_front(table).to_numpy().tolist()
    assert front == [True, True, False, True, True, False]


def test_failures_are_counted_by_model_and_kind_with_an_example(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.duckdb")
    seed(ledger)
    summary = evidence.failure_summary(evidence.scored_requests(ledger, ["s"]))
    by = {(r.arm, r.reason): (r.count, r.share) for r in summary.itertuples(index=False)}
    assert by == {("local:a", "failed a gate"): (1, 0.5), ("local:b", "failed a gate"): (1, 0.5),
                  ("local:b", "ContentRejected"): (1, 0.5)}
    assert "refused" in summary.loc[summary["reason"] == "ContentRejected", "example"].iloc[0]


def test_costs_group_by_day_model_and_sweep(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.duckdb")
    ledger.write([("insert into costs values (?, 'k', ?, 'fal', ?, 1, ?, false, ?)",
                   [f"a{i}", sweep, model, usd, f"2026-11-{day} 10:00:00"])
                  for i, (sweep, model, usd, day) in enumerate([
                      ("s1", "fal:x", 0.25, 24), ("s1", "fal:y", 0.5, 24),
                      ("s2", "fal:x", 1.0, 25)])])
    by_day = evidence.costs_by(ledger, None, ["day"])
    assert [(str(d), u) for d, u in zip(by_day["day"], by_day["usd"], strict=True)] == [
        ("2026-11-25", 1.0), ("2026-11-24", 0.75)]
    by_model = evidence.costs_by(ledger, ["s1"], ["model_id"]).set_index("model_id")
    assert by_model["usd"].to_dict() == {"fal:y": 0.5, "fal:x": 0.25}
    try:
        evidence.costs_by(ledger, None, ["month; drop table costs"])
    except ValueError as exc:
        assert "cannot group costs" in str(exc)
    else:
        raise AssertionError("an unknown grouping must be refused")


def test_the_static_page_drops_live_widgets_but_keeps_everything_else() -> None:
    nb = nbformat.v4.new_notebook(metadata={"widgets": {"state": {}}})
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("display_data", {WIDGET_VIEW: {"model_id": "m"},
                                                            "text/plain": "HBox()"}),
                    nbformat.v4.new_output("display_data", {"text/html": "<b>table</b>"})]
    nb.cells.append(cell)
    static = static_copy(nb)
    assert "widgets" not in static.metadata
    assert static.cells[0].outputs == [cell.outputs[1]]
    assert len(nb.cells[0].outputs) == 2  # the executed notebook itself is left as it was


def test_live_progress_counts_outcomes_per_model() -> None:
    live = LiveProgress({"k1": "local:a", "k2": "local:a", "k3": "local:b"})
    for key, status in (("k1", "succeeded"), ("k2", "failed"), ("k3", "succeeded")):
        live.done(RequestOutcome(request_key=key, status=status))
    table = live.table().set_index("model")
    assert table.loc["local:a"].to_dict() == {"succeeded": 1, "failed": 1, "stopped": 0}
    assert table.loc["local:b", "succeeded"] == 1
