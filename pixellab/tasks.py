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
    ANALYZE = "analyze"

    @property
    def output_kind(self) -> str:
        """``image``, ``video`` or ``json``: what a valid output of this task must be."""
        if self is Task.IMAGE_TO_VIDEO:
            return "video"
        if self is Task.ANALYZE:
            return "json"
        return "image"


def expected_output_size(task: Task | str, source_size: tuple[int, int],
                         params: dict[str, object]) -> tuple[int, int] | None:
    """The exact (width, height) a valid output must have, or ``None`` when the task leaves it
    to the model (e.g. lifestyle scenes).

    Same-size tasks keep the source's size; ``upscale`` multiplies it by ``scale``; ``packshot``
    is a square of the requested ``size`` when the request names one.
    """
    task = Task(task)
    width, height = source_size
    if task in (Task.ENHANCE, Task.REMOVE_BACKGROUND):
        return width, height
    if task is Task.UPSCALE:
        scale = params.get("scale")
        return (width * int(scale), height * int(scale)) if isinstance(scale, int) else None
    if task is Task.PACKSHOT:
        size = params.get("size")
        return (int(size), int(size)) if isinstance(size, int) else None
    return None
