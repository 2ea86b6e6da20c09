"""The ledger: one DuckDB file, the only place results and money are recorded.

Reports, routing tables and notebooks are all derived from it.

Concurrency (DuckDB allows one process to hold a file read-write, and while it does no other
process can open it, not even read-only): the ledger never keeps a connection open between
operations. Each write opens, commits one transaction and closes, so the file lock is held for
milliseconds. A sweep funnels its writes through :class:`LedgerWriter`, which groups everything
that queued up while the previous commit ran into one transaction (group commit), so throughput
grows with load while every caller still waits for its own write to be durable. A notebook reads
a running sweep with :meth:`Ledger.query`, which opens read-only, retries briefly if a commit is
in progress, and closes at once. Do not hold a ``duckdb.connect`` on the file in a notebook: it
would lock the sweep out.
"""

from __future__ import annotations

from pixellab.ledger import queries
from pixellab.ledger.database import BLOCKING_REASONS, Ledger, ResumeState
from pixellab.ledger.journal import SubmitJournal
from pixellab.ledger.rows import Row, Statement, as_json, coalesce, money, now
from pixellab.ledger.schema import SCHEMA_VERSION
from pixellab.ledger.writer import LedgerWriter

__all__ = ["BLOCKING_REASONS", "SCHEMA_VERSION", "Ledger", "LedgerWriter", "ResumeState", "Row",
           "Statement", "SubmitJournal", "as_json", "coalesce", "money", "now", "queries"]
