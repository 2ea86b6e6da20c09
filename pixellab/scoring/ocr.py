"""Label text preserved: the text printed on the product, read by OCR on the source and on the
output and compared (``label_text``; ``pip install 'pixellab[ocr]'``).

Why: a generative edit that keeps the product's shape and colour can still rewrite its label
("AQUAVIVE" becomes "AQUAVIVF", "30ml" becomes "3Oml", or a made-up slogan appears). CLIP and
the reference metrics barely move for that, a shopper notices at once, and a marketplace may
take the listing down for a wrong brand or quantity. So:

* ``read_text`` runs RapidOCR (PP-OCRv4 detection and recognition on onnxruntime; the models
  ship inside the ``rapidocr-onnxruntime`` wheel, nothing is downloaded) on the product region
  only: the crop of the mask's bounding box with a margin, with what lies outside the (slightly
  grown) mask painted over, so that a busy backdrop or a price tag next to the product is not
  read as its label. The crop is scaled so that its longer side is about ``DETECT_SIDE`` pixels
  (text on a small product is enlarged, a 4000 px photo is not run at full size), and when the
  lines found are still smaller than ``MIN_TEXT_PX`` it is read once more, enlarged until they
  are not: the detector misses and the recogniser misreads text below ~20 px.
* ``label_text`` = 1 - CER of the output's text against the reference, clipped to [0, 1]; the
  reference is the dataset's ground truth (manifest column ``label_text``) when it has one,
  else what OCR read on the source. Strings are compared normalised (Unicode NFKC, case folded,
  punctuation and spacing dropped) because OCR reads "OATCRUNCH" for "OAT CRUNCH" (measured on
  the sample) and drops punctuation; what such normalisation hides is not what a shopper would
  call a changed label. Insertions count: text the model added to the label lowers the value.
* A metric that cannot be computed is missing, never zero: OCR not installed, no source image,
  or no text on the source and no ground truth (nothing to preserve). A source with text and an
  output with none scores 0: the label was lost.

The engine is created once per process on first use, behind a lock (a sweep scores outputs in
worker threads; onnxruntime already spreads one inference over every core, so inferences run
one at a time), and ``import pixellab.scoring`` never imports it. Results are cached by the
pixels read, so the source of a product, read once per output, costs one OCR per sweep.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import sys
import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from pixellab.scoring import identity
from pixellab.scoring.base import Score, ScoreContext

SCORER_VERSION = "ocr-1"
METRIC = "label_text"
INSTALL_HINT = "no OCR: pip install 'pixellab[ocr]'"
DETECT_SIDE = 960
"""Longer side (px) of the crop given to the text detector: a read at 960 px costs about 0.5 s
of CPU (0.36 s at 736 px; the sample's 38 photos, two cores, measured), and the cost grows with
the square of the side."""
MIN_TEXT_PX = 24
"""Text lines shorter than this (px, at the detector's scale) are read again, enlarged."""
MIN_CONFIDENCE = 0.8
"""Lines read with less confidence are dropped, as are lines of one character: on the sample's
products without label text the recogniser "read" 11 such lines (a chain's links as
"2101010101010" at 0.65, an earring's hooks as "n" at 0.76, part of a T-shirt as "O" at 0.82,
CJK strokes), while every line of a real label read at 0.95 or more. A reference made of such
noise would score the output on garbage; a label misread that badly is not legible to a
shopper either."""
MAX_UPSCALE = 4.0
MAX_SIDE = 2000
"""Never enlarge a crop past this side (rapidocr's own limit) nor by more than ``MAX_UPSCALE``."""
SAME_FRAMING_TASKS = frozenset({"enhance", "remove_background", "upscale"})
"""Tasks whose output shows the source's scene at the same framing (maybe scaled): the source's
mask, resized, marks the product on the output too."""
_CACHE_SIZE = 64


class OcrUnavailable(RuntimeError):
    """OCR cannot run here (the extra is not installed, or its models do not load)."""


class OcrLine(NamedTuple):
    text: str
    confidence: float
    box: tuple[tuple[float, float], ...]
    """The line's four corners (top-left, top-right, bottom-right, bottom-left) in the pixels
    of the image given to :func:`read_text`."""


@dataclass(frozen=True)
class OcrResult:
    lines: tuple[OcrLine, ...]
    text: str
    """The lines in reading order (top to bottom, then left to right), joined by spaces."""
    region: tuple[int, int, int, int] | None = None
    """The part of the image that was read (left, top, right, bottom), None: nothing to read."""
    scale: float = 1.0
    """How much that region was enlarged (> 1) or shrunk before detection."""


# -- the engine ---------------------------------------------------------------------------------


@dataclass
class _EngineSlot:
    lock: threading.Lock
    engine: Any = None
    reason: str | None = None


_SLOT = _EngineSlot(threading.Lock())
_INFERENCE = threading.Lock()
"""One inference at a time: rapidocr's engine is not documented thread-safe, and onnxruntime
already spreads one inference over every core."""
_RESULTS: OrderedDict[str, tuple[tuple[OcrLine, ...], float]] = OrderedDict()
"""Readings by the pixels read (lines in crop coordinates, scale), most recent last."""
_RESULTS_LOCK = threading.Lock()


def _import_rapidocr() -> Any:
    """The optional dependency, imported: the only place it is (``ImportError`` when the
    ``ocr`` extra is not installed)."""
    return importlib.import_module("rapidocr_onnxruntime")


def _load_rapidocr() -> Any:
    """Build the engine; :class:`OcrUnavailable` when that cannot be done."""
    try:
        module = _import_rapidocr()
    except ModuleNotFoundError as exc:
        if exc.name != "rapidocr_onnxruntime":  # installed, but one of its dependencies is not
            raise OcrUnavailable(f"no OCR: rapidocr_onnxruntime cannot be imported ({exc}); "
                                 "pip install 'pixellab[ocr]'") from None
        hint = INSTALL_HINT
        if sys.version_info >= (3, 13):
            hint += " (rapidocr-onnxruntime needs Python < 3.13)"
        raise OcrUnavailable(hint) from None
    except ImportError as exc:  # a broken onnxruntime or OpenCV build
        raise OcrUnavailable(f"no OCR: rapidocr_onnxruntime cannot be imported ({exc}); "
                             "pip install 'pixellab[ocr]'") from None
    try:
        # "max": the detector keeps the size read_text chose (it would otherwise enlarge every
        # image to a 736 px short side, the cost of a 1300 x 736 pass even for a 200 px crop)
        return module.RapidOCR(det_limit_type="max", det_limit_side_len=MAX_SIDE)
    except Exception as exc:  # a missing model file, an onnxruntime that cannot load it
        raise OcrUnavailable(f"no OCR: cannot start rapidocr ({type(exc).__name__}: {exc}); "
                             "pip install 'pixellab[ocr]'") from None


def _engine() -> Any:
    with _SLOT.lock:
        if _SLOT.engine is None and _SLOT.reason is None:
            try:
                _SLOT.engine = _load_rapidocr()
            except OcrUnavailable as exc:
                _SLOT.reason = str(exc)
        if _SLOT.reason is not None:
            raise OcrUnavailable(_SLOT.reason)
        return _SLOT.engine


def reset_engine() -> None:
    """Forget the engine (or why there was none) and the cached readings: the next read loads
    it again, e.g. after installing the extra in a running notebook kernel."""
    with _SLOT.lock:
        _SLOT.engine, _SLOT.reason = None, None
    with _RESULTS_LOCK:
        _RESULTS.clear()


def unavailable_reason() -> str | None:
    """Why OCR cannot run here ("no OCR: pip install 'pixellab[ocr]'"), or None when it can
    (loads the engine on first call, about a second)."""
    try:
        _engine()
    except OcrUnavailable as exc:
        return str(exc)
    return None


def engine_id() -> str:
    """What read the text, recorded with each score: another engine reads differently."""
    try:
        version = importlib.metadata.version("rapidocr-onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return f"rapidocr-onnxruntime {version} (PP-OCRv4)"


# -- reading ------------------------------------------------------------------------------------


def _rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """RGB uint8; transparency is shown on white, as a shop shows a cut-out."""
    if isinstance(image, np.ndarray):
        array = np.asarray(image)
        if array.dtype != np.uint8:
            array = np.clip(array, 0, 255).astype(np.uint8)
        if array.ndim == 2:
            return np.repeat(array[..., None], 3, axis=2)
        if array.shape[2] == 4:
            alpha = array[..., 3:4].astype(np.float32) / 255.0
            flat = array[..., :3].astype(np.float32) * alpha + 255.0 * (1 - alpha)
            return np.clip(flat + 0.5, 0, 255).astype(np.uint8)
        return array[..., :3]
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return np.asarray(canvas)
    return np.asarray(image.convert("RGB"))


def _mask_array(mask: Image.Image | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Boolean product mask at ``size`` (width, height)."""
    if isinstance(mask, np.ndarray):
        mask = Image.fromarray(np.where(np.asarray(mask) > (127 if mask.dtype != bool else 0),
                                        255, 0).astype(np.uint8), "L")
    mask = mask.convert("L")
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    return np.asarray(mask) > 127


def _region(mask: np.ndarray | None, box: tuple[float, float, float, float] | None,
            width: int, height: int) -> tuple[int, int, int, int] | None:
    """The part to read: ``box``, else the mask's bounding box grown by a margin (8 % of its
    size, at least 8 px: a label printed to the product's edge keeps its last letter), else
    the whole image; None when the mask is empty."""
    if box is not None:
        left, top, right, bottom = (int(round(v)) for v in box)
    elif mask is not None:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            return None
        top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        pad = max(8, round(0.08 * max(bottom - top, right - left)))
        left, top, right, bottom = left - pad, top - pad, right + pad, bottom + pad
    else:
        left, top, right, bottom = 0, 0, width, height
    left, top = max(0, left), max(0, top)
    right, bottom = min(width, right), min(height, bottom)
    if right - left < 4 or bottom - top < 4:
        return None
    return left, top, right, bottom


def _isolate(crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The crop with what lies outside the mask (grown by 1 % of the crop, so an edge that a
    model moved a little is kept) painted in the backdrop's mean colour: a backdrop is not the
    product's label. Its mean, not white: thin parts (a bag's handles, a chain) standing out
    sharply against white are read as letters ("NA" for two handles, measured)."""
    import cv2

    grow = max(3, round(0.01 * max(mask.shape)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    inside = cv2.dilate(mask.astype(np.uint8), kernel) > 0
    if inside.all():
        return crop
    out = np.empty_like(crop)
    out[...] = np.round(crop[~inside].reshape(-1, 3).mean(axis=0)).astype(np.uint8)
    out[inside] = crop[inside]
    return out


def _initial_scale(height: int, width: int) -> float:
    side = max(height, width)
    return float(min(DETECT_SIDE / side, MAX_UPSCALE))


def _detect(engine: Any, rgb: np.ndarray, scale: float) -> list[tuple[np.ndarray, str, float]]:
    """One OCR pass of ``rgb`` resized by ``scale``: (corners in ``rgb`` pixels, text, score)."""
    import cv2

    h, w = rgb.shape[:2]
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    resized = cv2.resize(rgb, size, interpolation=interpolation) if scale != 1 else rgb
    bgr = np.ascontiguousarray(resized[..., ::-1])
    result, _ = engine(bgr, use_cls=False)  # product labels stand upright; the 180-degree
    # classifier costs time and, misfiring, turns a good reading into garbage
    found = []
    for corners, text, confidence in result or ():
        points = np.asarray(corners, np.float64) / np.array([size[0] / w, size[1] / h])
        found.append((points, str(text), float(confidence)))
    return found


def _line_height(points: np.ndarray) -> float:
    return float((np.linalg.norm(points[3] - points[0]) + np.linalg.norm(points[2] - points[1]))
                 / 2)


def read_text(image: Image.Image | np.ndarray,
              box: tuple[float, float, float, float] | None = None,
              mask: Image.Image | np.ndarray | None = None, *,
              min_confidence: float = MIN_CONFIDENCE) -> OcrResult:
    """The text on the product: OCR of ``box`` (left, top, right, bottom), else of the bounding
    box of ``mask`` (L, 255 = product; resized to the image if it differs) with a margin, else
    of the whole image; outside ``mask`` is painted over. Lines below ``min_confidence`` and
    lines of a single character are left out (see ``MIN_CONFIDENCE``). Raises
    :class:`OcrUnavailable`."""
    engine = _engine()
    rgb = _rgb_array(image)
    height, width = rgb.shape[:2]
    product = _mask_array(mask, (width, height)) if mask is not None else None
    region = _region(product, box, width, height)
    if region is None:
        return OcrResult((), "", None, 1.0)
    left, top, right, bottom = region
    crop = rgb[top:bottom, left:right]
    if product is not None:
        crop = _isolate(crop, product[top:bottom, left:right])
    crop = np.ascontiguousarray(crop)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(crop.shape).encode())
    digest.update(crop.tobytes())
    key = digest.hexdigest()
    with _RESULTS_LOCK:
        cached = _RESULTS.get(key)
        if cached is not None:
            _RESULTS.move_to_end(key)
    if cached is None:
        cached = _read(engine, crop)
        with _RESULTS_LOCK:
            _RESULTS[key] = cached
            while len(_RESULTS) > _CACHE_SIZE:
                _RESULTS.popitem(last=False)
    local, scale = cached
    lines = tuple(OcrLine(text, confidence, tuple((x + left, y + top) for x, y in corners))
                  for text, confidence, corners in local
                  if confidence >= min_confidence and len(normalise(text).replace(" ", "")) > 1)
    return OcrResult(lines, " ".join(line.text for line in lines), region, scale)


def _read(engine: Any, crop: np.ndarray) -> tuple[tuple[OcrLine, ...], float]:
    """The lines on ``crop`` (in its pixels) and the scale they were read at: a pass at
    ``DETECT_SIDE``, and a second, enlarged one when the lines found are below
    ``MIN_TEXT_PX``."""
    scale = _initial_scale(*crop.shape[:2])
    with _INFERENCE:
        found = _detect(engine, crop, scale)
        heights = [_line_height(points) * scale for points, _, _ in found]
        if heights and float(np.median(heights)) < MIN_TEXT_PX:
            better = min(scale * MIN_TEXT_PX / max(float(np.median(heights)), 1.0),
                         MAX_UPSCALE, MAX_SIDE / max(crop.shape[:2]))
            if better > scale * 1.2:
                scale = better
                found = _detect(engine, crop, scale)
    lines = tuple(OcrLine(text, round(confidence, 4),
                          tuple((round(float(x), 1), round(float(y), 1)) for x, y in points))
                  for points, text, confidence in found if text.strip())
    return lines, scale


# -- comparing ----------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Lower case, Unicode NFKC, punctuation to spaces, runs of spaces to one."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join("".join(ch if ch.isalnum() else " " for ch in folded).split())


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions), two-row dynamic programme."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate of ``hypothesis`` against ``reference``, both normalised and with
    spaces ignored (OCR splits and merges words freely): edits / reference length; 0 for two
    empty strings, 1 for a reference and nothing read (more when much was added)."""
    ref, hyp = normalise(reference).replace(" ", ""), normalise(hypothesis).replace(" ", "")
    if not ref:
        return 0.0 if not hyp else 1.0
    return levenshtein(ref, hyp) / len(ref)


def _found(word: str, words: set[str], joined: str) -> bool:
    """A word counts as present when it is one of ``words`` or, two characters or longer, part
    of their concatenation (OCR read "aquaviveserum" for "AQUAVIVE Serum")."""
    return word in words or (len(word) >= 2 and word in joined)


def compare(reference: str, hypothesis: str) -> dict[str, Any]:
    """CER, word recall and the words missing from / added to ``hypothesis``."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    ref_words, hyp_words = ref.split(), hyp.split()
    ref_joined, hyp_joined = ref.replace(" ", ""), hyp.replace(" ", "")
    missing = [w for w in dict.fromkeys(ref_words) if not _found(w, set(hyp_words), hyp_joined)]
    added = [w for w in dict.fromkeys(hyp_words) if not _found(w, set(ref_words), ref_joined)]
    recall = (1 - len(missing) / len(set(ref_words))) if ref_words else 1.0
    return {"cer": cer(ref, hyp), "word_recall": recall, "missing": missing, "added": added}


# -- the metric ---------------------------------------------------------------------------------


def _alpha_mask(image: Image.Image) -> np.ndarray | None:
    """A cut-out's alpha as the product mask, None for an opaque image."""
    if "A" not in image.getbands() and not (image.mode == "P" and "transparency" in image.info):
        return None
    alpha = np.asarray(image.convert("RGBA").getchannel("A"))
    if alpha.min() >= 250 or alpha.max() < 128:
        return None  # opaque everywhere (or nothing kept): no cut-out to read
    return alpha > 127


def _located(found: identity.Located, size: tuple[int, int]
             ) -> tuple[tuple[float, float, float, float] | None, np.ndarray | None] | None:
    """Where identity found the product, as (box, mask) on the output: its silhouette in the
    output when it has one, else its box (x0, y0, x1, y1) clipped to the frame; None when the
    product was not found (then the whole output is read)."""
    if not found.found:
        return None
    mask = found.mask_in_output
    width, height = size
    if mask is not None and mask.shape == (height, width) and mask.any():
        return None, mask.astype(bool)
    if found.box is None:
        return None
    left, top, right, bottom = (float(v) for v in found.box)
    left, top = max(0.0, left), max(0.0, top)
    right, bottom = min(float(width), right), min(float(height), bottom)
    if right - left < 4 or bottom - top < 4:
        return None
    return (left, top, right, bottom), None


def output_region(ctx: ScoreContext) -> tuple[str, tuple[float, float, float, float] | None,
                                                np.ndarray | Image.Image | None]:
    """(method, box, mask) of the product on the output: a cut-out's alpha; the source's mask,
    resized, where the task keeps the framing; where the identity analysis of this context
    (:func:`pixellab.scoring.identity.located`, shared with the identity metrics) finds the
    product, its silhouette or box; else the whole output (a lifestyle scene's
    other text is then read too)."""
    output = ctx.output
    alpha = _alpha_mask(output)
    if alpha is not None:
        return "alpha", None, alpha
    if ctx.mask is not None and ctx.source is not None and ctx.task in SAME_FRAMING_TASKS:
        source_ratio = ctx.source.width / ctx.source.height
        if abs(output.width / output.height - source_ratio) <= 0.02 * source_ratio:
            return "source_mask", None, ctx.mask
    if ctx.source is not None:
        try:
            found = _located(identity.located(ctx), output.size)
        except ValueError:  # identity cannot be measured: the whole output is read
            found = None
        if found is not None:
            return "located", *found
    return "whole", None, None


def _mean_confidence(result: OcrResult) -> float | None:
    if not result.lines:
        return None
    return round(float(np.mean([line.confidence for line in result.lines])), 4)


def score_label_text(ctx: ScoreContext) -> Score:
    """``label_text``: 1 - CER of the output's label against the reference, in [0, 1]."""
    reason = unavailable_reason()
    if reason is not None:
        return Score.missing(METRIC, SCORER_VERSION, reason)
    if ctx.source is None:
        return Score.missing(METRIC, SCORER_VERSION, "no source image")
    truth = normalise(ctx.label_text or "")
    source = read_text(ctx.source, mask=ctx.mask)
    source_text = normalise(source.text)
    if not truth and not source_text:
        return Score.missing(METRIC, SCORER_VERSION, "no label text on the source")
    reference = truth or source_text
    method, box, mask = output_region(ctx)
    output = read_text(ctx.output, box=box, mask=mask)
    result = compare(reference, output.text)
    # "changed": the output differs from what the source visibly shows, not from what OCR
    # could not read on the source either (a word too small to read is not a change)
    seen = compare(reference, source.text) if truth else {"missing": []}
    changed = (any(w not in seen["missing"] for w in result["missing"])
               or any(w not in normalise(source.text).split() for w in result["added"]))
    details: dict[str, Any] = {
        "reference": reference,
        "reference_from": "label_text" if truth else "source_ocr",
        "source_text": source.text,
        "output_text": output.text,
        "cer": round(result["cer"], 4),
        "word_recall": round(result["word_recall"], 4),
        "missing": result["missing"],
        "added": result["added"],
        "changed": bool(changed),
        "lost": not normalise(output.text),
        "source_confidence": _mean_confidence(source),
        "output_confidence": _mean_confidence(output),
        "method": method,
        "engine": engine_id(),
    }
    if truth:
        # what OCR gets wrong on the untouched source: the floor the output cannot beat
        details["source_cer"] = round(cer(truth, normalise(source.text)), 4)
    value = float(np.clip(1.0 - result["cer"], 0.0, 1.0))
    return Score(METRIC, value, SCORER_VERSION, details)


__all__ = ["INSTALL_HINT", "METRIC", "SCORER_VERSION", "OcrLine", "OcrResult", "OcrUnavailable",
           "cer", "compare", "engine_id", "levenshtein", "normalise", "output_region",
           "read_text", "reset_engine", "score_label_text", "unavailable_reason"]
