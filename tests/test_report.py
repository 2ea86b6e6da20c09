"""Report tables: pass means every gate held, and a missing metric is missing, not zero."""

from __future__ import annotations

import math
from pathlib import Path

from pixellab import report
from pixellab.ledger import Ledger


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
    board = report.leaderboard(report.scored_requests(ledger, ["s"])).set_index("arm")
    assert board.loc["local:a", "pass_rate"] == 0.5
    assert board.loc["local:b", "pass_rate"] == 0.0  # a missing gate metric does not pass


def test_a_missing_primary_metric_stays_missing_in_the_mean(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.duckdb")
    seed(ledger)
    board = report.leaderboard(report.scored_requests(ledger, ["s"])).set_index("arm")
    assert board.loc["local:a", "mean_score"] == 0.5
    assert math.isnan(board.loc["local:b", "mean_score"])


def test_failures_carry_the_provider_reason(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.duckdb")
    seed(ledger)
    failed = report.failures(report.scored_requests(ledger, ["s"]))
    assert "ContentRejected: refused" in set(failed["reason"])
    assert len(failed) == 3  # h2 failed its gate, h3's gate is missing, k3 failed outright
