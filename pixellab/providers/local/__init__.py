"""The free, offline ``local`` provider: classical image operations behind the provider interface.

It is every sweep's baseline and the demo's engine. A model's ``endpoint`` names an operation in
:data:`OPERATIONS`; its ``defaults`` (merged with the request's mapped inputs) are the operation's
keyword arguments. Work runs in a thread so the event loop never blocks on pixels. Image
operations output PNG (lossless, and the only allowed format that keeps an alpha channel
everywhere); the video operations (:data:`VIDEO_OPERATIONS`, :mod:`~pixellab.providers.local.video`)
output H.264 MP4.

``scene`` and ``backdrop`` (:mod:`~pixellab.providers.local.scene`) are the ``lifestyle``
baselines: they read the request's ``prompt`` (its look picks the setting), ``seed``, ``size`` and
``aspect_ratio``.

``angles`` takes more photos of the product than the request's one image: the normalized param
``angles`` is a list of image bytes (PNG, JPEG or WEBP), in order, the main photo being the
request's ``image``; each is decoded and checked like the main one.

The ``rules`` and ``embed`` endpoints are the offline product analysers: keyword rules
(:func:`pixellab.intel.taxonomy.analyze_by_rules`), the ``analyze`` task's last fallback so the
chain always has an answer, and sentence embeddings (:mod:`~pixellab.providers.local.embed`,
``pixellab[embed]``; without it its requests fail ``MissingDependency``).

``realesrgan`` (:mod:`~pixellab.providers.local.esrgan`) is Real-ESRGAN on ncnn, the one neural
local model (``pixellab[upscale]``; without it its requests fail ``MissingDependency``).

``identity``, ``solid`` and ``fail`` exist so test catalogs can exercise validation and fallback
with a real provider: a no-op model, a safety-filter-like blank model, and an unavailable one.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from pixellab.errors import InvalidImage, InvalidRequest, ProviderUnavailable
from pixellab.intel.taxonomy import rules_output
from pixellab.providers.base import Job, JobState, Output, ProviderRequest
from pixellab.providers.local import embed, esrgan, ops, scene, video
from pixellab.validate import decode_image, normalized_array


def _fail(image: Image.Image, *, message: str = "local model configured to fail") -> Image.Image:
    raise ProviderUnavailable(message)


def _angles(image: Image.Image, *, angles: Sequence[Image.Image] = (), duration_s: float = 5.0,
            fps: float = 24, aspect_ratio: str = "9:16", resolution: str = "480p", seed: int = 0,
            transition: str = "crossfade") -> bytes:
    """:func:`video.angles` with the request's image first, then the decoded ``angles``."""
    return video.angles([image, *angles], duration_s=duration_s, fps=fps,
                        aspect_ratio=aspect_ratio, resolution=resolution, seed=seed,
                        transition=transition)


OPERATIONS: dict[str, Callable[..., Image.Image | bytes]] = {
    "autoenhance": ops.autoenhance,
    "cutout": ops.cutout,
    "packshot": ops.packshot,
    "upscale": ops.upscale,
    "realesrgan": esrgan.upscale,
    "scene": scene.scene,
    "backdrop": scene.backdrop,
    "identity": ops.identity,
    "solid": ops.solid,
    "fail": _fail,
    "kenburns": video.kenburns,
    "parallax": video.parallax,
    "angles": _angles,
}

ANALYSERS: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "rules": rules_output,
    "embed": embed.embed_output,
}
"""Endpoints that read a product's text (``params.product``) and answer an analysis as JSON."""

VIDEO_OPERATIONS = frozenset({"kenburns", "parallax", "angles"})
"""Operations that return encoded MP4 bytes (media type ``video/mp4``) rather than an image."""


def media_type(endpoint: str) -> str:
    """The media type of an operation's output."""
    return "video/mp4" if endpoint in VIDEO_OPERATIONS else "image/png"


def _encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _decode(data: bytes, what: str, model_id: str) -> Image.Image:
    try:
        image = decode_image(data)
    except InvalidImage as exc:
        raise InvalidRequest(f"{what} rejected: {exc}", model_id=model_id) from None
    if image.mode not in ("RGB", "RGBA"):  # 16-bit gray scaled, not clipped to white
        image = Image.fromarray(normalized_array(image))
    return image


def _decode_angles(value: object, model_id: str) -> list[Image.Image]:
    """The ``angles`` param: a list of image bytes, decoded in order."""
    if isinstance(value, (bytes, bytearray, str)) or not isinstance(value, (list, tuple)):
        raise InvalidRequest(f"angles must be a list of image bytes, not {type(value).__name__}",
                             model_id=model_id)
    if len(value) >= video.MAX_ANGLES:
        raise InvalidRequest(f"angles takes at most {video.MAX_ANGLES - 1} photos besides the "
                             f"main image, not {len(value)}", model_id=model_id)
    images = []
    for i, item in enumerate(value):
        if not isinstance(item, (bytes, bytearray)):
            raise InvalidRequest(f"angles[{i}] must be image bytes, not {type(item).__name__}",
                                 model_id=model_id)
        images.append(_decode(bytes(item), f"angles[{i}]", model_id))
    return images


class LocalProvider:
    """Runs :data:`OPERATIONS` in worker threads; jobs complete inside :meth:`submit`."""

    name = "local"

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def missing_credentials(self) -> str | None:
        return None

    async def submit(self, request: ProviderRequest) -> Job:
        model = request.model
        analyser = ANALYSERS.get(model.endpoint)
        if analyser is not None:  # an offline analyser: text in, JSON out
            return await self._analyze(request, analyser)
        operation = OPERATIONS.get(model.endpoint)
        if operation is None:
            raise InvalidRequest(f"local provider has no operation {model.endpoint!r}",
                                 model_id=model.id)
        if request.image is None:
            raise InvalidRequest("local operations need an input image", model_id=model.id)
        kwargs = model.provider_inputs(request.params)
        accepted = inspect.signature(operation).parameters
        unknown = sorted(k for k in kwargs if k not in accepted)
        if unknown:
            raise InvalidRequest(f"{model.endpoint} does not take {', '.join(unknown)}",
                                 model_id=model.id)
        job_id = f"local-{next(self._ids)}"
        data = await asyncio.to_thread(self._run, operation, request.image, kwargs, model.id)
        output = Output(data=data, media_type=media_type(model.endpoint),
                        metadata={"operation": model.endpoint})
        return Job(provider_job_id=job_id, state=JobState.SUCCEEDED, output=output)

    async def _analyze(self, request: ProviderRequest,
                       analyser: Callable[[dict[str, Any]], bytes]) -> Job:
        model = request.model
        product = request.params.get("product")
        if not isinstance(product, dict):
            raise InvalidRequest(f"{model.id} needs the product's text (params.product)",
                                 model_id=model.id)
        data = await asyncio.to_thread(analyser, product)
        return Job(provider_job_id=f"local-{next(self._ids)}", state=JobState.SUCCEEDED,
                   output=Output(data=data, media_type="application/json",
                                 metadata={"operation": model.endpoint}))

    @staticmethod
    def _run(operation: Callable[..., Image.Image | bytes], image_bytes: bytes,
             kwargs: dict[str, Any], model_id: str) -> bytes:
        image = _decode(image_bytes, "input image", model_id)
        if "angles" in kwargs:
            kwargs = {**kwargs, "angles": _decode_angles(kwargs["angles"], model_id)}
        try:
            result = operation(image, **kwargs)
        except ValueError as exc:
            raise InvalidRequest(str(exc), model_id=model_id) from None
        return result if isinstance(result, bytes) else _encode_png(result)

    async def poll(self, job: Job) -> Job:
        return job

    async def cancel(self, job: Job) -> None:
        return None
