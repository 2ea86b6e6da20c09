"""Product datasets: a folder with a manifest (CSV or Parquet) and the images it names.

Manifest columns: ``id, title, description, category, image`` (required) and ``mask``,
``reference``, ``source``, ``license`` plus any other column, kept as a product attribute.
Paths are relative to the dataset folder and must stay inside it: a manifest comes from a store
import or a colleague, and a row naming ``../../etc/passwd``, ``/etc/hostname`` or a symlink
that leads out of the folder must not make us read (and echo) that file. Such a row is still a
product, with a :class:`Refusal`: every request for it fails with reason ``outside_dataset``
before anything reads its files, and the rest of the dataset runs. Images are not read here
either: a product whose image is corrupt is still a product, and it gets its own clear error
when a request needs it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pixellab.errors import ConfigError, InvalidInputImage

REQUIRED_COLUMNS = ("id", "title", "description", "category", "image")
_KNOWN = {*REQUIRED_COLUMNS, "mask", "reference", "angles"}


@dataclass(frozen=True)
class Refusal:
    """Why a product's files are never read: ``reason`` is a stable code recorded in the ledger
    (``outside_dataset``), ``message`` names the manifest row, the column and the rule."""

    reason: str
    message: str

    def error(self) -> InvalidInputImage:
        return InvalidInputImage(self.reason, self.message)


@dataclass(frozen=True)
class Product:
    id: str
    title: str
    description: str
    category: str
    image: Path
    mask: Path | None = None
    reference: Path | None = None
    angles: tuple[Path, ...] = ()
    """More photos of the same product from other angles (manifest column ``angles``,
    ``;``-separated), for the multi-photo video task; ``image`` is the first angle."""
    attributes: dict[str, Any] = field(default_factory=dict)
    refusal: Refusal | None = None
    """Set when the manifest row names a file outside the dataset folder: nothing of this
    product is read, and each of its requests fails with this reason."""

    def fields(self) -> dict[str, Any]:
        """What prompt templates can use: the product's text fields and attributes."""
        return {"id": self.id, "title": self.title, "description": self.description,
                "category": self.category, **self.attributes}


@dataclass(frozen=True)
class Dataset:
    name: str
    root: Path
    products: tuple[Product, ...]

    @property
    def categories(self) -> list[str]:
        return sorted({p.category for p in self.products})

    def select(self, categories: list[str] | None = None, ids: list[str] | None = None,
               limit: int | None = None, *, with_angles: bool = False) -> list[Product]:
        """The products in ``categories`` and ``ids`` (all when empty), the first ``limit``;
        only those with more photos (``angles``) when ``with_angles``."""
        chosen = [p for p in self.products
                  if (not categories or p.category in categories) and (not ids or p.id in ids)
                  and (p.angles or not with_angles)]
        return chosen[:limit] if limit else chosen


def resolve_dataset_dir(name_or_path: str | os.PathLike[str]) -> Path:
    """A dataset is a path to its folder, or a name under ``./datasets/``."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    candidate = Path("datasets") / str(name_or_path)
    if candidate.is_dir():
        return candidate
    raise ConfigError(f"dataset {str(name_or_path)!r} not found (looked in {path} and "
                      f"{candidate})")


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def confined(root: Path, relative: str) -> Path | None:
    """``root / relative`` if its real path (every symlink followed) lies inside ``root``'s real
    path, else None. Absolute paths and ``..`` are judged by where they lead, not refused by
    their spelling: ``images/../images/a.png`` is fine."""
    candidate = root / relative
    try:
        real = candidate.resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return None
    return candidate if real.is_relative_to(root.resolve()) else None


def _refusal(manifest: Path, row_key: str, root: Path, paths: dict[str, str]) -> Refusal | None:
    for column, relative in paths.items():
        if "\x00" in relative:
            return Refusal("unreadable", f"{manifest.name} {row_key}: {column} holds a NUL "
                                         "byte, which no file name can")
        if relative and confined(root, relative) is None:
            return Refusal("outside_dataset",
                           f"{manifest.name} {row_key}: {column} {relative!r} leads outside the "
                           f"dataset folder {root} (files must be inside it; symlinks "
                           "included)")
    return None


def load_dataset(name_or_path: str | os.PathLike[str]) -> Dataset:
    root = resolve_dataset_dir(name_or_path)
    manifest = next((root / n for n in ("manifest.parquet", "manifest.csv")
                     if (root / n).exists()), None)
    if manifest is None:
        raise ConfigError("no manifest.csv or manifest.parquet", path=str(root))
    if confined(root, manifest.name) is None or not manifest.is_file():
        raise ConfigError("the manifest must be a file inside the dataset folder (a link out of "
                          "it is refused)", path=str(manifest))
    try:
        frame = (pd.read_parquet(manifest) if manifest.suffix == ".parquet"
                 else pd.read_csv(manifest, dtype=str, keep_default_na=False))
    except Exception as exc:  # pandas raises many kinds; the user needs the file and the reason
        raise ConfigError(f"cannot read manifest: {exc}", path=str(manifest)) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(f"missing column(s) {', '.join(missing)}", path=str(manifest))
    products: list[Product] = []
    seen: set[str] = set()
    for row_number, row in enumerate(frame.to_dict("records"), start=2):
        key = f"row {row_number}"
        product_id = _text(row["id"])
        if not product_id:
            raise ConfigError("empty id", path=str(manifest), key=key)
        if product_id in seen:
            raise ConfigError(f"duplicate id {product_id!r}", path=str(manifest), key=key)
        seen.add(product_id)
        image = _text(row["image"])
        if not image:
            raise ConfigError("empty image path", path=str(manifest), key=f"{key}.image")
        mask, reference = _text(row.get("mask")), _text(row.get("reference"))
        angles = [a.strip() for a in _text(row.get("angles")).split(";") if a.strip()]
        refusal = _refusal(manifest, key, root,
                           {"image": image, "mask": mask, "reference": reference,
                            **{f"angles[{i}]": a for i, a in enumerate(angles)}})
        products.append(Product(
            id=product_id, title=_text(row["title"]), description=_text(row["description"]),
            category=_text(row["category"]) or "uncategorized", image=root / image,
            mask=root / mask if mask else None, reference=root / reference if reference else None,
            angles=tuple(root / a for a in angles),
            attributes={k: _text(v) for k, v in row.items() if k not in _KNOWN},
            refusal=refusal,
        ))
    return Dataset(name=root.name, root=root, products=tuple(products))
