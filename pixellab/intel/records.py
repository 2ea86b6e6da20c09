"""Analysis records: the parsed answer of every succeeded ``analyze`` request, in the ledger's
``analyses`` table, so "what did we decide this product is" is one query away and prompts can
use a product's latest analysis.

Below sweeps and routing (it needs only the ledger, the store and the taxonomy), so a sweep can
record its analyses without importing how a single analysis is routed
(:mod:`pixellab.intel.analyze`).
"""

from __future__ import annotations

from collections.abc import Sequence

from pixellab.intel.taxonomy import parse_analysis
from pixellab.ledger import Ledger, queries
from pixellab.ledger.queries import latest_analyses
from pixellab.media.json import open_envelope
from pixellab.store import Store

__all__ = ["latest_analyses", "record_analyses"]


def record_analyses(ledger: Ledger, store: Store, request_keys: Sequence[str]) -> int:
    """Parse the stored answers of these (succeeded ``analyze``) requests into the
    ``analyses`` table; requests already recorded are skipped. Returns rows written."""
    if not request_keys:
        return 0
    statements = []
    for row in queries.unrecorded_analyses(ledger, request_keys).itertuples(index=False):
        try:
            answer = parse_analysis(open_envelope(store.get(row.output_sha256, row.media_type)))
        except (OSError, ValueError):
            continue  # validated before it was stored; a store that lost it is not an answer
        statements.append(Ledger.record_analysis(
            row.request_key, row.product_id, row.input_sha256, row.model_id,
            category=answer.category, audience=answer.audience, aesthetic=answer.aesthetic,
            suggested_tasks=answer.suggested_tasks, confidence=answer.confidence,
            output_sha256=row.output_sha256))
    if statements:
        ledger.write(statements)
    return len(statements)
