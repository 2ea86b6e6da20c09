"""The content-addressed store on local disk: one file per distinct output, never half-written."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from pixellab.store import Store


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_an_output_is_stored_once_under_its_sha256_with_nothing_left_beside_it(
        tmp_path: Path) -> None:
    store = Store(tmp_path)
    data = b"\x89PNG not really" * 100
    digest = store.put(data, "image/png")
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.put(data, "image/png") == digest
    assert files(tmp_path) == [f"{digest[:2]}/{digest}.png"]
    assert store.get(digest, "image/png") == data


def test_a_write_cut_short_leaves_no_file_under_the_final_name_and_no_part(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)

    def refuse(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", refuse)
        with pytest.raises(OSError, match="No space"):
            store.put(b"payload", "image/png")
    assert files(tmp_path) == []
    digest = store.put(b"payload", "image/png")  # and the next try stores it
    assert store.exists(digest, "image/png")


def test_a_folder_removed_behind_the_stores_back_is_made_again(tmp_path: Path) -> None:
    store = Store(tmp_path)
    first = store.put(b"one", "image/png")
    shutil.rmtree(tmp_path / first[:2])
    again = store.put(b"one", "image/png")
    assert again == first and store.get(first, "image/png") == b"one"
