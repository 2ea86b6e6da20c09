"""One output's score work as a pure function of picklable arguments, so any executor (threads
here, a Ray worker elsewhere: :mod:`pixellab.executors`) can run it.

A :class:`ScoreUnit` names the output by content hash (the worker reads its bytes from the
store at ``store_url``, never shipped from the driver), the product (its files by path), the
metrics to compute and how to build what the scorers see (:class:`Recipe`). :func:`measure`
returns the scores, and, when CLIP will embed the output with the rest of its chunk on the
driver, the decoded context and its product crops. Nothing here writes the ledger.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from pixellab.datasets import Product
from pixellab.errors import InvalidInputImage, PixellabError
from pixellab.media.video import sample_frames
from pixellab.scoring import BATCHED, TRUTH_COLUMNS, Score, ScoreContext, compute, identity
from pixellab.store import Store
from pixellab.validate import decode_image, load_input_image


@dataclass(frozen=True)
class Recipe:
    """How a sweep's outputs are shown to the scorers (the same for all of them)."""

    task: str
    output_kind: str
    upscale_factor: int | None
    marketplaces: Mapping[str, Any] | None
    store_url: str
    truth_only: frozenset[str] = frozenset()
    clip_reason: str | None = None
    """Why CLIP cannot run here (its metrics are recorded missing with it), else None."""
    clip_runs: bool = False


@dataclass(frozen=True)
class ScoreUnit:
    digest: str
    media_type: str
    product: Product
    metrics: tuple[str, ...]
    versions: Mapping[str, str]
    source_path: Path
    """The image the provider got (an upscale sweep's downscaled copy)."""


@dataclass
class Measured:
    scores: list[Score]
    context: ScoreContext | None = None
    crops: tuple[Image.Image, Image.Image] | str | None = None


@functools.lru_cache(maxsize=4)
def _store(url: str) -> Store:
    return Store(url)


def context_for(recipe: Recipe, product: Product, source_path: Path,
                output: bytes) -> ScoreContext:
    """What the scorers see. For a degraded upscale sweep the source is the downscaled input
    and the reference the original, cropped to the size the upscaler returns."""
    def optional(path: Path | None) -> Any:
        if path is None or product.refusal is not None:
            return None
        try:
            return load_input_image(path)
        except InvalidInputImage:
            return None

    label = product.attributes.get("label_text") or None
    if recipe.output_kind == "video":
        return _video_context(recipe, product, output, optional)
    factor = recipe.upscale_factor
    if factor is not None:
        original = optional(product.image)
        reference = None
        if original is not None:
            reference = original.crop((0, 0, original.width // factor * factor,
                                       original.height // factor * factor))
        return ScoreContext(task=recipe.task, output=decode_image(output),
                            source=optional(source_path), mask=None, reference=reference,
                            marketplaces=recipe.marketplaces, label_text=label)
    return ScoreContext(task=recipe.task, output=decode_image(output),
                        source=optional(product.image), mask=optional(product.mask),
                        reference=optional(product.reference),
                        marketplaces=recipe.marketplaces, label_text=label)


def _video_context(recipe: Recipe, product: Product, output: bytes,
                   optional: Callable[[Path | None], Any]) -> ScoreContext:
    """A clip as the scorers see it: :data:`~pixellab.media.video.SAMPLE_FRAMES` frames evenly
    spaced over the clip (decoding stays bounded whatever its length), the first as
    ``output``, and what the clip measured; the source is the product's (first) photo."""
    clip = sample_frames(output)
    info = clip.info
    width, height = clip.display_size
    facts = {"duration_s": info.duration_s, "fps": info.fps, "width": width,
             "height": height, "frame_count": info.frame_count, "codec": info.codec,
             "container": info.container, "decoded": clip.decoded,
             "sampled_indices": list(clip.indices),
             "sampled_timestamps": [round(t, 3) for t in clip.timestamps]}
    return ScoreContext(task=recipe.task, output=Image.fromarray(clip.frames[0]),
                        source=optional(product.image), mask=optional(product.mask),
                        reference=optional(product.reference),
                        marketplaces=recipe.marketplaces,
                        label_text=product.attributes.get("label_text") or None,
                        frames=clip.frames, video=facts)


def measure(recipe: Recipe, unit: ScoreUnit) -> Measured:
    """The output's per-output scores (an unreadable output: each metric missing, with why),
    and its decoded context only when CLIP will embed it with the rest of the chunk: a decoded
    1600 px packshot with its source, mask and reference is ~20 MB, so none is kept longer
    than it must be."""
    try:
        ctx: ScoreContext | str = context_for(
            recipe, unit.product, unit.source_path,
            _store(recipe.store_url).get(unit.digest, unit.media_type))
    except (PixellabError, OSError) as exc:
        ctx = f"output unreadable: {type(exc).__name__}: {exc}"
    if isinstance(ctx, str):
        return Measured([Score.missing(m, unit.versions[m], ctx) for m in unit.metrics])
    scores = [compute(m, ctx) if m not in recipe.truth_only
              or unit.product.attributes.get(TRUTH_COLUMNS[m])
              else Score.missing(m, unit.versions[m], f"the manifest states no "
                                 f"{TRUTH_COLUMNS[m]} for this product (measured for "
                                 f"{recipe.task} only where it does)")
              for m in unit.metrics if m not in BATCHED]
    wants_clip = any(m in BATCHED for m in unit.metrics)
    if wants_clip and recipe.clip_reason is not None:  # CLIP cannot run here: say why
        scores += [Score.missing(m, unit.versions[m], recipe.clip_reason)
                   for m in unit.metrics if m in BATCHED]
    if not (wants_clip and recipe.clip_runs):
        return Measured(scores)
    crops: tuple[Image.Image, Image.Image] | str | None = None
    if "clip_identity" in unit.metrics:
        try:  # the product crops, here in the worker: the analysis is still cached
            crops = identity.product_crops(ctx)
        except ValueError as exc:
            crops = str(exc)
    return Measured(scores, ctx, crops)
