"""CLIP scores on a real open_clip model: a tiny, randomly initialised one (no weights can be
downloaded here; random weights make the numbers meaningless but the arithmetic checkable)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip  # the clip extra is part of the test set-up: no silent skip
import pytest
import torch
from PIL import Image

from pixellab.scoring.clip import ClipItem, ClipScorer, ClipSettings
from tests.conftest import register_tiny_clip, run_process

TINY = "pixellab-tiny-test"


@pytest.fixture(scope="module", autouse=True)
def tiny_model_config(tmp_path_factory: pytest.TempPathFactory) -> None:
    register_tiny_clip(tmp_path_factory.mktemp("clipcfg"), TINY)


def tiny(**overrides: object) -> ClipScorer:
    settings = {"backbone": TINY, "pretrained": None, "batch_size": 4, **overrides}
    return ClipScorer(ClipSettings(**settings))  # type: ignore[arg-type]


def photo(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def items(n: int) -> list[ClipItem]:
    return [ClipItem(f"out{i}", photo(i), caption=f"a product photo of item {i % 3}",
                     source_sha256=f"src{i}", source=photo(100 + i)) for i in range(n)]


def test_batched_scores_equal_one_by_one_scores() -> None:
    batched = tiny(batch_size=4).score(items(10))
    single = tiny(batch_size=1)
    one_by_one = {item.output_sha256: single.score([item])[item.output_sha256]
                  for item in items(10)}
    for key, scores in batched.items():
        for a, b in zip(scores, one_by_one[key], strict=True):
            assert a.metric == b.metric
            assert a.value == pytest.approx(b.value, abs=1e-5)


def test_clip_text_is_100_times_the_clamped_cosine_of_the_model_embeddings() -> None:
    scorer = tiny()
    item = items(1)[0]
    scores = {s.metric: s for s in scorer.score([item])[item.output_sha256]}
    # independently: the model's own preprocessing, encoders and cosine, in torch
    model, _, preprocess = open_clip.create_model_and_transforms(TINY, pretrained=None)
    model.load_state_dict(scorer._require().model.state_dict())
    model.eval()
    with torch.inference_mode():
        image = model.encode_image(preprocess(item.output).unsqueeze(0))
        text = model.encode_text(open_clip.get_tokenizer(TINY)([item.caption]))
        source = model.encode_image(preprocess(item.source).unsqueeze(0))
    cosine = torch.nn.functional.cosine_similarity(image, text).item()
    assert scores["clip_text"].details["cosine"] == pytest.approx(cosine, abs=1e-5)
    assert scores["clip_text"].value == pytest.approx(100 * max(cosine, 0.0), abs=1e-3)
    assert scores["clip_fidelity"].value == pytest.approx(
        torch.nn.functional.cosine_similarity(image, source).item(), abs=1e-5)
    assert scores["clip_text"].details["backbone"] == f"open_clip:{TINY}"
    assert len(scores["clip_text"].details["weights_id"]) == 16


def test_a_negative_cosine_scores_zero_but_keeps_the_raw_cosine() -> None:
    scorer = tiny()
    for seed in range(40):  # random weights: some caption/image pairs point away
        item = ClipItem(f"o{seed}", photo(seed), caption=f"word{seed} thing")
        score = scorer.score([item], ["clip_text"])[item.output_sha256][0]
        if score.details["cosine"] < 0:
            assert score.value == 0.0
            return
    pytest.skip("no negative cosine among 40 random pairs")


def test_a_cache_hit_runs_no_forward_pass(tmp_path: Path) -> None:
    scorer = tiny(cache_dir=tmp_path / "cache")
    first = scorer.score(items(6))
    batches = scorer.forward_batches
    assert batches > 0
    again = scorer.score(items(6))
    assert scorer.forward_batches == batches
    assert again == first
    # a new scorer with the same weights reads the disk cache: still no forward pass
    fresh = tiny(cache_dir=tmp_path / "cache")
    assert fresh.score(items(6)) == first
    assert fresh.forward_batches == 0


def test_each_distinct_image_and_text_is_encoded_once() -> None:
    scorer = tiny(batch_size=64)
    same = [ClipItem(f"o{i}", photo(1), caption="one caption") for i in range(1)] * 5
    scorer.score(same)
    assert scorer.forward_batches == 1
    texts = scorer.embed_texts(["a", "a", "b"])
    assert set(texts) == {"a", "b"}


def test_clip_identity_compares_the_product_crops_identity_found() -> None:
    """``clip_identity`` is the cosine of the two product crops' embeddings (the same model's),
    whatever the whole images are; without crops it is missing with the reason given."""
    scorer = tiny()
    product, other = photo(7, (40, 40)), photo(8, (40, 40))
    same = ClipItem("same", photo(1), source_sha256="s1", source=photo(2),
                    products=(product, product.copy()))
    changed = ClipItem("changed", photo(3), source_sha256="s3", source=photo(4),
                       products=(product, other))
    lost = ClipItem("lost", photo(5), products="the product was not found in the output")
    scores = scorer.score([same, changed, lost], ["clip_identity"])
    assert scores["same"][0].value == pytest.approx(1.0, abs=1e-5)
    vectors = scorer.embed_images([("p", product), ("o", other)])
    assert scores["changed"][0].value == pytest.approx(
        float(np.dot(vectors["p"], vectors["o"])), abs=1e-5)
    assert scores["changed"][0].details["crop"] == "product"
    assert scores["lost"][0].value is None
    assert scores["lost"][0].missing_reason == "the product was not found in the output"


def test_a_caption_over_77_tokens_is_cut_at_a_word_and_says_so() -> None:
    scorer = tiny()
    long = "a product photo of a " + "very " * 100 + "red mug"
    item = ClipItem("o", photo(0), caption=long)
    score = scorer.score([item], ["clip_text"])["o"][0]
    assert score.details["tokens"] > 77
    assert score.details["truncated_to_tokens"] <= 77
    assert long.startswith(score.details["caption"]) and score.details["caption"] != long


def test_unavailable_weights_give_a_missing_metric_with_the_reason() -> None:
    scorer = ClipScorer(ClipSettings(backbone="ViT-B-32", pretrained="laion2b_s34b_b79k"))
    scores = scorer.score(items(2))
    for output in scores.values():
        assert [s.metric for s in output] == ["clip_text", "clip_fidelity", "clip_identity"]
        assert all(s.value is None for s in output)
        assert all("no weights" in (s.missing_reason or "") for s in output)


def test_a_missing_checkpoint_file_is_named(tmp_path: Path) -> None:
    scorer = ClipScorer(ClipSettings(checkpoint=tmp_path / "nope.safetensors"))
    assert "nope.safetensors" in (scorer.unavailable_reason() or "")


def test_a_corrupt_checkpoint_is_missing_not_a_crash(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a checkpoint")
    scorer = ClipScorer(ClipSettings(backbone=TINY, checkpoint=bad))
    reason = scorer.unavailable_reason()
    assert reason is not None and reason.startswith("no weights: cannot load")
    assert scorer.score(items(1))["out0"][0].value is None


def test_scores_from_two_backbones_are_versioned_apart() -> None:
    assert tiny().version != tiny(seed=1).version
    assert tiny().version.startswith("clip-1/")


def test_a_cutout_is_seen_on_white() -> None:
    """A transparent background is composited on white before CLIP sees it."""
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    white = Image.new("RGB", (64, 64), (255, 255, 255))
    vectors = tiny().embed_images([("cut", rgba), ("white", white)])
    assert np.allclose(vectors["cut"], vectors["white"], atol=1e-6)


def test_without_the_clip_extra_the_metric_is_missing_and_says_how_to_get_it() -> None:
    import sys

    code = ("import sys; sys.modules['open_clip'] = None\n"  # as if the extra were not installed
            "from pixellab.scoring.clip import ClipScorer, ClipItem\n"
            "from PIL import Image\n"
            "print(ClipScorer().score([ClipItem('o', Image.new('RGB', (8, 8)))])['o'][0])")
    out = run_process([sys.executable, "-c", code], timeout=120)
    assert "value=None" in out.stdout, out.stderr
    assert "pip install 'pixellab[clip]'" in out.stdout
