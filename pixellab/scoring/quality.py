"""Quality scorers: blank, sharpness, exposure clipping, and marketplace image rules.

Marketplace rules are data (``marketplaces.toml`` next to this file), validated with pydantic when
loaded. The blank rules are the ones :func:`pixellab.validate.check_image_output` applies
(:func:`pixellab.validate.measure_blank`), so a scorer and the validator never disagree.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from pixellab.config_files import load_toml_model
from pixellab.errors import ConfigError
from pixellab.scoring.base import Score, ScoreContext
from pixellab.validate import (
    BLANK_ALPHA_COVERAGE,
    BLANK_BLACK_MAX,
    BLANK_STD_THRESHOLD,
    measure_blank,
    normalized_array,
)

__all__ = [
    "DEFAULT_MARKETPLACES_PATH",
    "FOREGROUND_ALPHA_MIN",
    "FOREGROUND_WHITE_DEVIATION",
    "HIGHLIGHT_CLIP_MIN",
    "SCORER_VERSION",
    "SHADOW_CLIP_MAX",
    "MarketplaceProfile",
    "WhiteBorderRule",
    "load_marketplace_profiles",
    "score_blank",
    "score_compliance",
    "score_exposure",
    "score_sharpness",
]

SCORER_VERSION = "quality-2"

DEFAULT_MARKETPLACES_PATH = Path(__file__).with_name("marketplaces.toml")

FOREGROUND_WHITE_DEVIATION = 10
"""Without usable alpha, a pixel is product when some channel is below ``255 - this``."""

FOREGROUND_ALPHA_MIN = 128
"""With usable alpha, a pixel is product when its alpha is at least this (half opaque)."""

SHADOW_CLIP_MAX = 2
"""A product pixel is a clipped shadow when its luma is at most this."""

HIGHLIGHT_CLIP_MIN = 253
"""A product pixel is a clipped (blown) highlight when its luma is at least this."""

_MIN_LINE_FRACTION = 0.001
"""A row/column joins the product bounding box only with at least this fraction (and at least
one pixel) of product pixels along it, so isolated specks do not stretch the box."""


# --- profiles --------------------------------------------------------------------------------


class WhiteBorderRule(BaseModel):
    """The border band must be white: every band pixel within ``white_tolerance`` of 255."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    band: float = Field(gt=0, le=0.5, description="band width, fraction of the shorter side")
    white_tolerance: int = Field(default=0, ge=0, le=255, description="max deviation from 255")


class MarketplaceProfile(BaseModel):
    """One marketplace's image rules; every rule is optional (absent = not checked)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    description: str = ""
    white_border: WhiteBorderRule | None = None
    min_fill: float | None = Field(default=None, ge=0, le=1)
    max_fill: float | None = Field(default=None, ge=0, le=1)
    min_side: int | None = Field(default=None, ge=1)
    zoom_side: int | None = Field(default=None, ge=1)
    min_short_side: int | None = Field(default=None, ge=1)
    max_side: int | None = Field(default=None, ge=1)
    max_aspect_ratio: float | None = Field(
        default=None, ge=1, description="longest side / shortest side, at most"
    )
    square_required: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> MarketplaceProfile:
        if (
            self.min_fill is not None
            and self.max_fill is not None
            and self.min_fill > self.max_fill
        ):
            raise ValueError(f"min_fill {self.min_fill} is above max_fill {self.max_fill}")
        if self.max_side is not None:
            for name in ("min_side", "zoom_side", "min_short_side"):
                value = getattr(self, name)
                if value is not None and value > self.max_side:
                    raise ValueError(f"{name} {value} is above max_side {self.max_side}")
        return self


ProfileName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
"""A profile's name in a profiles file (marketplaces, video platforms): a metric suffix."""


class _MarketplacesFile(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    profiles: dict[ProfileName, MarketplaceProfile]


@lru_cache(maxsize=1)
def _default_profiles() -> tuple[tuple[str, MarketplaceProfile], ...]:
    return tuple(_load(DEFAULT_MARKETPLACES_PATH).items())


def _load(path: Path) -> dict[str, MarketplaceProfile]:
    parsed = load_toml_model(path, _MarketplacesFile, what="marketplace profiles file")
    return dict(parsed.profiles)


def load_marketplace_profiles(path: str | Path | None = None) -> dict[str, MarketplaceProfile]:
    """Load and validate marketplace profiles, by name.

    ``path`` defaults to the bundled ``marketplaces.toml`` (parsed once, then cached). Raises
    :class:`~pixellab.errors.ConfigError` naming the file, the key (e.g.
    ``profiles.amazon_main.min_fill``) and the reason for a missing file, invalid TOML, an
    unknown key, a value of the wrong type (strict: ``"0.85"`` is not a number) or out of range.
    """
    if path is None:
        return dict(_default_profiles())
    return _load(Path(path))


# --- measurements ----------------------------------------------------------------------------


def _foreground(arr: np.ndarray) -> tuple[np.ndarray, str]:
    """Product mask, and where it came from (``alpha`` or ``non_white``)."""
    if arr.shape[-1] == 4:
        alpha = arr[..., 3]
        if int(alpha.min()) < 255:
            return alpha >= FOREGROUND_ALPHA_MIN, "alpha"
    r, g, b = cv2.split(np.ascontiguousarray(arr[..., :3]))
    darkest = cv2.min(cv2.min(r, g), b)
    return darkest < 255 - FOREGROUND_WHITE_DEVIATION, "non_white"


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), exclusive ends, over rows/columns with enough product pixels."""
    h, w = mask.shape
    rows = np.flatnonzero(
        np.count_nonzero(mask, axis=1) >= max(1, math.ceil(_MIN_LINE_FRACTION * w))
    )
    cols = np.flatnonzero(
        np.count_nonzero(mask, axis=0) >= max(1, math.ceil(_MIN_LINE_FRACTION * h))
    )
    if rows.size == 0 or cols.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _white_background(arr: np.ndarray) -> np.ndarray:
    """White pixels (every channel within :data:`FOREGROUND_WHITE_DEVIATION` of 255) that are
    4-connected to the image border: the white backdrop of a packshot. White inside the product
    (a highlight enclosed by product pixels) is not background."""
    r, g, b = cv2.split(np.ascontiguousarray(arr[..., :3]))
    darkest = cv2.min(cv2.min(r, g), b)
    white = (darkest >= 255 - FOREGROUND_WHITE_DEVIATION).astype(np.uint8)
    if not white.any():
        return np.zeros(white.shape, dtype=bool)
    _, labels = cv2.connectedComponents(white, connectivity=4)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    touching = np.unique(edge[edge != 0])  # label 0 is the non-white pixels
    if touching.size == 0:
        return np.zeros(white.shape, dtype=bool)
    return np.isin(labels, touching)


def _product_region(arr: np.ndarray) -> tuple[np.ndarray, str]:
    """The pixels a quality metric should look at, and where that choice came from.

    ``alpha``: the output has transparency; the product is alpha >= :data:`FOREGROUND_ALPHA_MIN`.
    ``white_background``: opaque, with a white backdrop touching the border
    (:func:`_white_background`); the product is everything else. ``none``: neither; the whole
    image (mask all true).
    """
    if arr.shape[-1] == 4:
        alpha = arr[..., 3]
        if int(alpha.min()) < 255:
            return alpha >= FOREGROUND_ALPHA_MIN, "alpha"
    background = _white_background(arr)
    if background.any():
        return ~background, "white_background"
    return np.ones(arr.shape[:2], dtype=bool), "none"


def _as_displayed(arr: np.ndarray) -> np.ndarray:
    """RGB ``uint8``; with alpha, composited over white (as shown on a white page)."""
    if arr.shape[-1] != 4:
        return np.ascontiguousarray(arr[..., :3])
    rgb = arr[..., :3].astype(np.uint16)
    a = arr[..., 3:4].astype(np.uint16)
    return ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma, ``uint8`` (OpenCV's RGB -> GRAY: 0.299 R + 0.587 G + 0.114 B, rounded)."""
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY))


def _band_pixels(arr: np.ndarray, band_px: int) -> np.ndarray:
    """The border band's pixels as an (N, C) array (each pixel once)."""
    h, w, c = arr.shape
    parts = [
        arr[:band_px],
        arr[h - band_px :],
        arr[band_px : h - band_px, :band_px],
        arr[band_px : h - band_px, w - band_px :],
    ]
    return np.concatenate([p.reshape(-1, c) for p in parts], axis=0)


def _rule(
    rule: str, passed: bool, measured: Any, threshold: Any, message: str, **extra: Any
) -> dict[str, Any]:
    return {
        "rule": rule,
        "passed": passed,
        "measured": measured,
        "threshold": threshold,
        "message": message,
        **extra,
    }


def _check_white_border(arr: np.ndarray, rule: WhiteBorderRule) -> dict[str, Any]:
    h, w = arr.shape[:2]
    band_px = min(max(1, round(rule.band * min(h, w))), max(1, min(h, w) // 2))
    pixels = _band_pixels(arr, band_px)
    rgb = pixels[:, :3].astype(np.uint16)
    if pixels.shape[1] == 4:  # as displayed on a white page
        a = pixels[:, 3:4].astype(np.uint16)
        rgb = (rgb * a + 255 * (255 - a) + 127) // 255
    per_pixel = 255 - rgb.min(axis=1).astype(np.int32)
    max_dev = int(per_pixel.max()) if per_pixel.size else 0
    off = float(np.count_nonzero(per_pixel > rule.white_tolerance)) / max(1, per_pixel.size)
    passed = max_dev <= rule.white_tolerance
    where = f"border band ({band_px} px)"
    if passed:
        message = (
            f"{where} is white: max deviation {max_dev} from 255 (tolerance {rule.white_tolerance})"
        )
    else:
        message = (
            f"{where} is not white: max deviation {max_dev} from 255 "
            f"(tolerance {rule.white_tolerance}); {off:.1%} of band pixels off-white"
        )
    return _rule(
        "white_border",
        passed,
        max_dev,
        rule.white_tolerance,
        message,
        nonwhite_fraction=off,
        band_px=band_px,
    )


def _check_fill(arr: np.ndarray, profile: MarketplaceProfile) -> dict[str, Any]:
    h, w = arr.shape[:2]
    mask, source = _foreground(arr)
    box = _bbox(mask)
    threshold = {"min": profile.min_fill, "max": profile.max_fill}
    if box is None:
        return _rule(
            "fill",
            False,
            0.0,
            threshold,
            f"no product found ({source} pixels): fill 0.0%",
            bbox=None,
            source=source,
        )
    x0, y0, x1, y1 = box
    fill = max(x1 - x0, y1 - y0) / max(w, h)
    span = (
        f"product spans {fill:.1%} of the longest side "
        f"(bbox {x1 - x0}×{y1 - y0} px from {source} pixels)"
    )
    if profile.min_fill is not None and fill < profile.min_fill:
        passed, message = False, f"{span}, below the {profile.min_fill:.1%} minimum"
    elif profile.max_fill is not None and fill > profile.max_fill:
        passed, message = False, f"{span}, above the {profile.max_fill:.1%} maximum"
    else:
        passed, message = True, f"{span}, within limits"
    return _rule("fill", passed, round(fill, 4), threshold, message, bbox=list(box), source=source)


def _check_sizes(width: int, height: int, profile: MarketplaceProfile) -> list[dict[str, Any]]:
    longest, shortest = max(width, height), min(width, height)
    rules: list[dict[str, Any]] = []
    if profile.min_side is not None:
        ok = longest >= profile.min_side
        rules.append(
            _rule(
                "min_side",
                ok,
                longest,
                profile.min_side,
                f"longest side {longest} px, {'at least' if ok else 'below'} the "
                f"{profile.min_side} px minimum",
            )
        )
    if profile.zoom_side is not None:
        ok = longest >= profile.zoom_side
        rules.append(
            _rule(
                "zoom_side",
                ok,
                longest,
                profile.zoom_side,
                f"longest side {longest} px, {'at least' if ok else 'below'} the "
                f"{profile.zoom_side} px needed for zoom",
            )
        )
    if profile.min_short_side is not None:
        ok = shortest >= profile.min_short_side
        rules.append(
            _rule(
                "min_short_side",
                ok,
                shortest,
                profile.min_short_side,
                f"shortest side {shortest} px, {'at least' if ok else 'below'} the "
                f"{profile.min_short_side} px minimum",
            )
        )
    if profile.max_side is not None:
        ok = longest <= profile.max_side
        rules.append(
            _rule(
                "max_side",
                ok,
                longest,
                profile.max_side,
                f"longest side {longest} px, {'within' if ok else 'above'} the "
                f"{profile.max_side} px maximum",
            )
        )
    if profile.max_aspect_ratio is not None:
        ratio = longest / shortest
        ok = ratio <= profile.max_aspect_ratio
        rules.append(
            _rule(
                "aspect_ratio",
                ok,
                round(ratio, 4),
                profile.max_aspect_ratio,
                f"image is {width}×{height}, aspect ratio {ratio:.4g}:1 (longest / shortest "
                f"side), {'within' if ok else 'above'} the {profile.max_aspect_ratio:g}:1 maximum",
                width=width,
                height=height,
            )
        )
    if profile.square_required:
        ok = width == height
        rules.append(
            _rule(
                "square",
                ok,
                [width, height],
                "width == height",
                f"image is {width}×{height}, {'square' if ok else 'not square'}",
            )
        )
    return rules


# --- scorers ---------------------------------------------------------------------------------


def score_blank(ctx: ScoreContext) -> Score:
    """Metric ``blank``: 1.0 if the output is blank, else 0.0.

    Blank means (nearly) fully transparent, all near black, or near-uniform in any colour, by the
    same rules and thresholds as :func:`pixellab.validate.check_image_output`. Details: ``std``
    (largest per-channel std of visible pixels), ``max`` (largest channel value),
    ``alpha_coverage`` (fraction of pixels with alpha > 0) and ``reason`` (the blank code or None).
    """
    stats = measure_blank(ctx.output)
    reason = stats.reason()
    return Score(
        metric="blank",
        value=1.0 if reason else 0.0,
        version=SCORER_VERSION,
        details={**stats.as_dict(), "reason": reason},
    )


def score_sharpness(ctx: ScoreContext) -> Score:
    """Metric ``sharpness``: variance of the Laplacian of the grayscale output; higher = sharper.

    The Laplacian (``cv2.Laplacian``, ``CV_64F``, 3×3 aperture) is taken over the whole grayscale
    image (an output with alpha is first composited over white, as displayed) and its variance
    is computed over the product region when one can be told from the background: the alpha
    mask (alpha >= :data:`FOREGROUND_ALPHA_MIN`) when the output has transparency, else every
    pixel not in a white backdrop touching the border (white = every channel within
    :data:`FOREGROUND_WHITE_DEVIATION` of 255). Otherwise (no white backdrop, or an all-white
    image) it is the whole image. The product's outline counts, so soft edges lower the score.

    The value depends on the content and on resolution, so it is only comparable between outputs
    of the same product at the same size (e.g. several models' packshots of one input), never as
    an absolute quality level. A uniform image has no detail and scores 0.0 (not missing); an
    output with no visible pixels (all transparent) is missing.

    Details: ``region`` (``"product"`` or ``"whole"``), ``source`` (``"alpha"``,
    ``"white_background"`` or ``"none"``), ``pixels`` (pixels the variance is over),
    ``comparable`` (``"same product and size"``) and ``better`` (``"higher"``).
    """
    arr = normalized_array(ctx.output)
    mask, source = _product_region(arr)
    pixels = int(np.count_nonzero(mask))
    if pixels == 0:
        if source == "alpha":
            return Score.missing(
                "sharpness", SCORER_VERSION, "no visible product pixels (output fully transparent)"
            )
        mask, source = np.ones(arr.shape[:2], dtype=bool), "none"  # all white backdrop
        pixels = mask.size
    gray = _luma(_as_displayed(arr))
    laplacian = cv2.Laplacian(gray, cv2.CV_64F)
    values = laplacian if pixels == mask.size else laplacian[mask]
    return Score(
        metric="sharpness",
        value=float(values.var()),
        version=SCORER_VERSION,
        details={
            "region": "whole" if pixels == mask.size else "product",
            "source": source,
            "pixels": pixels,
            "comparable": "same product and size",
            "better": "higher",
        },
    )


def score_exposure(ctx: ScoreContext) -> Score:
    """Metric ``exposure_clipping``: fraction of product pixels clipped to black or white.

    A pixel is a clipped shadow when its luma (Rec. 601, 0-255) is at most
    :data:`SHADOW_CLIP_MAX` (2), a clipped highlight when at least :data:`HIGHLIGHT_CLIP_MIN`
    (253); the value is their sum over the product region's pixel count. Lower is better.

    The region leaves out a packshot's white background so it does not count as blown
    highlights: with transparency it is alpha >= :data:`FOREGROUND_ALPHA_MIN` (the product's own
    colours, not composited); otherwise every pixel except a white backdrop (every channel
    within :data:`FOREGROUND_WHITE_DEVIATION` of 255) 4-connected to the image border, so blown
    highlights enclosed by the product still count; with no such backdrop, the whole image.
    Limitation: a blown highlight that touches the white backdrop merges into it and is not
    counted. Missing when there is no product pixel (all transparent, or all white backdrop).

    Details: ``shadows_clipped`` and ``highlights_clipped`` (fractions of the region),
    ``region`` (``"product"`` or ``"whole"``), ``source`` (as for :func:`score_sharpness`),
    ``pixels``, ``shadow_max``, ``highlight_min`` and ``better`` (``"lower"``).
    """
    arr = normalized_array(ctx.output)
    mask, source = _product_region(arr)
    pixels = int(np.count_nonzero(mask))
    if pixels == 0:
        what = "output fully transparent" if source == "alpha" else "output is all white backdrop"
        return Score.missing("exposure_clipping", SCORER_VERSION, f"no product pixels ({what})")
    luma = _luma(arr[..., :3])[mask]
    shadows = float(np.count_nonzero(luma <= SHADOW_CLIP_MAX)) / pixels
    highlights = float(np.count_nonzero(luma >= HIGHLIGHT_CLIP_MIN)) / pixels
    return Score(
        metric="exposure_clipping",
        value=shadows + highlights,
        version=SCORER_VERSION,
        details={
            "shadows_clipped": shadows,
            "highlights_clipped": highlights,
            "region": "whole" if source == "none" else "product",
            "source": source,
            "pixels": pixels,
            "shadow_max": SHADOW_CLIP_MAX,
            "highlight_min": HIGHLIGHT_CLIP_MIN,
            "better": "lower",
        },
    )


def score_compliance(
    ctx: ScoreContext,
    profile: str = "amazon_main",
    profiles: dict[str, MarketplaceProfile] | None = None,
) -> Score:
    """Metric ``compliance_<profile>``: 1.0 when every rule of the profile passes, else 0.0.

    Rules checked (those the profile sets), in order: ``not_blank`` (always), ``white_border``,
    ``fill``, ``min_side``, ``zoom_side``, ``min_short_side``, ``max_side``, ``aspect_ratio``,
    ``square``.
    ``details = {"profile", "rules": [{"rule", "passed", "measured", "threshold", "message", …}],
    "failed": [rule names]}``.

    How things are measured:

    * **fill** is the product bounding box's longest side over the image's longest side. The
      product is taken from the alpha channel (alpha >= :data:`FOREGROUND_ALPHA_MIN`) when the
      output has transparency, because a cut-out's alpha *is* its product mask. Otherwise (no
      alpha, or fully opaque alpha) it is every pixel with some channel more than
      :data:`FOREGROUND_WHITE_DEVIATION` below 255: marketplaces that care about fill demand a
      white background, so "not white" is the product; the small threshold absorbs JPEG noise
      around edges, and rows/columns with almost no product pixels are ignored so a stray speck
      does not stretch the box. Limitations: a white product on white is under-measured, soft
      shadows count as product, and on an off-white background the whole frame counts as
      product (fill ~100%) — that case also fails ``white_border`` where the profile has it.
    * **white_border** looks at a band of ``band`` × the shorter side along all four edges;
      transparent pixels are judged as displayed on a white page (composited over white). The
      rule passes when the largest deviation from 255 of any channel is at most
      ``white_tolerance``; the measured max deviation and the fraction of off-white band pixels
      are reported either way.
    * **aspect_ratio** is the longest side over the shortest (1.0 = square); it fails above the
      profile's ``max_aspect_ratio``, and reports ``width`` and ``height`` too.
    * sizes are the output's pixel size (after EXIF orientation if it came from
      :func:`pixellab.validate.decode_image`).

    Raises :class:`~pixellab.errors.ConfigError` for an unknown profile name.
    """
    table = load_marketplace_profiles() if profiles is None else profiles
    if profile not in table:
        known = ", ".join(sorted(table)) or "none"
        raise ConfigError(f"unknown marketplace profile {profile!r} (known: {known})", key=profile)
    rules_cfg = table[profile]
    arr = normalized_array(ctx.output)
    height, width = arr.shape[:2]

    stats = measure_blank(arr)
    blank = stats.reason()
    rules = [
        _rule(
            "not_blank",
            blank is None,
            blank,
            {
                "std": BLANK_STD_THRESHOLD,
                "max": BLANK_BLACK_MAX,
                "alpha_coverage": BLANK_ALPHA_COVERAGE,
            },
            f"output is blank ({blank}): {stats.message(blank)}"
            if blank
            else "output is not blank",
            **stats.as_dict(),
        )
    ]
    if rules_cfg.white_border is not None:
        rules.append(_check_white_border(arr, rules_cfg.white_border))
    if rules_cfg.min_fill is not None or rules_cfg.max_fill is not None:
        rules.append(_check_fill(arr, rules_cfg))
    rules.extend(_check_sizes(width, height, rules_cfg))

    failed = [r["rule"] for r in rules if not r["passed"]]
    return Score(
        metric=f"compliance_{profile}",
        value=0.0 if failed else 1.0,
        version=SCORER_VERSION,
        details={"profile": profile, "rules": rules, "failed": failed},
    )
