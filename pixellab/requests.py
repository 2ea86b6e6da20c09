"""A request: one (product, task, chain, prompt, params, seed), and the key that names it.

``request_key`` is the sha256 of everything that determines an output: the task, the chain's
models with their endpoints, input mappings and defaults, the source image's bytes, the prompt's
id, content hash and rendered text, the params and the seed. It is the cache key and the
idempotency key: a request that already succeeded (in a sweep, a routed ``generate``, anywhere)
is never run again, so running the demo twice makes zero provider calls the second time.

Sweeps and routed calls both build their requests with :meth:`Request.build`, and the ledger's
plan writers take :meth:`Request.row`: one identity, one row, whoever plans.
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixellab.catalog import Model
from pixellab.errors import InvalidInputImage
from pixellab.prompts import Prompt
from pixellab.store import sha256_hex
from pixellab.tasks import Task
from pixellab.validate import MAX_IMAGE_BYTES

KEY_VERSION = 1
"""Bumped when the key's payload changes shape: every stored output is then run again once."""


def request_key(*, task: Task, chain: tuple[Model, ...], input_sha256: str,
                prompt: Prompt | None, prompt_text: str | None, params: dict[str, Any]) -> str:
    payload = {
        "v": KEY_VERSION,
        "task": task.value,
        "chain": [{"id": m.id, "endpoint": m.endpoint, "inputs": m.inputs,
                   "defaults": m.defaults} for m in chain],
        "input": input_sha256,
        "prompt": None if prompt is None else {"id": prompt.id, "hash": prompt.content_hash,
                                               "text": prompt_text},
        "params": params,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """The file's sha256, or a marker naming why it cannot be hashed: a request key must not
    need a 10 GB sparse file, a FIFO or a device read into memory (the request then fails with
    the reason when it runs)."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            return f"unreadable:{path}:not a regular file"
        if info.st_size > MAX_IMAGE_BYTES:
            return f"unreadable:{path}:{info.st_size} bytes"
        return sha256_hex(path.read_bytes())
    except OSError as exc:
        return f"unreadable:{path}:{exc.errno}"


def inputs_sha256(first_sha256: str, more: Sequence[Path | str]) -> str:
    """One identity for several input files (the multi-photo task's angles, in order), given
    the first one's hash (already computed for the request): the hash of their hashes, so
    reordering or changing any one makes a new request."""
    return sha256_hex(";".join([first_sha256, *(file_sha256(Path(p)) for p in more)]).encode())


@dataclass(frozen=True)
class Request:
    """What the runner executes, and what the ledger plans.

    Build one with :meth:`build` (which computes the key); the runner needs only the fields
    up to ``input_error``, the ledger's row (:meth:`row`) all of them.
    """

    request_key: str
    product_id: str
    category: str
    task: Task
    chain: tuple[Model, ...]
    image_path: str
    params: dict[str, Any] = field(default_factory=dict)
    prompt_id: str | None = None
    prompt_text: str | None = None
    input_error: InvalidInputImage | None = None
    """Set when planning already found the input unusable (a path outside its dataset, an
    input that could not be prepared): the request fails with it, nothing is read or sent."""
    arm: str = ""
    """The sweep's name for the chain (a model id, or ``route:a>b`` for a routed call)."""
    prompt_hash: str | None = None
    input_sha256: str = ""
    angle_paths: tuple[str, ...] = ()
    """More photos of the product sent with ``image_path`` (the multi-photo video task);
    ``input_sha256`` then covers every one of them."""

    @classmethod
    def build(cls, *, product_id: str, category: str, task: Task, chain: tuple[Model, ...],
              arm: str, image_path: Path | str, input_sha256: str, prompt: Prompt | None,
              prompt_text: str | None, params: dict[str, Any],
              input_error: InvalidInputImage | None = None,
              angle_paths: tuple[str, ...] = ()) -> Request:
        key = request_key(task=task, chain=chain, input_sha256=input_sha256, prompt=prompt,
                          prompt_text=prompt_text, params=params)
        return cls(request_key=key, product_id=product_id, category=category, task=task,
                   chain=chain, image_path=str(image_path), params=params,
                   prompt_id=prompt.id if prompt else None, prompt_text=prompt_text,
                   input_error=input_error, arm=arm,
                   prompt_hash=prompt.content_hash if prompt else None,
                   input_sha256=input_sha256, angle_paths=angle_paths)

    def row(self) -> dict[str, Any]:
        """The ``requests`` row the ledger plans (``ledger.database.PLANNED_COLUMNS``)."""
        return {"request_key": self.request_key, "product_id": self.product_id,
                "category": self.category, "task": self.task.value, "arm": self.arm,
                "chain": [m.id for m in self.chain], "prompt_id": self.prompt_id,
                "prompt_hash": self.prompt_hash, "prompt_text": self.prompt_text,
                "params": self.params, "seed": self.params.get("seed"),
                "input_sha256": self.input_sha256}

