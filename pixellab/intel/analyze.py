"""Product analysis, run: ``analyze`` is a task like any other.

It runs through the catalog and a fallback chain (``openai:gpt-4o`` with structured outputs,
then the offline ``local:rules``), every attempt is in the ledger, and the result is validated
before it counts. What an answer may say, and why scraped text cannot steer it, is in
:mod:`pixellab.intel.taxonomy`; how answers are recorded is :mod:`pixellab.intel.records`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pixellab.intel.records import record_analyses
from pixellab.intel.taxonomy import ProductAnalysis, parse_analysis, product_data
from pixellab.media.json import open_envelope
from pixellab.routing import generate
from pixellab.tasks import Task


@dataclass(frozen=True)
class AnalysisResult:
    """One product's analysis as the chain answered it (or why it could not)."""

    product_id: str
    analysis: ProductAnalysis | None
    model_id: str | None
    request_key: str
    error: str | None = None
    reused: bool = False


def analyze_products(products: Sequence[Any], workbench: Any, *,
                     routes: Any = None) -> list[AnalysisResult]:
    """Analyse each product (a :class:`~pixellab.datasets.Product` with an image) through the
    routed ``analyze`` chain, exactly like any other task (ledger, budget-free retries,
    fallbacks, validation), and record the answers in ``analyses``."""
    results: list[AnalysisResult] = []
    for product in products:
        data = product_data(product.fields())
        done = generate(product.image, Task.ANALYZE, workbench=workbench, routes=routes,
                        params={"product": data}, title=product.title,
                        product_id=product.id)
        record_analyses(workbench.ledger, workbench.store, [done.request_key])
        answer = None
        if done.succeeded and done.outcome.output_sha256:
            answer = parse_analysis(open_envelope(workbench.store.get(
                done.outcome.output_sha256, "application/json")))
        results.append(AnalysisResult(
            product_id=product.id, analysis=answer, model_id=done.outcome.model_id,
            request_key=done.request_key, reused=done.reused,
            error=None if done.succeeded else
            f"{done.outcome.error_class}: {done.outcome.error_message}"))
    return results
