"""The fuzzing harness: every target reads untrusted input and must end in a result or a clear
pixellab error (:class:`pixellab.errors.PixellabError`), never in any other exception.

Bounded so it stays quick in the README test command: each target runs
``PIXELLAB_FUZZ_EXAMPLES`` examples (default 200), derandomized (the same examples on every
run, so CI is reproducible), with no per-example deadline (a loaded CI machine is slow, not
wrong). ``HYPOTHESIS_PROFILE=explore`` runs 5,000 random examples per target with hypothesis'
example database, to look for new cases; every case found is copied into
``tests/fuzz/corpus/<target>/`` and replayed by that target's regression test on every run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, settings

from pixellab.errors import PixellabError

CORPUS = Path(__file__).parent / "corpus"

settings.register_profile(
    "ci", max_examples=int(os.environ.get("PIXELLAB_FUZZ_EXAMPLES", "200")), deadline=None,
    derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much])
settings.register_profile(
    "explore", max_examples=5000, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

T = TypeVar("T")


def result_or_clear_error(target: Callable[[], T]) -> T | PixellabError:
    """Run ``target``: its result, or the :class:`PixellabError` it raised (returned, so a test
    can look at it). Any other exception propagates and fails the test: that is a finding."""
    try:
        return target()
    except PixellabError as exc:
        message = str(exc).strip()
        assert message, f"{type(exc).__name__} with an empty message"
        assert "\n" not in message, f"a user-facing error is one line: {message!r}"
        return exc


def corpus(target: str) -> list[Path]:
    """The saved cases of ``target`` (files under ``corpus/<target>/``), for a parametrized
    regression test."""
    folder = CORPUS / target
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def corpus_params(target: str) -> list[object]:
    """``pytest.param`` per saved case, with the file name as its id."""
    return [pytest.param(path, id=path.name) for path in corpus(target)]
