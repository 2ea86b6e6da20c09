"""The ledger's tables, as numbered migrations: a file is brought to :data:`SCHEMA_VERSION` on
open, and a file written by a newer pixellab is refused."""

from __future__ import annotations

SCHEMA_VERSION = 6
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """create table sweeps (
            sweep_id varchar primary key, name varchar, task varchar, spec json,
            budget_usd decimal(18, 6), status varchar, message varchar,
            created_at timestamp, updated_at timestamp)""",
        """create table requests (
            request_key varchar primary key, product_id varchar, category varchar,
            task varchar, arm varchar, chain json, prompt_id varchar, prompt_hash varchar,
            prompt_text varchar, params json, seed integer, input_sha256 varchar,
            status varchar, model_id varchar, output_sha256 varchar, error_class varchar,
            error_reason varchar, error_message varchar,
            created_at timestamp, updated_at timestamp)""",
        """create table sweep_requests (
            sweep_id varchar, request_key varchar, primary key (sweep_id, request_key))""",
        """create table attempts (
            attempt_id varchar primary key, request_key varchar, sweep_id varchar,
            attempt_no integer, provider varchar, model_id varchar, provider_job_id varchar,
            status varchar, error_class varchar, error_reason varchar, error_message varchar,
            retryable boolean, started_at timestamp, finished_at timestamp, latency_s double,
            credits decimal(18, 6), usd decimal(18, 6), cost_estimated boolean,
            output_sha256 varchar)""",
        """create table outputs (
            sha256 varchar primary key, media_type varchar, width integer, height integer,
            bytes bigint, created_at timestamp)""",
        """create table costs (
            attempt_id varchar primary key, request_key varchar, sweep_id varchar,
            provider varchar, model_id varchar, credits decimal(18, 6), usd decimal(18, 6),
            estimated boolean, created_at timestamp)""",
        """create table scores (
            output_sha256 varchar, metric varchar, scorer_version varchar, value double,
            missing_reason varchar, details json, created_at timestamp,
            primary key (output_sha256, metric, scorer_version))""",
    ],
    # What an adapter needs to poll a job again after a crash (e.g. fal's status/result URLs).
    2: ["alter table attempts add column provider_context json"],
    # Pairwise human judgements from the review notebook (pixellab.ratings). ``output_a`` is the
    # one shown on the left; ``winner`` is 'a', 'b' or 'tie'.
    3: ["""create table ratings (
            rating_id varchar primary key, rater varchar, rated_at timestamp,
            task varchar, category varchar, product_id varchar,
            output_a varchar, output_b varchar, arm_a varchar, arm_b varchar,
            winner varchar, sweep_id varchar, comment varchar)"""],
    # Product analyses (pixellab.intel.records): the parsed answer of every succeeded
    # ``analyze`` request, so "what did we decide this product is" is one SQL query away.
    4: ["""create table analyses (
            request_key varchar primary key, product_id varchar, input_sha256 varchar,
            model_id varchar, category varchar, audience varchar, aesthetic varchar,
            suggested_tasks json, confidence double, output_sha256 varchar,
            created_at timestamp)"""],
    # Models an adaptive sweep stopped running (pixellab.adaptive), with the evidence.
    5: ["""create table adaptive_drops (
            sweep_id varchar, arm varchar, look integer, products integer, leader varchar,
            difference double, difference_low double, difference_high double,
            p_value double, threshold double, reason varchar, created_at timestamp,
            primary key (sweep_id, arm))"""],
    # A video output's measured length: what cost per second of video is computed on.
    6: ["alter table outputs add column duration_s double"],
}

