"""Image outputs (enhance, cut-outs, packshots, upscales, lifestyle scenes): checked by
:func:`pixellab.validate.check_image_output`, stored byte for byte, shown in the report as a
thumbnail that enlarges on click."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from pixellab.tasks import Task
from pixellab.validate import MEDIA_TYPES, ImageCheck, check_image_output, decode_image


@dataclass(frozen=True)
class ImageKind:
    name: str = "image"
    extensions = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
    default_metrics: tuple[str, ...] = ("blank",)

    def check(self, data: bytes, *, task: Task, declared_media_type: str | None,
              expected_size: tuple[int, int] | None, source: bytes | None,
              params: Mapping[str, Any] | None = None) -> ImageCheck:
        """Decodable, an allowed format, the expected size, not blank, not the input returned
        unchanged, and (cut-outs) with usable alpha."""
        return check_image_output(data, declared_media_type=declared_media_type,
                                  expected_size=expected_size, source=source,
                                  require_alpha=task is Task.REMOVE_BACKGROUND)

    def stored_form(self, request_key: str, data: bytes) -> bytes:
        return data

    def cell_html(self, data: bytes, *, alt: str, caption: str) -> str:
        return zoomable_html(decode_image(data), alt=alt, caption=caption)


IMAGE = ImageKind()
assert set(IMAGE.extensions) == set(MEDIA_TYPES.values())  # every format validation allows


def thumbnail_data_uri(image: Image.Image, max_side: int = 220) -> str:
    """A small embedded image: JPEG for opaque images, PNG where alpha must show."""
    image = image.copy()
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if "A" in image.getbands():
        image.save(buffer, format="PNG", optimize=True)
        media = "image/png"
    else:
        image.convert("RGB").save(buffer, format="JPEG", quality=82)
        media = "image/jpeg"
    return f"data:{media};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def full_data_uri(image: Image.Image, max_side: int = 1024) -> str:
    """The enlarged view: WebP (alpha included) at up to ``max_side`` pixels.

    Why WebP, 1024 px and quality 72: the page embeds every image to stay one self-contained
    file that opens on a phone; a 1600 px PNG packshot or cut-out weighs ~1 MB, an 800 px
    photo as WebP at quality 82 ~40 KB and at 72 ~15 KB, and the difference is not visible
    at screen size. The whole demo report is then ~8 MB instead of ~15 MB."""
    image = image.copy()
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=72, method=2)  # method 4: 1.4x slower, same size
    return f"data:image/webp;base64,{base64.b64encode(buffer.getvalue()).decode()}"


def zoomable_html(image: Image.Image, *, alt: str, caption: str = "",
                  max_side: int = 220) -> str:
    """A thumbnail that opens the full image over the page on click (no script: a <details>
    whose <summary> holds both; the report template styles it)."""
    size = f"{image.width}×{image.height}"
    label = html.escape(f"{alt} · {size}" + (f" · {caption}" if caption else ""))
    return (f"<details class='plx-zoom'><summary>"
            f"<img src='{thumbnail_data_uri(image, max_side)}' alt='{html.escape(alt)}' "
            f"title='click to enlarge ({size})'>"
            f"<span class='plx-full'><img src='{full_data_uri(image)}' alt='{html.escape(alt)}"
            f" (full size)'><span>{label} — click to close</span></span>"
            f"</summary></details>")
