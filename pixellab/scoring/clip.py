"""CLIP scores: does the output show the product (text-image), and is it still the same product
(image-image), on open-clip-torch (``pip install pixellab[clip]``).

* ``clip_text`` = 100 · max(cos(E_image, E_caption), 0), the torchmetrics CLIPScore definition,
  against a caption built from the product (``a product photo of {title}``), never against the
  generation prompt: a model that ignores the prompt is penalised the same way on every arm.
  The raw cosine, the backbone and a hash of the weights are stored with it: scores from two
  backbones are never comparable.
* ``clip_fidelity`` = cos(E_output, E_source): the edit kept the product (a packshot that lost
  the product has a low value even when it passes every marketplace rule).
* ``clip_identity`` = cos(E_output product, E_source product): the same on the *masked product*
  only (each crop around it, the rest painted grey), where the identity analysis located it
  (:func:`pixellab.scoring.identity.product_crops`): whole-image similarity mostly sees the
  backdrop, which every packshot and scene replaces. Missing when the product was not found
  (the identity gate scores that).

Speed: images are encoded in batches, the next batch's preprocessing (decode, resize,
normalise: PIL and numpy, which release the GIL) runs in a thread while torch runs the current
batch's forward pass; each distinct text is encoded once; embeddings are cached by (image
sha256, backbone, weights id) in memory and, with ``cache_dir``, on disk, so re-scoring or a
second metric on the same image costs no forward pass.

Weights: a pretrained tag is looked up in the local Hugging Face cache only; nothing is
downloaded unless ``allow_download`` (``PIXELLAB_CLIP_DOWNLOAD=1``) is set and the hub is not in
offline mode (``HF_HUB_OFFLINE``). A local checkpoint path works too. When weights cannot be
loaded, every CLIP metric is recorded missing with the reason, never zero, and the run goes on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pixellab.errors import ClipUnavailable
from pixellab.scoring.base import Score
from pixellab.settings import current as current_settings

SCORER_VERSION = "clip-1"
METRICS = ("clip_text", "clip_fidelity", "clip_identity")
DEFAULT_BACKBONE = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
_HF_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")





@dataclass(frozen=True)
class ClipItem:
    """One output to score: its image, the product's caption and the source it was made from."""

    output_sha256: str
    output: Image.Image
    caption: str | None = None
    source_sha256: str | None = None
    source: Image.Image | None = None
    products: tuple[Image.Image, Image.Image] | str | None = None
    """For ``clip_identity``: the (source, output) product crops, or why there are none."""


@dataclass(frozen=True)
class ClipSettings:
    backbone: str = DEFAULT_BACKBONE
    pretrained: str | None = DEFAULT_PRETRAINED
    """A pretrained tag (looked up in the local hub cache) or None for random initialisation
    (tests and benchmarks only: the scores mean nothing)."""
    checkpoint: Path | None = None
    batch_size: int = 32
    threads: int | None = None
    cache_dir: Path | None = None
    allow_download: bool = False
    seed: int = 0

    @classmethod
    def from_env(cls, cache_dir: Path | None = None) -> ClipSettings:
        """``PIXELLAB_CLIP_BACKBONE``, ``PIXELLAB_CLIP_PRETRAINED`` (``none`` = random init),
        ``PIXELLAB_CLIP_CHECKPOINT`` (a local file) and ``PIXELLAB_CLIP_DOWNLOAD=1``."""
        settings = current_settings()
        pretrained = settings.clip_pretrained
        return cls(backbone=settings.clip_backbone,
                   pretrained=None if pretrained.lower() == "none" else pretrained,
                   checkpoint=settings.clip_checkpoint, cache_dir=cache_dir,
                   allow_download=settings.clip_download)


def _not_in_cache(settings: ClipSettings) -> ClipUnavailable:
    return ClipUnavailable(
        f"no weights: {settings.backbone}/{settings.pretrained} is not in the local Hugging "
        "Face cache (set PIXELLAB_CLIP_DOWNLOAD=1 to fetch it, or PIXELLAB_CLIP_CHECKPOINT to "
        "a local file)")


@dataclass
class _Loaded:
    model: Any
    preprocess: Callable[[Image.Image], Any]
    tokenizer: Any
    weights_id: str
    context_length: int


@dataclass
class EmbeddingCache:
    """Unit-norm embeddings by (kind, key, backbone, weights id): memory, and disk if ``root``."""

    root: Path | None = None
    _memory: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict)

    def _path(self, key: tuple[str, ...]) -> Path | None:
        if self.root is None:
            return None
        digest = hashlib.sha256("\0".join(key).encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.npy"

    def get(self, key: tuple[str, ...]) -> np.ndarray | None:
        hit = self._memory.get(key)
        if hit is not None:
            return hit
        path = self._path(key)
        if path is not None and path.exists():
            try:
                hit = np.load(path, allow_pickle=False)
            except (OSError, ValueError):
                return None  # a torn file is a miss, it will be rewritten
            self._memory[key] = hit
        return hit

    def put(self, key: tuple[str, ...], vector: np.ndarray) -> None:
        self._memory[key] = vector
        path = self._path(key)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            with open(tmp, "wb") as handle:
                np.save(handle, vector, allow_pickle=False)
            os.replace(tmp, path)


class ClipScorer:
    """Batched, cached CLIP embeddings and the two metrics. Thread-compatible, not thread-safe:
    one scorer per sweep scoring pass."""

    def __init__(self, settings: ClipSettings | None = None) -> None:
        self.settings = settings or ClipSettings()
        self.cache = EmbeddingCache(self.settings.cache_dir)
        self._loaded: _Loaded | None = None
        self._unavailable: str | None = None
        self.forward_batches = 0
        """Image forward passes run (tests assert a cache hit runs none)."""

    # -- loading -------------------------------------------------------------------------------

    @property
    def backbone_id(self) -> str:
        return f"open_clip:{self.settings.backbone}"

    @property
    def version(self) -> str:
        """The scorer version recorded with each score: scores from two backbones or weights
        are different measurements and are stored side by side, never compared."""
        settings = self.settings
        weights = (settings.checkpoint.name if settings.checkpoint is not None
                   else settings.pretrained or f"random-{settings.seed}")
        return f"{SCORER_VERSION}/{settings.backbone}/{weights}"

    def unavailable_reason(self) -> str | None:
        """Why CLIP cannot run, or None once the model loaded (loads it on first call)."""
        if self._loaded is None and self._unavailable is None:
            try:
                self._loaded = self._load()
            except ClipUnavailable as exc:
                self._unavailable = str(exc)
        return self._unavailable

    def _refuse_without_cached_weights(self) -> None:
        """Say "no weights" before importing open_clip when no open_clip weights file is in
        the local Hugging Face cache at all and none may be fetched: the import pulls in torch
        and its thread pools (~400 MB resident in the demo's process, measured) only to learn
        that there is nothing to load. Any cached weights file defers to the full lookup."""
        settings = self.settings
        if settings.checkpoint is not None or settings.pretrained is None:
            return
        if settings.allow_download and os.environ.get("HF_HUB_OFFLINE", "0") in (
                "", "0", "false", "False"):
            return
        from huggingface_hub import constants

        cache = Path(constants.HF_HUB_CACHE)
        for filename in _HF_FILENAMES:
            if next(cache.glob(f"models--*/snapshots/*/{filename}"), None) is not None:
                return
        raise _not_in_cache(settings)

    def _weights_path(self) -> str | None:
        settings = self.settings
        if settings.checkpoint is not None:
            if not settings.checkpoint.is_file():
                raise ClipUnavailable(f"no weights: checkpoint {settings.checkpoint} not found")
            return str(settings.checkpoint)
        if settings.pretrained is None:
            return None
        import open_clip

        cfg = open_clip.get_pretrained_cfg(settings.backbone, settings.pretrained)
        if not cfg:
            raise ClipUnavailable(f"no weights: {settings.backbone} has no pretrained tag "
                                  f"{settings.pretrained!r}")
        repo = str(cfg.get("hf_hub") or "").rstrip("/")
        if repo:
            from huggingface_hub import try_to_load_from_cache

            for filename in _HF_FILENAMES:
                cached = try_to_load_from_cache(repo, filename)
                if isinstance(cached, str):
                    return cached
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        if settings.allow_download and not offline:
            return settings.pretrained  # open_clip downloads it
        raise _not_in_cache(settings)

    def _load(self) -> _Loaded:
        if importlib.util.find_spec("open_clip") is None or importlib.util.find_spec(
                "torch") is None:
            raise ClipUnavailable("no weights: CLIP needs the clip extra, open-clip-torch is "
                                  "not installed (pip install 'pixellab[clip]')")
        self._refuse_without_cached_weights()
        import open_clip
        import torch

        if self.settings.threads:
            torch.set_num_threads(self.settings.threads)
        weights = self._weights_path()
        torch.manual_seed(self.settings.seed)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.settings.backbone, pretrained=weights)
        except Exception as exc:  # corrupt file, wrong architecture, network refused
            raise ClipUnavailable(f"no weights: cannot load {weights or 'random init'} for "
                                  f"{self.settings.backbone}: {type(exc).__name__}: "
                                  f"{exc}") from None
        model.eval()
        tokenizer = open_clip.get_tokenizer(self.settings.backbone)
        return _Loaded(model=model, preprocess=preprocess, tokenizer=tokenizer,
                       weights_id=_weights_hash(model),
                       context_length=int(getattr(tokenizer, "context_length", 77)))

    @property
    def weights_id(self) -> str:
        if self.unavailable_reason() is not None:
            return "unavailable"
        assert self._loaded is not None
        return self._loaded.weights_id

    # -- embeddings ----------------------------------------------------------------------------

    def embed_images(self, images: Sequence[tuple[str, Image.Image]]) -> dict[str, np.ndarray]:
        """Unit-norm embeddings by sha256; cached ones cost nothing, the rest run in batches
        with the next batch preprocessed while the current one runs."""
        loaded = self._require()
        result: dict[str, np.ndarray] = {}
        todo: dict[str, Image.Image] = {}
        for digest, image in images:
            hit = self.cache.get(self._key("image", digest))
            if hit is not None:
                result[digest] = hit
            elif digest not in todo:
                todo[digest] = image
        for digests, batch in self._prefetched(list(todo.items()), loaded.preprocess):
            vectors = self._forward_images(loaded, batch)
            for digest, vector in zip(digests, vectors, strict=True):
                self.cache.put(self._key("image", digest), vector)
                result[digest] = vector
        return result

    def embed_texts(self, texts: Sequence[str]) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
        """Each distinct text once: its unit-norm embedding and how it was fitted to the context
        window (CLIP reads at most 77 tokens; longer captions are cut at a word boundary and
        the details say so, instead of the tokenizer cutting silently)."""
        import torch

        loaded = self._require()
        unique = list(dict.fromkeys(texts))
        fitted = {text: _fit_caption(text, loaded.tokenizer, loaded.context_length)
                  for text in unique}
        result: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
        todo = []
        for text in unique:
            hit = self.cache.get(self._key("text", fitted[text][0]))
            if hit is not None:
                result[text] = (hit, fitted[text][1])
            else:
                todo.append(text)
        for start in range(0, len(todo), self.settings.batch_size):
            chunk = todo[start:start + self.settings.batch_size]
            tokens = loaded.tokenizer([fitted[t][0] for t in chunk])
            with torch.inference_mode():
                vectors = _normalise(loaded.model.encode_text(tokens).float().numpy())
            for text, vector in zip(chunk, vectors, strict=True):
                self.cache.put(self._key("text", fitted[text][0]), vector)
                result[text] = (vector, fitted[text][1])
        return result

    # -- metrics -------------------------------------------------------------------------------

    def score(self, items: Sequence[ClipItem],
              metrics: Sequence[str] = METRICS) -> dict[str, list[Score]]:
        """Scores for each item (by output sha256), for the metrics asked for."""
        reason = self.unavailable_reason()
        if reason is not None:
            return {item.output_sha256: [Score.missing(m, self.version, reason)
                                         for m in metrics] for item in items}
        images = [(i.output_sha256, i.output) for i in items]
        if "clip_fidelity" in metrics:
            images += [(i.source_sha256, i.source) for i in items
                       if i.source is not None and i.source_sha256 is not None]
        crops: dict[str, tuple[str, str]] = {}
        if "clip_identity" in metrics:
            for i in items:
                if isinstance(i.products, tuple):
                    keys = tuple(_pixels_key(crop) for crop in i.products)
                    crops[i.output_sha256] = (keys[0], keys[1])
                    images += list(zip(keys, i.products, strict=True))
        vectors = self.embed_images(images)
        texts = (self.embed_texts([i.caption for i in items if i.caption])
                 if "clip_text" in metrics else {})
        common = {"backbone": self.backbone_id, "weights_id": self.weights_id}
        result: dict[str, list[Score]] = {}
        for item in items:
            scores = []
            output = vectors[item.output_sha256]
            if "clip_text" in metrics:
                if not item.caption:
                    scores.append(Score.missing("clip_text", self.version, "no caption"))
                else:
                    text_vector, fit = texts[item.caption]
                    cosine = float(np.dot(output, text_vector))
                    scores.append(Score("clip_text", 100.0 * max(cosine, 0.0), self.version,
                                        {**common, "cosine": cosine, "scale": 100,
                                         "caption": fit["caption"], **fit["details"]}))
            if "clip_fidelity" in metrics:
                if item.source_sha256 is None or item.source_sha256 not in vectors:
                    scores.append(Score.missing("clip_fidelity", self.version,
                                                "no source image"))
                else:
                    cosine = float(np.dot(output, vectors[item.source_sha256]))
                    scores.append(Score("clip_fidelity", cosine, self.version,
                                        {**common, "cosine": cosine}))
            if "clip_identity" in metrics:
                pair = crops.get(item.output_sha256)
                if pair is None:
                    reason = (item.products if isinstance(item.products, str)
                              else "no product crops")
                    scores.append(Score.missing("clip_identity", self.version, reason))
                else:
                    cosine = float(np.dot(vectors[pair[0]], vectors[pair[1]]))
                    scores.append(Score("clip_identity", cosine, self.version,
                                        {**common, "cosine": cosine, "crop": "product"}))
            result[item.output_sha256] = scores
        return result

    # -- internals -----------------------------------------------------------------------------

    def _require(self) -> _Loaded:
        reason = self.unavailable_reason()
        if reason is not None:
            raise ClipUnavailable(reason)
        assert self._loaded is not None
        return self._loaded

    def _key(self, kind: str, value: str) -> tuple[str, ...]:
        return (kind, value, self.backbone_id, self.weights_id)

    def _prefetched(self, todo: list[tuple[str, Image.Image]],
                    preprocess: Callable[[Image.Image], Any]
                    ) -> Iterator[tuple[list[str], Any]]:
        """Batches of preprocessed tensors, the next one prepared in a thread meanwhile."""
        import torch

        size = max(1, self.settings.batch_size)
        # a small first batch: the forward pass starts while the next batch is prepared,
        # instead of waiting for a full batch's preprocessing
        first = min(size, 8)
        chunks = [todo[:first]] + [todo[i:i + size] for i in range(first, len(todo), size)]
        chunks = [chunk for chunk in chunks if chunk]
        ready: queue.Queue[tuple[list[str], Any] | BaseException | None] = queue.Queue(maxsize=2)

        def produce() -> None:
            try:
                for chunk in chunks:
                    tensors = torch.stack([preprocess(_rgb(image)) for _, image in chunk])
                    ready.put(([digest for digest, _ in chunk], tensors))
            except BaseException as exc:  # handed to the consumer
                ready.put(exc)
            ready.put(None)

        thread = threading.Thread(target=produce, name="pixellab-clip-prep", daemon=True)
        thread.start()
        while (got := ready.get()) is not None:
            if isinstance(got, BaseException):
                raise got
            yield got
        thread.join()

    def _forward_images(self, loaded: _Loaded, batch: Any) -> np.ndarray:
        import torch

        with torch.inference_mode():
            features = loaded.model.encode_image(batch).float().numpy()
        self.forward_batches += 1
        return _normalise(features)


def _rgb(image: Image.Image) -> Image.Image:
    """CLIP sees RGB; a cut-out's transparent area is shown on white, as a shop would."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _fit_caption(text: str, tokenizer: Any, context_length: int
                 ) -> tuple[str, dict[str, Any]]:
    """The caption as CLIP will read it. Token count includes start and end tokens."""
    encode = getattr(tokenizer, "encode", None)
    if encode is None:  # a tokenizer we cannot count with: let it truncate, say we could not tell
        return text, {"caption": text, "details": {"tokens": None}}
    count = len(encode(text)) + 2
    if count <= context_length:
        return text, {"caption": text, "details": {"tokens": count}}
    words = text.split()
    while words and len(encode(" ".join(words))) + 2 > context_length:
        words.pop()
    fitted = " ".join(words)
    return fitted, {"caption": fitted,
                    "details": {"tokens": count, "truncated_to_tokens": len(encode(fitted)) + 2}}


def _weights_hash(model: Any) -> str:
    """A short hash of every parameter and buffer: two scorers agree on ids iff on weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def caption_for(task: str, title: str, category: str) -> str:
    """The caption an output is scored against: what a shopper should see, not the prompt."""
    if task == "packshot":
        return f"a product photo of {title} on a pure white background"
    return f"a product photo of {title}"


__all__ = ["DEFAULT_BACKBONE", "DEFAULT_PRETRAINED", "METRICS", "SCORER_VERSION", "ClipItem",
           "ClipScorer", "ClipSettings", "ClipUnavailable", "EmbeddingCache", "caption_for"]


def _pixels_key(image: Image.Image) -> str:
    """An embedding-cache key for an image made here (a product crop): its pixels' hash."""
    digest = hashlib.sha256(b"%dx%d:%s:" % (image.width, image.height, image.mode.encode()))
    digest.update(image.tobytes())
    return "pixels:" + digest.hexdigest()
