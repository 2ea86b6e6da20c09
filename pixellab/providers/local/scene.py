"""Free, deterministic, offline lifestyle baselines behind the ``local`` provider.

Why these exist
---------------
A paid model that puts a product "in a tasteful lifestyle setting" is only worth its price if
its scene beats what a few hundred lines of classical compositing already give a shop: the
product, cut out, standing in a clean procedurally drawn setting with believable light. Each
operation here is such a baseline (task ``lifestyle``), and the offline demo's lifestyle engine:

* :func:`scene` - the product (:func:`~pixellab.providers.local.ops.cutout`) standing on a
  tabletop, a wall shelf or a floor against a wall, drawn in one of :data:`STYLES` (surface
  texture - wood, marble, concrete, stone, plaster - wall, decor and light), with a soft cast
  shadow away from the light, a contact shadow and, on glossy surfaces, a faint reflection;
* :func:`backdrop` - the simpler variant: the product on a seamless gradient backdrop lit by a
  soft pool of light, with the same shadows.

How the setting is chosen (:func:`pick_style`, :func:`pick_kind`): from the prompt's words,
deterministically. First an explicit look (``"with a luxury look"``, ``"rustic style"``), then
the style words anywhere in the prompt (stock phrases every prompt carries, such as "natural
light", are ignored), then the product category the prompt names, through the aesthetic
``intel/categories.toml`` gives that category, and last the seed. Furniture and sports gear stand
on the floor; otherwise each style has its own kind of setting. ``style`` and ``scene`` name
them outright.

Placement: the product's bounding box covers about 26-36 % of the frame (less for a very tall or
wide product: it is capped at 72 % of the frame's width and at the room above the surface), its
footprint rests on the surface's contact line, and it always lies wholly inside the frame with a
margin. The product's own pixels are not changed: the composite is premultiplied (no fringes),
the shadows and the reflection are drawn under it.

Contract shared by both operations: returns a new RGB image whose longer side is ``size`` and
whose aspect is ``aspect_ratio`` (``"source"``/``"auto"``: the photo's); deterministic: the same
inputs give byte-identical output, and ``seed`` picks the light's side, texture noise and small
palette and placement variations. The only state kept between calls is a small cache of recent
cut-outs, keyed by the photo's pixels, so a photo's scene and backdrop cut it out once. A 1024-px
scene takes about 0.2-0.3 s plus the cut-out (0.5-1.5 s with GrabCut on two busy cores).
:func:`render_scene` and :func:`render_backdrop` also return the :class:`Layout` (style, kind,
product box, contact line) and the product's alpha on the canvas. Invalid parameters raise
``ValueError`` whose message starts with the parameter's name (the provider turns it into
:class:`~pixellab.errors.InvalidRequest`).
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, cast

import cv2
import numpy as np
from PIL import Image

from pixellab.intel.taxonomy import Taxonomy, load_taxonomy
from pixellab.providers.local.ops import cutout

__all__ = [
    "ASPECT_RATIOS", "CUTOUT_METHODS", "SCENE_KINDS", "STYLES", "Layout", "SceneResult",
    "Style", "backdrop", "output_size", "pick_kind", "pick_style", "render_backdrop",
    "render_scene", "scene",
]

_F32 = np.float32
RGB = tuple[int, int, int]
Kind = Literal["tabletop", "shelf", "floor"]

SCENE_KINDS: tuple[Kind, ...] = ("tabletop", "shelf", "floor")
"""The settings :func:`scene` draws: a table against a wall, a wall shelf, a floor and wall."""
CUTOUT_METHODS = ("grabcut", "threshold")
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1, 1), "4:5": (4, 5), "5:4": (5, 4), "3:4": (3, 4), "4:3": (4, 3), "2:3": (2, 3),
    "3:2": (3, 2), "9:16": (9, 16), "16:9": (16, 9)}
"""Output aspect ratios by name, as (width, height); any other ``"W:H"`` between 1:4 and 4:1 is
taken as it reads, and ``"source"`` and ``"auto"`` follow the photo (clamped to 1:2.5 .. 2.5:1)."""
SIZE_RANGE = (64, 4096)
_RATIO = re.compile(r"(\d+(?:\.\d+)?):(\d+(?:\.\d+)?)")


# --------------------------------------------------------------------------------------------
# styles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Style:
    """A palette, materials and light: what one look of the scene is drawn with."""

    name: str
    kind: Kind
    """The setting drawn when the product does not ask for the floor."""
    wall: RGB
    wall_texture: Literal["plaster", "concrete", "bokeh"]
    surface: RGB
    surface_texture: Literal["plain", "wood", "marble", "concrete", "stone"]
    accent: RGB
    """Wood grain, marble veins, the decor's colour."""
    decor: Literal["window", "spot", "arch", "panels", "ties", "none"]
    backdrop: tuple[RGB, RGB]
    """:func:`backdrop`'s colours: the wall at the top, the sweep under the product."""
    light: int
    """-1: the key light comes from the left; +1: from the right (odd seeds swap sides)."""
    gloss: float
    """Opacity of the product's reflection at the contact line (0: matte surface)."""
    shadow: float
    """Darkness of the cast shadow at the contact line (0-1)."""
    warmth: tuple[float, float, float]
    """Per-channel tint of the light on the scene (not on the product)."""


STYLES: dict[str, Style] = {s.name: s for s in (
    Style("minimal", "tabletop", (233, 230, 225), "plaster", (216, 212, 205), "plain",
          (250, 248, 242), "window", ((236, 234, 230), (214, 211, 206)), -1, 0.0, 0.42,
          (1.0, 1.0, 0.99)),
    Style("warm", "tabletop", (222, 201, 174), "plaster", (156, 106, 66), "wood",
          (104, 64, 36), "window", ((226, 204, 176), (196, 160, 124)), 1, 0.0, 0.5,
          (1.03, 1.0, 0.93)),
    Style("luxury", "tabletop", (52, 45, 50), "plaster", (30, 29, 33), "marble",
          (150, 144, 138), "spot", ((70, 60, 64), (28, 26, 30)), -1, 0.24, 0.55,
          (1.02, 1.0, 0.97)),
    Style("outdoor", "tabletop", (150, 178, 140), "bokeh", (184, 168, 146), "stone",
          (120, 108, 94), "none", ((198, 218, 226), (176, 190, 160)), -1, 0.0, 0.55,
          (1.02, 1.01, 0.96)),
    Style("industrial", "tabletop", (146, 146, 143), "concrete", (88, 90, 94), "concrete",
          (60, 60, 62), "ties", ((150, 150, 148), (104, 106, 110)), 1, 0.12, 0.5,
          (0.98, 1.0, 1.03)),
    Style("playful", "shelf", (248, 206, 204), "plaster", (252, 232, 176), "plain",
          (140, 200, 220), "arch", ((252, 214, 206), (248, 190, 170)), -1, 0.0, 0.36,
          (1.01, 1.0, 1.0)),
    Style("bold", "floor", (22, 104, 118), "plaster", (232, 96, 56), "plain",
          (246, 190, 40), "arch", ((28, 112, 126), (16, 74, 86)), 1, 0.0, 0.55,
          (1.0, 1.0, 1.0)),
    Style("classic", "shelf", (198, 188, 172), "plaster", (128, 88, 58), "wood",
          (86, 56, 34), "panels", ((206, 198, 184), (170, 158, 140)), -1, 0.06, 0.45,
          (1.02, 1.0, 0.96)),
)}
"""Every look, by name. ``pick_style`` maps a prompt to one of these."""

_STYLE_WORDS: dict[str, tuple[str, ...]] = {
    "minimal": ("minimal", "minimalist", "minimalistic", "simple", "clean", "scandinavian",
                "nordic", "modern", "airy", "bright", "white"),
    "warm": ("warm", "rustic", "cozy", "cosy", "homely", "wood", "wooden", "oak", "walnut",
             "farmhouse", "handmade", "rattan", "linen", "reclaimed", "kitchen table"),
    "luxury": ("luxury", "luxurious", "premium", "elegant", "opulent", "glamorous", "glam",
               "marble", "gold", "diamond", "silk", "velvet", "cashmere", "sapphire",
               "sterling", "handcrafted", "evening", "moody", "dark"),
    "outdoor": ("outdoor", "outdoors", "outside", "nature", "natural", "garden", "park",
                "organic", "botanical", "eco", "vegan", "bamboo", "recycled", "forest",
                "summer", "picnic", "hiking", "camping", "patio", "terrace", "sunlit"),
    "industrial": ("industrial", "technical", "tech", "urban", "concrete", "loft", "steel",
                   "metal", "futuristic", "workshop", "desk", "office", "gaming"),
    "playful": ("playful", "fun", "colourful", "colorful", "kids", "kid", "children",
                "nursery", "whimsical", "pastel", "cute", "rainbow", "toy", "candy"),
    "bold": ("bold", "vibrant", "neon", "statement", "sporty", "energetic", "dynamic",
             "saturated", "pop"),
    "classic": ("classic", "timeless", "traditional", "vintage", "heritage", "library",
                "study", "antique", "retro"),
}
"""Words in a prompt that point to a style (whole words, plural "s" allowed)."""

_AESTHETIC_STYLE = {"minimal": "minimal", "luxury": "luxury", "playful": "playful",
                    "rustic": "warm", "technical": "industrial", "natural": "outdoor",
                    "bold": "bold", "classic": "classic"}
"""The analysis' aesthetics (``intel/categories.toml``) as styles."""

_STOCK_PHRASES = ("natural light", "natural lighting", "shallow depth of field",
                  "lifestyle setting", "product unchanged", "clearly visible", "realistic",
                  "tasteful")
"""Phrases every lifestyle prompt carries whatever the look: not evidence of one."""

_FLOOR_CATEGORIES = ("furniture", "sports")
_FLOOR_WORDS = ("floor", "chair", "armchair", "sofa", "couch", "stool", "ottoman", "bike",
                "bicycle", "tent", "furniture", "bookcase", "dresser", "cabinet")


def _words_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![\w-])({alternatives})(?:s|es)?(?![\w-])")


_STYLE_PATTERNS = {name: _words_pattern(words) for name, words in _STYLE_WORDS.items()}
_LOOK = re.compile(r"\b([a-z]+)[\s-]+(?:look|aesthetic|style|mood|vibe|feel)\b"
                   r"|\b(?:look|aesthetic|style|mood)\s*[:=]\s*([a-z]+)")
_FLOOR_PATTERN = _words_pattern(_FLOOR_WORDS)


def _word_style(word: str) -> str | None:
    word = word.lower()
    if word in STYLES:
        return word
    if word in _AESTHETIC_STYLE:
        return _AESTHETIC_STYLE[word]
    for name, pattern in _STYLE_PATTERNS.items():
        if pattern.fullmatch(word):
            return name
    return None


@lru_cache(maxsize=1)
def _taxonomy() -> Taxonomy:
    return load_taxonomy()


def pick_style(prompt: str | None, seed: int = 0) -> tuple[str, str]:
    """The style (a key of :data:`STYLES`) a prompt asks for, and why.

    In order: an explicit look (``"with a warm look"``, ``"luxury aesthetic"``); the style words
    in the prompt (most mentions, ties to the earliest), stock phrases such as "natural light"
    left out; the product category the prompt names (``intel/categories.toml``'s aesthetic for
    it); else the seed. The reason reads ``look 'warm'``, ``word 'oak'``, ``category 'kitchen'``
    or ``seed 3``.
    """
    text = (prompt or "").lower()
    for match in _LOOK.finditer(text):
        word = match.group(1) or match.group(2)
        style = _word_style(word)
        if style is not None:
            return style, f"look {word!r}"
    cleaned = text
    for phrase in _STOCK_PHRASES:
        cleaned = cleaned.replace(phrase, " ")
    best: tuple[int, int, str, str] | None = None  # (count, -first position, style, word)
    for name, pattern in _STYLE_PATTERNS.items():
        found = list(pattern.finditer(cleaned))
        if found:
            key = (len(found), -found[0].start(), name, found[0].group(1))
            if best is None or key[:2] > best[:2]:
                best = key
    if best is not None:
        return best[2], f"word {best[3]!r}"
    if text.strip():
        taxonomy = _taxonomy()
        category = taxonomy.match(text.replace("_", " "))
        if category is not None and category in taxonomy.categories:
            aesthetic = taxonomy.categories[category].aesthetic
            if aesthetic in _AESTHETIC_STYLE:
                return _AESTHETIC_STYLE[aesthetic], f"category {category!r}"
    names = sorted(STYLES)
    return names[seed % len(names)], f"seed {seed}"


def pick_kind(prompt: str | None, style: str) -> tuple[Kind, str]:
    """The setting for a prompt in ``style``, and why: the floor for furniture and sports gear
    (the category or words such as "chair", "stool", "floor" in the prompt), else the style's."""
    text = (prompt or "").lower()
    if text.strip():
        match = _FLOOR_PATTERN.search(text)
        if match:
            return "floor", f"word {match.group(1)!r}"
        category = _taxonomy().match(text.replace("_", " "))
        if category in _FLOOR_CATEGORIES:
            return "floor", f"category {category!r}"
    return STYLES[style].kind, f"style {style!r}"


# --------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------


def _int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    return int(value)


def output_size(photo_size: tuple[int, int], size: int = 1024,
                aspect_ratio: str = "1:1") -> tuple[int, int]:
    """(width, height) of the output: the longer side is ``size``; the aspect is
    ``aspect_ratio``, or the photo's (clamped to 2.5:1 either way) for ``"source"``/``"auto"``."""
    size = _int("size", size)
    if not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
        raise ValueError(f"size must be between {SIZE_RANGE[0]} and {SIZE_RANGE[1]}, not {size}")
    if not isinstance(aspect_ratio, str):
        raise ValueError(f"aspect_ratio must be a string such as '1:1', not {aspect_ratio!r}")
    if aspect_ratio in ("source", "auto"):
        w, h = photo_size
        ratio = min(max(w / max(h, 1), 0.4), 2.5)
    elif aspect_ratio in ASPECT_RATIOS:
        a, b = ASPECT_RATIOS[aspect_ratio]
        ratio = a / b
    elif (custom := _RATIO.fullmatch(aspect_ratio)) and float(custom[2]) > 0 \
            and 0.25 <= float(custom[1]) / float(custom[2]) <= 4:
        ratio = float(custom[1]) / float(custom[2])
    else:
        raise ValueError(f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}, another "
                         f"'W:H' between 1:4 and 4:1, source or auto, not {aspect_ratio!r}")
    if ratio >= 1:
        return size, max(16, round(size / ratio))
    return max(16, round(size * ratio)), size


def _resolve(prompt: object, seed: object, style: object, scene_kind: object | None
             ) -> tuple[str, str, Kind, str, int]:
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError(f"prompt must be text, not {type(prompt).__name__}")
    seed = _int("seed", seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, not {seed}")
    if not isinstance(style, str) or (style != "auto" and style not in STYLES):
        raise ValueError(f"style must be auto or one of {', '.join(STYLES)}, not {style!r}")
    if style == "auto":
        name, why = pick_style(prompt, seed)
    else:
        name, why = style, "asked"
    kind: Kind = "tabletop"
    kind_why = ""
    if scene_kind is not None:
        if scene_kind == "auto":
            kind, kind_why = pick_kind(prompt, name)
        elif scene_kind in SCENE_KINDS:
            kind, kind_why = cast(Kind, scene_kind), "asked"
        else:
            raise ValueError(f"scene must be auto or one of {', '.join(SCENE_KINDS)}, "
                             f"not {scene_kind!r}")
    return name, why, kind, kind_why, seed


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where things are in a rendered scene (pixels of the output)."""

    width: int
    height: int
    style: str
    style_reason: str
    kind: str
    """``tabletop``, ``shelf``, ``floor`` or ``backdrop``."""
    kind_reason: str
    box: tuple[int, int, int, int]
    """The product layer's box (x0, y0, x1, y1), exclusive ends: inside the frame."""
    contact_y: int
    """The row the product's footprint rests on."""
    scale: float
    """Output pixels per photo pixel of the product."""
    light: int
    """-1: light from the left, +1: from the right."""
    found_product: bool
    """False when the cut-out found nothing and the whole photo was placed instead."""

    @property
    def occupancy(self) -> float:
        """The product box's share of the frame's area."""
        x0, y0, x1, y1 = self.box
        return (x1 - x0) * (y1 - y0) / (self.width * self.height)


@dataclass(frozen=True)
class SceneResult:
    image: Image.Image
    """The RGB output."""
    layout: Layout
    alpha: np.ndarray
    """The product's alpha on the canvas (height x width float32, 0-1)."""


# --------------------------------------------------------------------------------------------
# the product layer
# --------------------------------------------------------------------------------------------


_CUTOUTS: OrderedDict[tuple[str, str], tuple[np.ndarray, bool]] = OrderedDict()
_CUTOUT_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_CUTOUT_GUARD = threading.Lock()
_CUTOUT_CACHE_SIZE = 8


def _product(image: Image.Image, cutout_method: str) -> tuple[np.ndarray, bool]:
    """The product as RGBA uint8 cropped to its alpha box (alpha >= 10 %), and whether one was
    found. An RGBA input with a non-opaque alpha is taken as already cut out.

    The last few cut-outs are kept, keyed by a hash of the photo's pixels and the method:
    :func:`scene` and :func:`backdrop` (and several seeds or prompts) on one photo cut it out
    once, even when they run at the same time. The result is the same as without the cache."""
    if image.mode == "RGBA" and int(np.asarray(image.getchannel("A")).min()) < 255:
        return _crop_product(image, np.array(image, dtype=np.uint8))
    digest = hashlib.sha256(image.mode.encode() + repr(image.size).encode()
                            + image.tobytes()).hexdigest()
    key = (digest, cutout_method)
    with _CUTOUT_GUARD:
        lock = _CUTOUT_LOCKS.setdefault(key, threading.Lock())
    with lock:  # a second caller for this photo waits for the first one's cut-out
        with _CUTOUT_GUARD:
            cached = _CUTOUTS.get(key)
            if cached is not None:
                _CUTOUTS.move_to_end(key)
        if cached is None:
            cached = _crop_product(image, np.array(cutout(image, method=cutout_method),
                                                   dtype=np.uint8))
            with _CUTOUT_GUARD:
                _CUTOUTS[key] = cached
                while len(_CUTOUTS) > _CUTOUT_CACHE_SIZE:
                    old, _ = _CUTOUTS.popitem(last=False)
                    _CUTOUT_LOCKS.pop(old, None)
    return cached[0].copy(), cached[1]


def _crop_product(image: Image.Image, rgba: np.ndarray) -> tuple[np.ndarray, bool]:
    ys, xs = np.nonzero(rgba[..., 3] >= 26)
    if ys.size == 0:
        whole = np.array(image.convert("RGB"), dtype=np.uint8)
        return np.dstack([whole, np.full(whole.shape[:2], 255, np.uint8)]), False
    return rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1].copy(), True


def _fit(crop: np.ndarray, pw: int, ph: int) -> np.ndarray:
    """The RGBA crop resized to pw x ph, premultiplied float32 (ph, pw, 4) in 0-1."""
    rgba = crop.astype(_F32) / 255.0
    a = rgba[..., 3:4]
    premult = np.concatenate([rgba[..., :3] * a, a], axis=-1)
    ch, cw = crop.shape[:2]
    s = max(pw / cw, ph / ch)
    interp = cv2.INTER_AREA if s < 1.0 else cv2.INTER_LANCZOS4
    scaled = cv2.resize(premult, (pw, ph), interpolation=interp).reshape(ph, pw, 4)
    scaled = np.clip(scaled, 0.0, 1.0)
    if s > 1.5:  # enlarging widens the soft edge by s: steepen it again (as packshot does)
        a_up = scaled[..., 3:4]
        colour = np.clip(scaled[..., :3] / np.maximum(a_up, 1e-3), 0.0, 1.0)
        a_sharp = np.clip((a_up - 0.5) * min(s / 1.5, 3.0) + 0.5, 0.0, 1.0)
        return np.concatenate([colour * a_sharp, a_sharp], axis=-1).astype(_F32)
    scaled[..., :3] = np.minimum(scaled[..., :3], scaled[..., 3:4])  # valid premultiplied
    return scaled.astype(_F32)


def _product_size(cw: int, ch: int, width: int, height: int, occupancy: float,
                  max_h: float) -> tuple[int, int]:
    """The product's size on the canvas: its box covers ``occupancy`` of the frame, capped at
    72 % of the frame's width and ``max_h`` pixels high."""
    s = math.sqrt(occupancy * width * height / (cw * ch))
    s = min(s, 0.72 * width / cw, max(max_h, 8.0) / ch)
    return max(1, round(cw * s)), max(1, round(ch * s))


# --------------------------------------------------------------------------------------------
# textures (float32 multipliers or colours, deterministic from the rng)
# --------------------------------------------------------------------------------------------


def _noise(rng: np.random.Generator, width: int, height: int, cells: float) -> np.ndarray:
    """Smooth value noise, mean ~0 and std ~1, with about ``cells`` features across."""
    cx = max(2, round(cells))
    cy = max(2, round(cells * height / max(width, 1)))
    grid = rng.standard_normal((cy + 2, cx + 2), dtype=_F32)
    grid = (grid - grid.mean()) / (float(grid.std()) or 1.0)
    ox, oy = max(1, width // cx), max(1, height // cy)
    big = cv2.resize(grid, (width + 2 * ox, height + 2 * oy), interpolation=cv2.INTER_CUBIC)
    return big[oy:oy + height, ox:ox + width]


def _mix(a: RGB | np.ndarray, b: RGB | np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of two colours (0-255) by t (HxW), as float32 0-1 HxWx3."""
    a_ = np.asarray(a, _F32) / 255.0
    b_ = np.asarray(b, _F32) / 255.0
    return a_ + (b_ - a_) * t[..., None]


def _texture(kind: str, base: RGB, accent: RGB, size: int,
             rng: np.random.Generator) -> np.ndarray:
    """A size x size tileable-enough material, float32 RGB 0-1, drawn in its own plane
    (u across, v into the depth)."""
    n = size
    if kind == "wood":
        planks = 6
        v = np.arange(n, dtype=_F32)[:, None] / n * planks
        streaks = _noise(rng, n, n, 12)  # stretched along u by the resize below
        streaks = cv2.resize(cv2.resize(streaks, (3, n)), (n, n), interpolation=cv2.INTER_CUBIC)
        tone = rng.uniform(-0.07, 0.07, planks + 1).astype(_F32)[np.floor(v).astype(int)]
        ring = 0.5 + 0.5 * np.sin(2 * np.pi * (v * 7.0 + 0.3 * streaks))
        fine = _noise(rng, n, n, 90)
        fine = cv2.resize(cv2.resize(fine, (24, n)), (n, n), interpolation=cv2.INTER_LINEAR)
        grain = np.clip(0.55 * ring ** 3 + 0.18 * fine, 0.0, 1.0)
        colour = _mix(base, accent, grain) * (1.0 + tone)[..., None]
        seam = np.abs((v - np.round(v)) * n / planks) < 1.2
        colour[np.broadcast_to(seam, (n, n))] *= 0.72
        return colour.astype(_F32)
    if kind == "marble":
        yy, xx = np.mgrid[0:n, 0:n].astype(_F32) / n
        turb = _noise(rng, n, n, 3) + 0.5 * _noise(rng, n, n, 7) + 0.25 * _noise(rng, n, n, 17)
        veins = 1.0 - np.abs(np.sin(np.pi * (xx * 3.0 + yy * 1.5) + 0.6 * turb))
        fade = np.clip(0.5 + 0.6 * _noise(rng, n, n, 3), 0.0, 1.0)  # veins come and go
        veins = veins ** 30 * fade + 0.15 * veins ** 3
        colour = _mix(base, accent, np.clip(0.6 * veins, 0.0, 1.0))
        return (colour * (1.0 + 0.04 * _noise(rng, n, n, 6))[..., None]).astype(_F32)
    if kind in ("concrete", "stone"):
        shade = (1.0 + 0.05 * _noise(rng, n, n, 4) + 0.03 * _noise(rng, n, n, 16)
                 + 0.025 * _noise(rng, n, n, n // 3))
        colour = np.asarray(base, _F32)[None, None, :] / 255.0 * shade[..., None]
        if kind == "stone":  # slabs
            row = np.arange(n)[:, None] % (n // 3)
            col = (np.arange(n)[None, :] + (np.arange(n)[:, None] // (n // 3)) * (n // 5)) \
                % (n // 2)
            seam = (row < 2) | (col < 2)
            colour[seam] = colour[seam] * 0.8
        return colour.astype(_F32)
    shade = 1.0 + 0.012 * _noise(rng, n, n, 6)
    return (np.asarray(base, _F32)[None, None, :] / 255.0 * shade[..., None]).astype(_F32)


def _perspective(tex: np.ndarray, width: int, rows: int, near_scale: float,
                 x_centre: float) -> np.ndarray:
    """A horizontal plane seen from slightly above: ``tex`` mapped onto ``rows`` image rows
    (far row first), foreshortened towards the far edge; fine detail fades into the
    texture's mean colour with distance, so the far rows do not alias."""
    n = tex.shape[0]
    d0 = 0.12
    y = (np.arange(rows, dtype=_F32) + 0.5) / max(rows, 1)
    f = (y + d0) / (1.0 + d0)  # 1 at the near edge, d0/(1+d0) at the far edge
    depth = (1.0 / f - 1.0) * 0.45 * n  # texture rows from the near edge
    u = (np.arange(width, dtype=_F32) - x_centre)[None, :] / f[:, None] * near_scale
    map_x = np.mod(u + n / 2, n).astype(_F32)
    map_y = np.mod(np.broadcast_to((n - 1 - depth)[:, None], (rows, width)), n).astype(_F32)
    plane = cv2.remap(tex, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    mean = tex.reshape(-1, 3).mean(axis=0)
    keep = np.clip((f - 0.1) / 0.6, 0.0, 1.0)[:, None, None]
    return plane * keep + mean[None, None, :] * (1.0 - keep)


def _bokeh(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A defocused garden: sky above, foliage below, soft discs of light."""
    w, h = max(16, width // 4), max(16, height // 4)
    t = np.linspace(0.0, 1.0, h, dtype=_F32)[:, None]
    sky, leaf, deep = (np.array(c, _F32) / 255.0 for c in
                       ((206, 222, 232), (136, 170, 112), (84, 116, 76)))
    grad = np.where(t[..., None] < 0.45, sky + (leaf - sky) * (t[..., None] / 0.45),
                    leaf + (deep - leaf) * ((t[..., None] - 0.45) / 0.55))
    small = np.broadcast_to(grad, (h, w, 3)).copy()
    small *= (1.0 + 0.12 * _noise(rng, w, h, 5))[..., None]
    palette = np.array([(255, 250, 226), (178, 206, 120), (96, 140, 80), (232, 236, 180),
                        (120, 164, 96)], _F32) / 255.0
    for _ in range(28):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h * 0.75)
        r = rng.uniform(0.03, 0.09) * w
        disc = np.zeros((h, w), np.uint8)
        cv2.circle(disc, (int(cx), int(cy)), max(1, int(r)), 255, -1, lineType=cv2.LINE_AA)
        a = disc.astype(_F32) / 255.0 * rng.uniform(0.25, 0.55)
        c = palette[rng.integers(0, len(palette))]
        small = small * (1 - a[..., None]) + c * a[..., None]
    small = cv2.GaussianBlur(small, (0, 0), max(1.0, 0.012 * w))
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def _wall(style: Style, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    if style.wall_texture == "bokeh":
        return _bokeh(width, height, rng)
    base = np.asarray(style.wall, _F32) / 255.0
    if style.wall_texture == "concrete":
        shade = (1.0 + 0.045 * _noise(rng, width, height, 5)
                 + 0.025 * _noise(rng, width, height, 20)
                 + 0.02 * _noise(rng, width, height, max(8, width // 5)))
    else:
        shade = (1.0 + 0.018 * _noise(rng, width, height, 5)
                 + 0.006 * _noise(rng, width, height, 60))
    return base[None, None, :] * shade[..., None]


def _light(width: int, height: int, light: int, top: float, bottom: float,
           strength: float = 0.12) -> np.ndarray:
    """A multiplier: brighter on the light's side, ``top`` .. ``bottom`` from the first row to the
    last, a soft vignette."""
    x = np.linspace(-0.5, 0.5, width, dtype=_F32)[None, :]
    y = np.linspace(0.0, 1.0, height, dtype=_F32)[:, None]
    side = 1.0 + strength * light * x * 2 * 0.5
    vertical = top + (bottom - top) * y
    r2 = (x * 2) ** 2 * 0.5 + ((y - 0.5) * 2) ** 2 * 0.5
    return (side * vertical * (1.0 - 0.08 * r2)).astype(_F32)


def _soft_region(mask: np.ndarray, sigma: float, q: int, width: int, limit: int
                 ) -> tuple[np.ndarray, int, int] | None:
    """A quarter-resolution 0-1 ``mask`` softened by ``sigma`` and enlarged ``q`` times, cropped
    to where it is not zero and to rows above ``limit``: (weights, x0, y0), or None."""
    soft = cv2.GaussianBlur(mask.astype(_F32), (0, 0), max(sigma, 0.5))
    ys, xs = np.nonzero(soft > 1e-3)
    if ys.size == 0:
        return None
    a, b, c, d = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    big = cv2.resize(soft[a:b, c:d], ((d - c) * q, (b - a) * q), interpolation=cv2.INTER_LINEAR)
    y0, x0 = a * q, c * q
    big = big[:max(0, limit - y0), :max(0, width - x0)]
    return (big, x0, y0) if big.size else None


def _decor(bg: np.ndarray, style: Style, wall_bottom: int, product_cx: float, light: int,
           rng: np.random.Generator) -> None:
    """Draw the style's decor on the wall (rows above ``wall_bottom``), in place."""
    height, width = bg.shape[:2]
    q = 4  # drawn at quarter resolution, then softened
    w, h = max(8, -(-width // q)), max(8, -(-height // q))
    wall_rows = max(1, wall_bottom)
    accent = np.asarray(style.accent, _F32) / 255.0
    if style.decor == "window":
        # window light: a skewed pane with a cross mullion, thrown from the light's side
        mask = np.zeros((h, w), np.uint8)
        cx = w * (0.5 + 0.2 * light) + rng.uniform(-0.04, 0.04) * w
        top, bottom = 0.08 * h, wall_rows / q * 0.92
        half = 0.17 * w
        skew = -light * 0.22 * w
        pts = np.array([[cx - half, top], [cx + half, top], [cx + half + skew, bottom],
                        [cx - half + skew, bottom]], np.int32)
        cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_AA)
        bar = max(1, int(0.012 * w))
        mid_y = int((top + bottom) / 2)
        cv2.line(mask, (int(cx + skew / 2), int(top)), (int(cx + skew), int(bottom)), 0, bar)
        cv2.line(mask, (int(cx - half + skew / 2), mid_y), (int(cx + half + skew / 2), mid_y),
                 0, bar)
        found = _soft_region(mask / 255.0, 0.012 * w, q, width, wall_bottom)
        if found is not None:
            patch, x0, y0 = found
            region = bg[y0:y0 + patch.shape[0], x0:x0 + patch.shape[1]]
            region += (patch * 0.10)[..., None] * np.asarray(style.warmth, _F32)[None, None, :]
    elif style.decor == "spot":  # a pool of light on the wall behind the product
        yy, xx = np.mgrid[0:h, 0:w].astype(_F32)
        cy = 0.55 * wall_rows / q
        r2 = ((xx - product_cx / q) / (0.30 * w)) ** 2 + ((yy - cy) / (0.42 * h)) ** 2
        pool = cv2.resize(1.0 + 1.5 * np.exp(-0.5 * r2), (w * q, h * q),
                          interpolation=cv2.INTER_LINEAR)[:height, :width]
        bg *= pool[..., None]
    elif style.decor == "arch":
        mask = np.zeros((h, w), np.uint8)
        aw = 0.27 * w
        ax = product_cx / q
        bottom = wall_rows / q
        top = max(0.1 * h, bottom - 0.78 * h)
        cv2.rectangle(mask, (int(ax - aw), int(top + aw)), (int(ax + aw), int(bottom) + 2), 255,
                      -1)
        cv2.circle(mask, (int(ax), int(top + aw)), int(aw), 255, -1, lineType=cv2.LINE_AA)
        wall = np.maximum(np.asarray(style.wall, _F32) / 255.0, 1e-3)
        found = _soft_region(mask / 255.0, 0.6, q, width, wall_bottom)
        if found is not None:  # the accent colour, keeping the wall's light and texture
            shape, x0, y0 = found
            region = bg[y0:y0 + shape.shape[0], x0:x0 + shape.shape[1]]
            t = shape[..., None]
            region[:] = region * (1 - t) + region * (accent / wall) * t
        if style.name == "playful":  # a few soft confetti dots
            dots = np.zeros((h, w), np.uint8)
            for _ in range(9):
                x, y = int(rng.uniform(0.04, 0.96) * w), int(rng.uniform(0.05, 0.9) * bottom)
                r = max(1, int(rng.uniform(0.012, 0.03) * w))
                if abs(x - ax) < aw * 1.15:
                    continue
                cv2.circle(dots, (x, y), r, 255, -1, lineType=cv2.LINE_AA)
            found = _soft_region(dots / 255.0, 0.5, q, width, wall_bottom)
            if found is not None:
                d, x0, y0 = found
                region = bg[y0:y0 + d.shape[0], x0:x0 + d.shape[1]]
                dot_colour = np.array((246, 186, 90), _F32) / 255.0
                t = 0.8 * d[..., None]
                region[:] = region * (1 - t) + dot_colour * t
    elif style.decor == "panels":  # wainscot mouldings: a lit top edge over a shaded one
        thick = max(1, round(0.004 * width))
        top = int(0.1 * height)
        bottom = int(wall_bottom - 0.06 * height)
        if bottom - top > 4 * thick:
            lines = np.zeros((bottom - top + 2 * thick + 1, width), _F32)
            n = 3 if width >= height else 2
            gap = 0.05 * width
            pw = (width - gap * (n + 1)) / n
            for i in range(n):
                x0 = int(gap + i * (pw + gap))
                cv2.rectangle(lines, (x0, thick), (int(x0 + pw), bottom - top + thick), 1.0,
                              thick)
            shifted = np.roll(lines, thick, axis=0)
            rows = bg[top - thick:top - thick + lines.shape[0]]
            rows *= (1.0 + 0.10 * lines - 0.10 * shifted)[:rows.shape[0], :, None]
    elif style.decor == "ties":  # formwork tie holes in a concrete wall
        r = max(1, round(0.006 * width))
        pad = 3 * r
        for gy in np.arange(0.12 * height, wall_bottom - 0.04 * height, 0.22 * height):
            for gx in np.arange(0.12 * width, width, 0.24 * width):
                x, y = int(gx), int(gy)
                hole = np.zeros((2 * pad + 1, 2 * pad + 1), _F32)
                cv2.circle(hole, (pad, pad), r, 1.0, -1, lineType=cv2.LINE_AA)
                hole = cv2.GaussianBlur(hole, (0, 0), 0.6 * r)
                ya, xa = max(0, y - pad), max(0, x - pad)
                region = bg[ya:y + pad + 1, xa:x + pad + 1]
                region *= (1.0 - 0.35 * hole[ya - (y - pad):ya - (y - pad) + region.shape[0],
                                               xa - (x - pad):xa - (x - pad) + region.shape[1]]
                           )[..., None]


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Set:
    background: np.ndarray  # float32 HxWx3, 0-1
    contact_y: int  # the row the product stands on
    top_limit: int  # the product's top may not go above this row
    occupancy: float  # the product box's target share of the frame
    gloss_from: int  # rows from here down may show a reflection (the surface)
    shadow_depth: float  # vertical squash of the cast shadow (how far "back" it falls)


def _tabletop(style: Style, width: int, height: int, light: int, product_cx: float,
              rng: np.random.Generator) -> _Set:
    horizon = round(height * rng.uniform(0.54, 0.60))
    wall = _wall(style, width, height, rng) * _light(width, height, light, 0.93, 1.02)[..., None]
    _decor(wall, style, horizon, product_cx, light, rng)
    tex = _texture(style.surface_texture, style.surface, style.accent, 512, rng)
    rows = height - horizon
    plane = _perspective(tex, width, rows, 512 / max(width, 1) * 0.9, product_cx)
    plane *= _light(width, rows, light, 1.04, 0.90)[..., None]
    bg = wall
    bg[horizon:] = plane
    # where table meets wall: a soft occlusion line
    y = np.arange(height, dtype=_F32)[:, None]
    occlusion = np.exp(-np.abs(y - horizon) / max(1.0, 0.012 * height))
    bg *= (1.0 - 0.16 * occlusion)[..., None]
    contact = round(horizon + rows * 0.52)
    return _Set(bg, contact, round(0.05 * height), 0.32, horizon, 0.30)


def _shelf(style: Style, width: int, height: int, light: int, product_cx: float,
           rng: np.random.Generator) -> _Set:
    top = round(height * rng.uniform(0.64, 0.68))
    depth = max(3, round(0.07 * height))
    front = max(2, round(0.038 * height))
    bg = _wall(style, width, height, rng) * _light(width, height, light, 0.94, 1.0)[..., None]
    _decor(bg, style, top, product_cx, light, rng)
    tex = _texture(style.surface_texture, style.surface, style.accent, 256, rng)
    bg[top:top + depth] = _perspective(tex, width, depth, 256 / max(width, 1) * 0.9,
                                       product_cx) * 1.02
    edge = tex[::-1][:front] if tex.shape[0] >= front else tex[:1].repeat(front, axis=0)
    edge = cv2.resize(edge, (width, front), interpolation=cv2.INTER_LINEAR)
    bg[top + depth:top + depth + front] = edge * 0.78
    bg[top + depth:top + depth + max(1, front // 6)] *= 1.18  # the lit front edge
    below = top + depth + front
    if below < height:  # the shelf's shadow on the wall under it
        y = np.arange(height - below, dtype=_F32)[:, None]
        bg[below:] *= (1.0 - 0.35 * np.exp(-y / max(1.0, 0.05 * height)))[..., None]
    occlusion = np.exp(-np.abs(np.arange(height, dtype=_F32)[:, None] - top)
                       / max(1.0, 0.008 * height))
    bg *= (1.0 - 0.14 * occlusion)[..., None]
    contact = top + round(depth * 0.55)
    return _Set(bg, contact, round(0.05 * height), 0.28, top, 0.16)


def _floor(style: Style, width: int, height: int, light: int, product_cx: float,
           rng: np.random.Generator) -> _Set:
    junction = round(height * rng.uniform(0.57, 0.62))
    skirting = max(2, round(0.024 * height))
    bg = _wall(style, width, height, rng) * _light(width, height, light, 0.92, 1.0)[..., None]
    _decor(bg, style, junction - skirting, product_cx, light, rng)
    floor_tex = "wood" if style.surface_texture in ("wood", "plain") and style.name != "bold" \
        else style.surface_texture
    tex = _texture(floor_tex, style.surface, style.accent, 512, rng)
    rows = height - junction
    plane = _perspective(tex, width, rows, 512 / max(width, 1) * 0.7, product_cx)
    bg[junction:] = plane * _light(width, rows, light, 1.02, 0.88)[..., None]
    board = np.asarray(style.wall, _F32) / 255.0 * 1.06
    bg[junction - skirting:junction] = np.minimum(board, 1.0)
    bg[junction - skirting:junction - skirting + max(1, skirting // 5)] *= 0.85
    occlusion = np.exp(-np.abs(np.arange(height, dtype=_F32)[:, None] - junction)
                       / max(1.0, 0.01 * height))
    bg *= (1.0 - 0.18 * occlusion)[..., None]
    contact = round(junction + rows * 0.5)
    return _Set(bg, contact, round(0.05 * height), 0.34, junction, 0.28)


def _seamless(style: Style, width: int, height: int, light: int, product_cx: float,
              contact: int, rng: np.random.Generator) -> _Set:
    """A paper sweep: the wall colour at the top curving into the floor colour under the
    product, with no visible horizon, and a soft pool of light behind the product."""
    top, bottom = (np.asarray(c, _F32) / 255.0 for c in style.backdrop)
    y = np.arange(height, dtype=_F32)[:, None] / max(height - 1, 1)
    bend = contact / height - 0.12
    t = np.clip((y - bend + 0.25) / 0.5, 0.0, 1.0)
    t = t * t * (3 - 2 * t)
    bg = top[None, None, :] + (bottom - top)[None, None, :] * t[..., None]
    bg = np.broadcast_to(bg, (height, width, 3)).astype(_F32)
    yy, xx = np.mgrid[0:height, 0:width].astype(_F32)
    r2 = ((xx - product_cx) / (0.42 * width)) ** 2 + ((yy - 0.45 * height) / (0.5 * height)) ** 2
    bg = bg * (0.9 + 0.2 * np.exp(-0.5 * r2))[..., None]
    bg *= _light(width, height, light, 1.0, 1.0, strength=0.08)[..., None]
    bg *= (1.0 + 0.008 * _noise(rng, width, height, 6))[..., None]
    return _Set(bg, contact, round(0.06 * height), 0.32, height, 0.22)


# --------------------------------------------------------------------------------------------
# shadows, reflection, composite
# --------------------------------------------------------------------------------------------


def _contact_shadow(alpha: np.ndarray, x0: int, y_contact: int,
                    roi: tuple[int, int, int, int], scale: float) -> np.ndarray:
    """Ambient occlusion under the footprint: two soft ellipses at the contact line, on the
    region ``roi`` (x0, y0, x1, y1) of the canvas."""
    ph, pw = alpha.shape
    rx0, ry0, rx1, ry1 = roi
    shadow = np.zeros((ry1 - ry0, rx1 - rx0), _F32)
    rows = max(2, round(0.04 * ph))
    foot = np.flatnonzero((alpha[ph - rows:] > 0.5).any(axis=0))
    if foot.size == 0:
        foot = np.flatnonzero((alpha > 0.5).any(axis=0))
    if foot.size == 0:
        return shadow
    fx0, fx1 = x0 + foot[0], x0 + foot[-1] + 1
    cx = (fx0 + fx1) / 2.0
    half_w = max((fx1 - fx0) / 2.0, 0.04 * pw)
    for sx, sy, opacity in ((0.55 * half_w, 0.006 * scale + 1.0, 0.45),
                            (0.95 * half_w, 0.018 * scale + 1.0, 0.20)):
        x_lo, x_hi = max(int(cx - 3 * sx), rx0), min(int(cx + 3 * sx) + 1, rx1)
        y_lo, y_hi = max(int(y_contact - 3 * sy), ry0), min(int(y_contact + 3 * sy) + 1, ry1)
        if x_lo >= x_hi or y_lo >= y_hi:
            continue
        yy, xx = np.mgrid[y_lo:y_hi, x_lo:x_hi].astype(_F32)
        g = np.exp(-0.5 * (((xx - cx) / sx) ** 2 + ((yy - y_contact) / sy) ** 2))
        region = shadow[y_lo - ry0:y_hi - ry0, x_lo - rx0:x_hi - rx0]
        region[:] = 1.0 - (1.0 - region) * (1.0 - opacity * g)
    return shadow


def _cast_shadow(alpha: np.ndarray, x0: int, y0: int, y_contact: int, width: int, height: int,
                 light: int, depth: float) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The product's silhouette laid on the surface away from the light: a point at height z
    above the contact line lands ``0.5 z`` to the side and ``depth * z`` behind (up the image),
    sharp at the contact and softer and fainter with height. Drawn at half resolution; returned
    with the canvas region (x0, y0, x1, y1) it covers."""
    ph, pw = alpha.shape
    k = 2
    w, h = max(8, -(-width // k)), max(8, -(-height // k))
    canvas = np.zeros((h, w), _F32)
    small = cv2.resize(alpha, (max(1, pw // k), max(1, ph // k)), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    sx0, sy0 = x0 // k, y0 // k
    canvas[sy0:sy0 + sh, sx0:sx0 + sw] = small[:max(0, min(sh, h - sy0)),
                                               :max(0, min(sw, w - sx0))]
    yc = y_contact / k
    kx = -0.5 * light
    matrix = np.array([[1.0, -kx, kx * yc], [0.0, depth, yc * (1.0 - depth)]], np.float64)
    hard = cv2.warpAffine(canvas, matrix, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    scale = min(w, h)
    near = cv2.GaussianBlur(hard, (0, 0), max(0.6, 0.004 * scale))
    far = cv2.GaussianBlur(hard, (0, 0), max(1.0, 0.03 * scale))
    reach = max(depth * sh, 1.0)
    t = np.clip((yc - np.arange(h, dtype=_F32)) / reach, 0.0, 1.0)[:, None]
    soft = (near * (1 - t) + far * t) * (1.0 - 0.65 * t)
    ys, xs = np.nonzero(soft > 1e-3)
    if ys.size == 0:
        return np.zeros((0, 0), _F32), (0, 0, 0, 0)
    a, b = max(0, ys.min() - 1), min(h, ys.max() + 2)
    c, d = max(0, xs.min() - 1), min(w, xs.max() + 2)
    roi = (c * k, a * k, min(width, d * k), min(height, b * k))
    crop = cv2.resize(soft[a:b, c:d], ((d - c) * k, (b - a) * k), interpolation=cv2.INTER_LINEAR)
    return crop[:roi[3] - roi[1], :roi[2] - roi[0]], roi


def _reflect(bg: np.ndarray, layer: np.ndarray, x0: int, y_contact: int,
             opacity: float) -> None:
    """A faint mirror image of the product under its contact line, fading out, in place."""
    if opacity <= 0:
        return
    height, width = bg.shape[:2]
    ph, pw = layer.shape[:2]
    reach = min(max(2, round(0.3 * ph)), height - y_contact)
    if reach <= 0:
        return
    flipped = layer[::-1][:reach]
    flipped = cv2.GaussianBlur(flipped, (0, 0), max(0.8, 0.004 * ph))
    fade = (opacity * (1.0 - np.arange(reach, dtype=_F32) / reach) ** 2)[:, None, None]
    xa, xb = max(0, x0), min(width, x0 + pw)
    if xa >= xb:
        return
    part = flipped[:, xa - x0:xb - x0] * fade
    region = bg[y_contact:y_contact + reach, xa:xb]
    bg[y_contact:y_contact + reach, xa:xb] = part[..., :3] + (1.0 - part[..., 3:4]) * region


def _shade(bg: np.ndarray, alpha: np.ndarray, x0: int, y0: int, y_contact: int, light: int,
           depth: float, strength: float) -> None:
    """Darken ``bg`` in place with the cast and the contact shadow, on their region only."""
    height, width = bg.shape[:2]
    cast, (cx0, cy0, cx1, cy1) = _cast_shadow(alpha, x0, y0, y_contact, width, height, light,
                                              depth)
    ph, pw = alpha.shape
    scale = min(width, height)
    pad_x, pad_y = round(pw * 0.6 + 0.1 * scale), round(0.06 * scale + 3)
    if cast.size:
        roi = (min(cx0, max(0, x0 - pad_x)), min(cy0, max(0, y_contact - pad_y)),
               max(cx1, min(width, x0 + pw + pad_x)), max(cy1, min(height, y_contact + pad_y)))
    else:
        roi = (max(0, x0 - pad_x), max(0, y_contact - pad_y), min(width, x0 + pw + pad_x),
               min(height, y_contact + pad_y))
    rx0, ry0, rx1, ry1 = roi
    if rx0 >= rx1 or ry0 >= ry1:
        return
    contact = _contact_shadow(alpha, x0, y_contact, roi, scale)
    shade = contact * min(1.0, strength + 0.35)
    if cast.size:
        part = shade[cy0 - ry0:cy1 - ry0, cx0 - rx0:cx1 - rx0]
        part[:] = 1.0 - (1.0 - part) * (1.0 - cast * strength)
    tint = np.array((0.96, 0.97, 1.0), _F32)  # shadows lean to the ambient sky
    bg[ry0:ry1, rx0:rx1] *= 1.0 - shade[..., None] * tint[None, None, :]


def _compose(product_rgba: np.ndarray, found: bool, style: Style, style_reason: str,
             kind: str, kind_reason: str, width: int, height: int, light: int,
             rng: np.random.Generator) -> SceneResult:
    ch, cw = product_rgba.shape[:2]
    jitter = float(rng.uniform(-0.02, 0.02))
    side = float(rng.uniform(0.04, 0.09))  # the product sits a little towards the light
    product_cx = width * (0.5 + side * light)
    if kind == "backdrop":
        contact = round(height * 0.80)
        setting = _seamless(style, width, height, light, width * 0.5, contact, rng)
        product_cx = width * 0.5
    else:
        build = {"tabletop": _tabletop, "shelf": _shelf, "floor": _floor}[kind]
        setting = build(style, width, height, light, product_cx, rng)
    bg = setting.background
    max_h = setting.contact_y - setting.top_limit
    pw, ph = _product_size(cw, ch, width, height, setting.occupancy + jitter, max_h)
    layer = _fit(product_rgba, pw, ph)
    margin = round(0.05 * width)
    x0 = round(product_cx - pw / 2)
    x0 = min(max(x0, margin), width - margin - pw) if pw < width - 2 * margin else (width - pw) // 2
    y0 = setting.contact_y - ph
    alpha = layer[..., 3]

    bg *= np.asarray(style.warmth, _F32)[None, None, :]
    _reflect(bg, layer, x0, setting.contact_y, style.gloss)
    _shade(bg, alpha, x0, y0, setting.contact_y, light, setting.shadow_depth, style.shadow)
    bg += rng.standard_normal((height, width), dtype=_F32)[..., None] * _F32(0.5 / 255.0)
    region = bg[y0:y0 + ph, x0:x0 + pw]
    bg[y0:y0 + ph, x0:x0 + pw] = layer[..., :3] + (1.0 - layer[..., 3:4]) * region
    np.multiply(bg, 255.0, out=bg)
    np.add(bg, 0.5, out=bg)
    np.clip(bg, 0.0, 255.0, out=bg)
    out = bg.astype(np.uint8)
    canvas_alpha = np.zeros((height, width), _F32)
    canvas_alpha[y0:y0 + ph, x0:x0 + pw] = alpha
    layout = Layout(width=width, height=height, style=style.name, style_reason=style_reason,
                    kind=kind, kind_reason=kind_reason, box=(x0, y0, x0 + pw, y0 + ph),
                    contact_y=setting.contact_y, scale=pw / cw, light=light,
                    found_product=found)
    return SceneResult(Image.fromarray(out), layout, canvas_alpha)


def _render(image: Image.Image, kind_param: str | None, *, prompt: str | None, seed: int,
            size: int, aspect_ratio: str, style: str, cutout_method: str) -> SceneResult:
    name, why, kind, kind_why, seed = _resolve(prompt, seed, style, kind_param)
    if cutout_method not in CUTOUT_METHODS:
        raise ValueError(f"cutout_method must be one of {', '.join(CUTOUT_METHODS)}, "
                         f"not {cutout_method!r}")
    width, height = output_size(image.size, size, aspect_ratio)
    look = STYLES[name]
    light = look.light * (-1 if seed % 2 else 1)
    rng = np.random.default_rng([seed, *name.encode()])
    product, found = _product(image, cutout_method)
    return _compose(product, found, look, why, kind if kind_param is not None else "backdrop",
                    kind_why or "backdrop", width, height, light, rng)


def render_scene(image: Image.Image, *, prompt: str | None = "", seed: int = 0,
                 size: int = 1024, aspect_ratio: str = "1:1", style: str = "auto",
                 scene: str = "auto", cutout_method: str = "grabcut") -> SceneResult:
    """:func:`scene`, with its :class:`Layout` and the product's alpha on the canvas."""
    return _render(image, scene, prompt=prompt, seed=seed, size=size,
                   aspect_ratio=aspect_ratio, style=style, cutout_method=cutout_method)


def render_backdrop(image: Image.Image, *, prompt: str | None = "", seed: int = 0,
                    size: int = 1024, aspect_ratio: str = "1:1", style: str = "auto",
                    cutout_method: str = "grabcut") -> SceneResult:
    """:func:`backdrop`, with its :class:`Layout` and the product's alpha on the canvas."""
    return _render(image, None, prompt=prompt, seed=seed, size=size,
                   aspect_ratio=aspect_ratio, style=style, cutout_method=cutout_method)


def scene(image: Image.Image, *, prompt: str | None = "", seed: int = 0, size: int = 1024,
          aspect_ratio: str = "1:1", style: str = "auto", scene: str = "auto",
          cutout_method: str = "grabcut") -> Image.Image:
    """The product composited into a procedurally drawn lifestyle setting (module docstring).

    ``prompt`` picks the style and the setting (:func:`pick_style`, :func:`pick_kind`) unless
    ``style`` / ``scene`` name them; ``seed`` varies the light's side, textures and placement;
    ``size`` is the output's longer side, ``aspect_ratio`` its shape. The product is cut out
    with ``cutout_method`` (an RGBA input with a non-opaque alpha is used as it is; a photo
    whose cut-out finds nothing is placed whole).

    Raises:
        ValueError: an unknown style, scene, aspect ratio or cut-out method, a size outside
            64-4096, a negative or non-integer seed, a prompt that is not text.
    """
    return render_scene(image, prompt=prompt, seed=seed, size=size, aspect_ratio=aspect_ratio,
                        style=style, scene=scene, cutout_method=cutout_method).image


def backdrop(image: Image.Image, *, prompt: str | None = "", seed: int = 0, size: int = 1024,
             aspect_ratio: str = "1:1", style: str = "auto",
             cutout_method: str = "grabcut") -> Image.Image:
    """The product on a seamless gradient backdrop in the style's colours, with a soft pool
    of light behind it, a cast and a contact shadow (parameters as :func:`scene`)."""
    return render_backdrop(image, prompt=prompt, seed=seed, size=size,
                           aspect_ratio=aspect_ratio, style=style,
                           cutout_method=cutout_method).image
