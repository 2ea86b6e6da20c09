"""The bundled sample dataset and the manifest loader."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pixellab.datasets import load_dataset
from pixellab.errors import ConfigError
from pixellab.validate import load_input_image
from tests.conftest import REPO, product_photo, run_process

SAMPLE = REPO / "datasets" / "sample"


def test_the_sample_dataset_passes_its_own_integrity_check() -> None:
    result = run_process([sys.executable, str(SAMPLE / "generate.py"), "--check"], cwd=REPO,
                         timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_sample_has_enough_products_and_categories_for_a_meaningful_demo() -> None:
    dataset = load_dataset(SAMPLE)
    assert len(dataset.products) >= 24
    assert len(dataset.categories) >= 4
    assert all(sum(p.category == c for p in dataset.products) >= 4 for c in dataset.categories)


def test_every_sample_image_decodes_and_every_mask_matches_its_photo() -> None:
    for product in load_dataset(SAMPLE).products:
        photo = load_input_image(product.image)
        if product.mask is not None:
            assert load_input_image(product.mask).size == photo.size, product.id


def test_most_sample_products_have_ground_truth() -> None:
    products = load_dataset(SAMPLE).products
    assert sum(p.mask is not None for p in products) >= 0.8 * len(products)


def test_a_manifest_without_a_required_column_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("id,title,category,image\nx,X,kitchen,x.png\n")
    with pytest.raises(ConfigError, match="manifest.csv: missing column"):
        load_dataset(tmp_path)


def test_a_duplicate_product_id_names_the_row(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text(
        "id,title,description,category,image\nx,X,,kitchen,a.png\nx,Y,,kitchen,b.png\n")
    with pytest.raises(ConfigError, match="row 3: duplicate id 'x'"):
        load_dataset(tmp_path)


# --- more photos of one product (the multi-photo video task) --------------------------------


def _with_angles(root: Path, angles: str) -> Path:
    root.mkdir(parents=True)
    (root / "images").mkdir()
    for name in ("a.png", "a-2.png", "a-3.png", "b.png"):
        product_photo(len(name))[0].save(root / "images" / name)
    (root / "manifest.csv").write_text(
        "id,title,description,category,image,angles\n"
        f"a,A,,kitchen,images/a.png,{angles}\n"
        "b,B,,kitchen,images/b.png,\n")
    return root


def test_a_products_angles_are_read_in_order_and_others_have_none(tmp_path: Path) -> None:
    dataset = load_dataset(_with_angles(tmp_path / "d", "images/a-3.png; images/a-2.png"))
    a, b = dataset.products
    assert [p.name for p in a.angles] == ["a-3.png", "a-2.png"] and b.angles == ()
    assert [p.id for p in dataset.select(with_angles=True)] == ["a"]
    assert "angles" not in a.attributes


def test_an_angle_outside_the_dataset_refuses_the_product(tmp_path: Path) -> None:
    (tmp_path / "secret.png").write_bytes(b"x")
    a = load_dataset(_with_angles(tmp_path / "d", "images/a-2.png;../secret.png")).products[0]
    assert a.refusal is not None and a.refusal.reason == "outside_dataset"
    assert "angles[1]" in a.refusal.message
