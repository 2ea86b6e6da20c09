"""Bounded download of provider outputs.

Providers hand back URLs (Replicate deletes them after about an hour), so outputs are fetched as
soon as a job succeeds, streamed with a byte cap and a wall-clock deadline (25 MiB and 60 s for
an image, 500 MiB and 300 s for a video) (httpx's timeouts are
per phase: a server trickling bytes never trips them), and refused when the declared type is not
what the task expects. The bytes are validated afterwards like any other output.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
from functools import lru_cache

import httpx

from pixellab.errors import DataRemoved, InvalidOutput, ProviderTimeout, ProviderUnavailable

MAX_OUTPUT_BYTES = 25 * 1024 * 1024
DOWNLOAD_DEADLINE_S = 60.0
MAX_VIDEO_BYTES = 500 * 1024 * 1024
VIDEO_DEADLINE_S = 300.0
"""A video output (``video=True``): at most 500 MiB in at most 5 minutes (a 10-s 1080p clip is
tens of MB; shared/research/reliability.md I1 bounds videos at 500 MiB and 300 s)."""
_ALLOWED_PREFIXES = ("image/", "video/", "application/octet-stream", "binary/octet-stream")


@lru_cache(maxsize=4)
def _ssl_context(cafile: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()


def tls_verify() -> ssl.SSLContext:
    """TLS trust for downloads: the system's, or ``SSL_CERT_FILE`` when set (the emulator's CA)."""
    return _ssl_context(os.environ.get("SSL_CERT_FILE") or None)


def limits(video: bool) -> tuple[int, float]:
    """(byte cap, deadline in seconds) for an image or a video output."""
    return (MAX_VIDEO_BYTES, VIDEO_DEADLINE_S) if video else (MAX_OUTPUT_BYTES,
                                                              DOWNLOAD_DEADLINE_S)


async def fetch_output(url: str, *, model_id: str, max_bytes: int | None = None,
                       deadline_s: float | None = None,
                       headers: dict[str, str] | None = None,
                       video: bool = False) -> tuple[bytes, str]:
    """The bytes at ``url`` and their declared media type, or a :class:`ProviderError`.
    ``video`` raises the default byte cap and deadline to a video's (:func:`limits`)."""
    default_bytes, default_deadline = limits(video)
    max_bytes = default_bytes if max_bytes is None else max_bytes
    deadline_s = default_deadline if deadline_s is None else deadline_s
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        media_type = header[5:].split(";")[0] or "application/octet-stream"
        try:
            data = base64.b64decode(payload, validate=True)
        except ValueError:
            raise InvalidOutput("undecodable", f"{model_id}: output data URI is not base64",
                                model_id=model_id) from None
        return data, media_type
    if not url.startswith(("https://", "http://")):
        raise InvalidOutput("bad_url", f"{model_id}: output is not a URL: {url[:80]!r}",
                            model_id=model_id)
    try:
        async with asyncio.timeout(deadline_s):
            async with httpx.AsyncClient(verify=tls_verify(), timeout=30.0,
                                         follow_redirects=True) as client:
                async with client.stream("GET", url, headers=headers) as response:
                    if response.status_code in (404, 410):
                        raise DataRemoved(
                            f"{model_id}: the output URL answered {response.status_code}: the "
                            f"provider no longer has it", model_id=model_id)
                    if response.status_code >= 400:
                        raise ProviderUnavailable(
                            f"{model_id}: output download answered {response.status_code}",
                            model_id=model_id)
                    media_type = response.headers.get("content-type", "").split(";")[0].strip()
                    if media_type and not media_type.startswith(_ALLOWED_PREFIXES):
                        raise InvalidOutput("wrong_media_type",
                                            f"{model_id}: output served as {media_type}",
                                            model_id=model_id)
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > max_bytes:
                        raise InvalidOutput("too_many_bytes", f"{model_id}: output declares "
                                            f"{declared} bytes, over {max_bytes}",
                                            model_id=model_id)
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise InvalidOutput("too_many_bytes", f"{model_id}: output exceeds "
                                                f"{max_bytes} bytes", model_id=model_id)
                        chunks.append(chunk)
    except TimeoutError:
        raise ProviderTimeout(f"{model_id}: output download took over {deadline_s:g} s",
                              model_id=model_id) from None
    except httpx.HTTPError as exc:
        raise ProviderUnavailable(f"{model_id}: output download failed: {type(exc).__name__}",
                                  model_id=model_id) from None
    return b"".join(chunks), media_type or "application/octet-stream"
