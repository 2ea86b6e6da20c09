"""Sweeps: planning, request keys, fallback chains, budget stops, resuming, bad inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pixellab.errors import ConfigError
from pixellab.sweep import Sweep, SweepSpec
from pixellab.workbench import Workbench
from tests.conftest import BAD_INPUTS, write_dataset_with_bad_inputs


def spec(dataset: Path, **fields: object) -> SweepSpec:
    return SweepSpec.parse({"name": "t", "task": "enhance", "dataset": str(dataset), **fields})


def attempts(workbench: Workbench, sweep_id: str = "t") -> list[tuple]:
    frame = workbench.ledger.query(
        "select model_id, status, error_class, error_reason from attempts where sweep_id = ? "
        "order by started_at", [sweep_id])
    return list(frame.itertuples(index=False, name=None))


def test_plan_is_products_times_models_times_prompts_times_seeds(
        workbench: Workbench, dataset_dir: Path) -> None:
    sweep = Sweep(spec(dataset_dir, models=["local:autoenhance", "local:autoenhance-gentle"],
                       seeds=[0, 1]), workbench)
    assert len(sweep.plan()) == 4 * 2 * 2


def test_request_key_changes_with_anything_that_determines_the_output(
        workbench: Workbench, dataset_dir: Path) -> None:
    def key(**fields: object) -> str:
        sweep = Sweep(spec(dataset_dir, products=["p00"], **fields), workbench)
        return sweep.plan()[0].request_key

    base = key(models=["local:autoenhance"])
    assert base == key(models=["local:autoenhance"])
    assert base != key(models=["local:autoenhance-gentle"])  # same endpoint, other defaults
    assert base != key(models=["local:autoenhance"], seeds=[7])
    assert base != key(models=["local:autoenhance"], params={"strength": 0.9})
    assert base != key(models=["local:autoenhance"], prompts=["packshot-studio@1"])


def test_a_successful_run_stores_outputs_and_one_cost_row_per_attempt(
        workbench: Workbench, dataset_dir: Path) -> None:
    result = Sweep(spec(dataset_dir, models=["local:autoenhance"]), workbench).run()
    assert (result.succeeded, result.failed) == (4, 0)
    ledger = workbench.ledger
    assert ledger.scalar("select count(*) from costs") == 4
    assert ledger.scalar("select count(*) from attempts where status = 'succeeded'") == 4
    digest, media = ledger.query("select sha256, media_type from outputs limit 1").iloc[0]
    assert workbench.store.exists(digest, media)


def test_running_again_makes_zero_provider_calls_and_no_new_cost_rows(
        workbench: Workbench, dataset_dir: Path) -> None:
    sweep_spec = spec(dataset_dir, models=["local:autoenhance"])
    first = Sweep(sweep_spec, workbench).run()
    costs_before = workbench.ledger.scalar("select count(*) from costs")
    second = Sweep(sweep_spec, workbench).run()
    assert first.provider_calls == 4
    assert (second.provider_calls, second.cached) == (0, 4)
    assert workbench.ledger.scalar("select count(*) from costs") == costs_before


def test_a_failing_model_falls_back_to_the_next_in_the_chain(
        workbench: Workbench, dataset_dir: Path) -> None:
    result = Sweep(spec(dataset_dir, products=["p00"], chain=["local:broken",
                                                              "local:autoenhance"]),
                   workbench).run()
    assert result.succeeded == 1
    rows = attempts(workbench)
    assert [r[0] for r in rows] == ["local:broken"] * 3 + ["local:autoenhance"]
    assert rows[0][1:3] == ("failed", "ProviderUnavailable")
    assert workbench.ledger.scalar("select model_id from requests") == "local:autoenhance"


def test_a_blank_output_is_a_failed_attempt_and_moves_the_chain_on(
        workbench: Workbench, dataset_dir: Path) -> None:
    Sweep(spec(dataset_dir, products=["p00"], chain=["local:blank", "local:autoenhance"]),
          workbench).run()
    rows = attempts(workbench)
    assert rows[0] == ("local:blank", "failed", "InvalidOutput", "blank_black")
    assert len(rows) == 2  # an invalid output is not retried on the same model
    assert rows[1][:2] == ("local:autoenhance", "succeeded")


def test_a_no_op_output_is_rejected(workbench: Workbench, dataset_dir: Path) -> None:
    result = Sweep(spec(dataset_dir, products=["p00"], models=["local:noop"]), workbench).run()
    assert result.failed == 1
    assert attempts(workbench)[0][3] == "no_op"


def test_the_sweep_stops_before_it_would_exceed_its_budget(
        workbench: Workbench, dataset_dir: Path) -> None:
    # 4 requests at $0.05 each; $0.12 affords two.
    result = Sweep(spec(dataset_dir, models=["local:autoenhance-paid"], budget_usd=0.12,
                        concurrency=1), workbench).run()
    assert (result.succeeded, result.stopped) == (2, 2)
    assert "budget" in (result.stopped_reason or "")
    assert float(workbench.ledger.scalar("select sum(usd) from costs")) == pytest.approx(0.10)
    assert workbench.ledger.scalar("select status from sweeps") == "stopped_budget"


def test_resume_after_a_budget_stop_runs_only_what_is_left(
        workbench: Workbench, dataset_dir: Path) -> None:
    Sweep(spec(dataset_dir, models=["local:autoenhance-paid"], budget_usd=0.12,
               concurrency=1), workbench).run()
    result = Sweep(spec(dataset_dir, models=["local:autoenhance-paid"], budget_usd=1.0),
                   workbench).run()
    assert (result.cached, result.succeeded, result.provider_calls) == (2, 2, 2)
    assert float(workbench.ledger.scalar("select sum(usd) from costs")) == pytest.approx(0.20)


def test_sweep_resume_reloads_the_spec_from_the_ledger(
        workbench: Workbench, dataset_dir: Path) -> None:
    Sweep(spec(dataset_dir, models=["local:autoenhance"]), workbench).run()
    resumed = Sweep.resume("t", workbench)
    assert resumed.spec.models == ["local:autoenhance"]
    assert resumed.run().provider_calls == 0


def test_bad_input_images_fail_alone_with_a_clear_reason(
        workbench: Workbench, tmp_path: Path) -> None:
    root = write_dataset_with_bad_inputs(tmp_path / "bad")
    result = Sweep(spec(root, models=["local:autoenhance"]), workbench).run()
    assert (result.succeeded, result.failed) == (4, 3)
    frame = workbench.ledger.query(
        "select product_id, error_class, error_reason, error_message from requests "
        "where status = 'failed' order by product_id")
    reasons = dict(zip(frame["product_id"], frame["error_reason"], strict=True))
    assert reasons == BAD_INPUTS
    assert set(frame["error_class"]) == {"InvalidInputImage"}
    assert workbench.ledger.scalar("select count(*) from attempts where request_key in "
                                   "(select request_key from requests where status='failed')") == 0


def test_remove_background_outputs_are_scored_against_the_ground_truth_mask(
        workbench: Workbench, dataset_dir: Path) -> None:
    Sweep(SweepSpec.parse({"name": "rb", "task": "remove_background", "dataset": str(dataset_dir),
                           "models": ["local:cutout"]}), workbench).run()
    ious = workbench.ledger.query("select value from scores where metric = 'mask_iou'")["value"]
    assert len(ious) == 4 and ious.min() > 0.8


def test_rescoring_an_unchanged_sweep_writes_nothing(
        workbench: Workbench, dataset_dir: Path) -> None:
    sweep = Sweep(spec(dataset_dir, models=["local:autoenhance"]), workbench)
    assert sweep.run().scores_written > 0
    assert sweep.score() == 0


def test_a_model_for_another_task_is_refused_at_planning(
        workbench: Workbench, dataset_dir: Path) -> None:
    with pytest.raises(ConfigError, match="does not serve"):
        Sweep(spec(dataset_dir, models=["local:cutout"]), workbench).plan()


def test_editing_a_used_prompt_version_is_refused(
        workbench: Workbench, dataset_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "studio@1.j2").write_text("{{ title }} on white")
    monkeypatch.setenv("PIXELLAB_PROMPTS", str(prompts))
    Sweep(spec(dataset_dir, products=["p00"], models=["local:autoenhance"],
               prompts=["studio@1"]), workbench).run()
    (prompts / "studio@1.j2").write_text("{{ title }} on pure white")
    with pytest.raises(ConfigError, match="bump its version"):
        Sweep(spec(dataset_dir, products=["p00"], models=["local:autoenhance"],
                   prompts=["studio@1"]), workbench).plan()


def test_a_malformed_sweep_file_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: x\ntask: paint\n")
    with pytest.raises(ConfigError, match="s.yaml: task"):
        SweepSpec.from_file(path)


def test_dataset_copy_keeps_products_independent(workbench: Workbench, dataset_dir: Path,
                                                 tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(dataset_dir, copy)
    a = Sweep(spec(dataset_dir, products=["p00"], models=["local:autoenhance"]), workbench)
    b = Sweep(spec(copy, products=["p00"], models=["local:autoenhance"]), workbench)
    assert a.plan()[0].request_key == b.plan()[0].request_key  # same bytes, same key


def test_the_estimate_prices_what_would_run_before_anything_is_spent(
        workbench: Workbench, dataset_dir: Path) -> None:
    paid = Sweep(spec(dataset_dir, models=["local:autoenhance-paid"], seeds=[0, 1]), workbench)
    estimate = paid.estimate()
    assert (estimate.planned, estimate.to_run) == (8, 8)
    assert estimate.usd == pytest.approx(0.40) and estimate.credits == pytest.approx(16)
    assert estimate.by_model_usd == {"local:autoenhance-paid": pytest.approx(0.40)}
    assert workbench.ledger.scalar("select count(*) from attempts") == 0
    assert estimate.exceeds(0.30) and not estimate.exceeds(0.40) and not estimate.exceeds(None)
    paid.run()
    again = paid.estimate()
    assert (again.to_run, again.usd) == (0, 0.0)  # answered requests are free


def test_the_worst_case_estimate_counts_every_model_of_the_chain(
        workbench: Workbench, dataset_dir: Path) -> None:
    chain = Sweep(spec(dataset_dir, chain=["local:broken", "local:autoenhance-paid"]), workbench)
    estimate = chain.estimate()
    assert estimate.usd == 0.0  # the first model is free ...
    assert estimate.usd_worst == pytest.approx(0.20)  # ... and fails over to the paid one
