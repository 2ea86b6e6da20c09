"""Scoring: which metrics each task gets, computing them, and recording them once per output.

Which metrics a task's outputs get, the metric that ranks models and the gates an accepted output
must pass are data (``scoring/tasks.toml``). Scoring is a pure computation on decoded images run
in worker threads; recording is idempotent: an output already scored by the same scorer version
is skipped, so re-scoring an unchanged sweep writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pixellab.config_files import invalid, read_toml
from pixellab.errors import ConfigError
from pixellab.scoring.base import Score, ScoreContext
from pixellab.scoring.clip import METRICS as CLIP_METRICS
from pixellab.scoring.clip import SCORER_VERSION as CLIP_VERSION
from pixellab.scoring.composite import Composite
from pixellab.scoring.identity import SCORER_VERSION as IDENTITY_VERSION
from pixellab.scoring.identity import (
    score_identity,
    score_identity_delta_e,
    score_identity_kept,
    score_identity_occupancy,
    score_identity_shape_iou,
    score_identity_ssim,
)
from pixellab.scoring.lifestyle import SCORER_VERSION as LIFESTYLE_VERSION
from pixellab.scoring.lifestyle import score_product_placement, score_scene_change
from pixellab.scoring.ocr import SCORER_VERSION as OCR_VERSION
from pixellab.scoring.ocr import score_label_text
from pixellab.scoring.quality import SCORER_VERSION as QUALITY_VERSION
from pixellab.scoring.quality import (
    score_blank,
    score_compliance,
    score_exposure,
    score_sharpness,
)
from pixellab.scoring.reference import SCORER_VERSION as REFERENCE_VERSION
from pixellab.scoring.reference import (
    score_boundary_f,
    score_delta_e,
    score_mask_iou,
    score_psnr,
    score_ssim,
)
from pixellab.scoring.video import SCORER_VERSION as VIDEO_VERSION
from pixellab.scoring.video import (
    VIDEO_PLATFORM_PREFIX,
    load_platform_profiles,
    score_first_frame_delta_e,
    score_first_frame_ssim,
    score_video_flicker,
    score_video_frozen_ratio,
    score_video_motion,
    score_video_platform,
    score_video_product_presence,
    score_video_subject_consistency,
)

TASKS_FILE = Path(__file__).with_name("tasks.toml")

Scorer = Callable[[ScoreContext], Score]

SCORERS: dict[str, tuple[Scorer, str]] = {
    "blank": (score_blank, QUALITY_VERSION),
    "sharpness": (score_sharpness, QUALITY_VERSION),
    "exposure_clipping": (score_exposure, QUALITY_VERSION),
    "mask_iou": (score_mask_iou, REFERENCE_VERSION),
    "boundary_f": (score_boundary_f, REFERENCE_VERSION),
    "psnr": (score_psnr, REFERENCE_VERSION),
    "ssim": (score_ssim, REFERENCE_VERSION),
    "delta_e": (score_delta_e, REFERENCE_VERSION),
    # every task: the source's product located in the output and compared (scoring/identity.py)
    "identity": (score_identity, IDENTITY_VERSION),
    "identity_ssim": (score_identity_ssim, IDENTITY_VERSION),
    "identity_delta_e": (score_identity_delta_e, IDENTITY_VERSION),
    "identity_shape_iou": (score_identity_shape_iou, IDENTITY_VERSION),
    "identity_occupancy": (score_identity_occupancy, IDENTITY_VERSION),
    "identity_kept": (score_identity_kept, IDENTITY_VERSION),
    # lifestyle scenes: a new background, the product well placed (scoring/lifestyle.py)
    "scene_change": (score_scene_change, LIFESTYLE_VERSION),
    "product_placement": (score_product_placement, LIFESTYLE_VERSION),
    # printed label text kept (OCR; needs `pixellab[ocr]`, else missing), see scoring/ocr.py
    "label_text": (score_label_text, OCR_VERSION),
    # video outputs (ScoreContext.frames): missing for images, see scoring/video.py
    "video_first_frame_ssim": (score_first_frame_ssim, VIDEO_VERSION),
    "video_first_frame_delta_e": (score_first_frame_delta_e, VIDEO_VERSION),
    "video_subject_consistency": (score_video_subject_consistency, VIDEO_VERSION),
    "video_flicker": (score_video_flicker, VIDEO_VERSION),
    "video_motion": (score_video_motion, VIDEO_VERSION),
    "video_frozen_ratio": (score_video_frozen_ratio, VIDEO_VERSION),
    "video_product_presence": (score_video_product_presence, VIDEO_VERSION),
}
"""Metrics computed one output at a time (in worker threads). ``compliance_<profile>``
(marketplace image rules) and ``video_platform_<profile>`` (short-video platform rules,
``scoring/platforms.toml``) come on top, one metric per profile."""
BATCHED: dict[str, str] = {metric: CLIP_VERSION for metric in CLIP_METRICS}
"""Metrics computed for many outputs at once (a model's forward pass): see scoring/clip.py."""
JSON_METRICS: dict[str, str] = {"category_match": "intel-1"}
"""Metrics of JSON outputs (``analyze``), computed from the answer and the dataset's own
labels: ``category_match`` is 1 when the analysed category is the product's category in the
manifest, 0 when it is another, missing when the manifest's category is not in the taxonomy."""
LOWER_IS_BETTER = frozenset({"delta_e", "identity_delta_e", "exposure_clipping", "blank",
                             "video_first_frame_delta_e", "video_frozen_ratio"})
COMPLIANCE_PREFIX = "compliance_"
TRUTH_COLUMNS: dict[str, str] = {"label_text": "label_text"}
"""Metrics that may be ``truth_only``, and the manifest column holding their ground truth."""


class TaskScoring(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    metrics: tuple[str, ...] = Field(min_length=1)
    primary: str | None = None
    gates: dict[str, float] = Field(default_factory=dict)
    composite: Composite | None = None
    """How the metrics combine into the score that ranks models (see scoring/composite.py)."""
    judge_criteria: dict[str, str] = Field(default_factory=dict)
    """What a pairwise judge weighs for this task, name → text (:mod:`pixellab.verdicts`;
    empty: its default criteria)."""
    judge_min_agreement: float = Field(default=0.7, ge=0.5, le=1.0)
    """The decision counts a judge's votes for this task only when the lower bound of its
    accuracy against people's votes on the same pairs (95 % Wilson) reaches this."""
    truth_only: tuple[str, ...] = ()
    """Metrics computed only for products whose dataset states their ground truth, recorded
    missing (at no cost) for the rest: ``label_text`` reads labels by OCR (~0.5 s a read), worth
    it where the manifest states the label (``label_text`` column), not on every photo."""


def load_task_scoring(path: Path | None = None) -> dict[str, TaskScoring]:
    path = path or TASKS_FILE
    raw = read_toml(path, what="task scoring file")
    result: dict[str, TaskScoring] = {}
    for task, body in raw.items():
        try:
            result[task] = TaskScoring.model_validate(body)
        except ValidationError as exc:
            raise invalid(exc, path, prefix=task) from None
        config = result[task]
        terms = tuple(config.composite.terms) if config.composite else ()
        for metric in (*config.metrics, *config.gates, *terms):
            if not known_metric(metric):
                raise ConfigError(f"unknown metric {metric!r}", path=str(path), key=task)
        for metric in config.truth_only:
            if metric not in TRUTH_COLUMNS or metric not in config.metrics:
                raise ConfigError(f"truth_only metric {metric!r} must be one of the task's "
                                  f"metrics and one of {sorted(TRUTH_COLUMNS)}",
                                  path=str(path), key=f"{task}.truth_only")
        for metric in terms:
            if metric not in config.metrics:
                raise ConfigError(f"composite term {metric!r} is not one of the task's metrics",
                                  path=str(path), key=f"{task}.composite.terms.{metric}")
    return result


def known_metric(metric: str) -> bool:
    """Whether ``metric`` can be computed: a registered scorer, a marketplace profile's
    ``compliance_<profile>`` (profiles may come from the workbench, so any name) or a bundled
    video platform profile's ``video_platform_<profile>``."""
    return (metric in SCORERS or metric in BATCHED or metric in JSON_METRICS
            or metric.startswith(COMPLIANCE_PREFIX)
            or (metric.startswith(VIDEO_PLATFORM_PREFIX)
                and metric.removeprefix(VIDEO_PLATFORM_PREFIX) in load_platform_profiles()))


def scorer_version(metric: str) -> str:
    if metric.startswith(COMPLIANCE_PREFIX):
        return QUALITY_VERSION
    if metric.startswith(VIDEO_PLATFORM_PREFIX):
        return VIDEO_VERSION
    if metric in BATCHED:
        return BATCHED[metric]
    if metric in JSON_METRICS:
        return JSON_METRICS[metric]
    return SCORERS[metric][1]


def compute(metric: str, ctx: ScoreContext) -> Score:
    """One metric for one output; a scorer that crashes yields a missing score with the reason."""
    try:
        if metric.startswith(COMPLIANCE_PREFIX):
            return score_compliance(ctx, profile=metric.removeprefix(COMPLIANCE_PREFIX),
                                    profiles=dict(ctx.marketplaces) if ctx.marketplaces
                                    else None)
        if metric.startswith(VIDEO_PLATFORM_PREFIX):
            return score_video_platform(ctx, profile=metric.removeprefix(VIDEO_PLATFORM_PREFIX))
        return SCORERS[metric][0](ctx)
    except ConfigError:
        raise
    except Exception as exc:  # a metric that cannot be computed is missing, never zero
        return Score.missing(metric, scorer_version(metric), f"{type(exc).__name__}: {exc}")


__all__ = ["BATCHED", "COMPLIANCE_PREFIX", "JSON_METRICS", "LOWER_IS_BETTER", "SCORERS",
           "TRUTH_COLUMNS", "VIDEO_PLATFORM_PREFIX", "VIDEO_VERSION", "Score", "ScoreContext",
           "TaskScoring",
           "compute", "known_metric", "load_task_scoring", "scorer_version"]
