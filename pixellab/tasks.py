"""The photo tasks pixellab knows, and the one output kind each produces."""

from __future__ import annotations

from enum import StrEnum


class Task(StrEnum):
    ENHANCE = "enhance"
    REMOVE_BACKGROUND = "remove_background"
    PACKSHOT = "packshot"
    UPSCALE = "upscale"
    LIFESTYLE = "lifestyle"
    IMAGE_TO_VIDEO = "image_to_video"
    ANGLES_TO_VIDEO = "angles_to_video"
    """Several photos of one product (its ``angles``) combined into one clip."""
    ANALYZE = "analyze"
    JUDGE = "judge"
    """Two outputs of another task compared by a vision model (:mod:`pixellab.verdicts`)."""

    @property
    def output_kind(self) -> str:
        """``image``, ``video`` or ``json``: what a valid output of this task must be."""
        if self in (Task.IMAGE_TO_VIDEO, Task.ANGLES_TO_VIDEO):
            return "video"
        if self in (Task.ANALYZE, Task.JUDGE):
            return "json"
        return "image"


def expected_output_size(task: Task | str, source_size: tuple[int, int],
                         params: dict[str, object], *,
                         preserves_size: bool = False) -> tuple[int, int] | None:
    """The exact (width, height) a valid output must have, or ``None`` when the model picks it.

    A model that preserves size (``preserves_size`` in the catalog) must return the source's size
    for same-size tasks; ``upscale`` multiplies it by ``scale``; ``packshot`` is a square of the
    requested ``size`` when the request names one. Generative models choose their own size for
    enhance and cut-outs, so no exact size is demanded of them.
    """
    task = Task(task)
    width, height = source_size
    if task in (Task.ENHANCE, Task.REMOVE_BACKGROUND):
        return (width, height) if preserves_size else None
    if task is Task.UPSCALE:
        scale = params.get("scale")
        return (width * int(scale), height * int(scale)) if isinstance(scale, int) else None
    if task is Task.PACKSHOT:
        size = params.get("size")
        return (int(size), int(size)) if isinstance(size, int) else None
    return None
