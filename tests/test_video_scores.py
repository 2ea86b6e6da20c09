"""Specification of pixellab.scoring.video: video scores on rendered clips with known answers.

The clips are drawn here: a textured product (a bottle with a striped label and a logo) on a
studio background, moved, zoomed, relit, flickered or taken away, and an unrelated image; some go
through H.264 and back (pixellab.media.encode and PyAV) as a model's clip would.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from pixellab.errors import ConfigError
from pixellab.media.encode import encode_video
from pixellab.scoring import (
    LOWER_IS_BETTER,
    SCORERS,
    VIDEO_PLATFORM_PREFIX,
    compute,
    known_metric,
    load_task_scoring,
    scorer_version,
)
from pixellab.scoring.base import Score, ScoreContext
from pixellab.scoring.video import (
    METRICS,
    MOTION_THRESHOLD,
    PRESENCE_THRESHOLD,
    SCORER_VERSION,
    load_platform_profiles,
    score_video_platform,
    ssim_map,
)

W, H = 512, 384
N = 12

# --- clips made on the fly -------------------------------------------------------------------


def sprite() -> tuple[np.ndarray, np.ndarray]:
    """The product (RGB) and its mask: a dark cap on a blue body with a striped yellow label."""
    h, w = 160, 100
    img = np.zeros((h, w, 3), np.uint8)
    mask = np.zeros((h, w), np.uint8)
    cv2.rectangle(mask, (10, 30), (w - 10, h - 5), 255, -1)
    cv2.rectangle(mask, (w // 2 - 15, 5), (w // 2 + 15, 30), 255, -1)
    img[:] = (30, 90, 170)
    cv2.rectangle(img, (10, 60), (w - 10, 120), (240, 200, 40), -1)
    for k in range(5):
        cv2.line(img, (10, 65 + 12 * k), (w - 10, 65 + 12 * k), (200, 30, 30), 3)
    cv2.circle(img, (w // 2, 90), 14, (250, 250, 250), -1)
    cv2.putText(img, "PX", (w // 2 - 12, 96), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (10, 10, 10), 2)
    cv2.rectangle(img, (w // 2 - 15, 5), (w // 2 + 15, 30), (20, 20, 20), -1)
    return img, mask


def studio(w: int, h: int) -> np.ndarray:
    """A soft gradient backdrop with a few discs (texture for the optical flow)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([220 - 40 * yy / h, 215 - 30 * yy / h, 205 - 20 * xx / w], -1).astype(np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(12):
        colour = tuple(int(v) for v in rng.integers(120, 230, 3))
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        cv2.circle(img, centre, int(rng.uniform(5, 25) * w / 640), colour, -1)
    return img


def unrelated(w: int, h: int, shift: float = 0.0) -> np.ndarray:
    """Colourful interfering stripes: nothing like the product photo."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx = xx + shift * w
    return np.stack([128 + 100 * np.sin(xx / 23.0), 128 + 100 * np.sin(yy / 17.0 + 1),
                     128 + 100 * np.sin((xx + yy) / 31.0)], -1).astype(np.uint8)


def render(w: int = W, h: int = H, cx: float = 0.5, cy: float = 0.5, scale: float = 1.0,
           product: tuple[np.ndarray, np.ndarray] | None = None,
           backdrop: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The scene at w×h with the product centred at (cx, cy) (fractions; may be outside), its
    height half the shorter side × ``scale``; returns the frame and the product mask."""
    out = (studio(w, h) if backdrop is None else backdrop).copy()
    spr, m = product or sprite()
    ph = max(4, round(min(w, h) * 0.5 * scale))
    pw = max(3, round(ph * spr.shape[1] / spr.shape[0]))
    spr = cv2.resize(spr, (pw, ph), interpolation=cv2.INTER_AREA)
    m = cv2.resize(m, (pw, ph), interpolation=cv2.INTER_NEAREST)
    mask = np.zeros((h, w), np.uint8)
    x0, y0 = round(cx * w - pw / 2), round(cy * h - ph / 2)
    xs0, ys0, xs1, ys1 = max(0, -x0), max(0, -y0), min(pw, w - x0), min(ph, h - y0)
    if xs1 > xs0 and ys1 > ys0:
        region = out[y0 + ys0:y0 + ys1, x0 + xs0:x0 + xs1]
        inside = m[ys0:ys1, xs0:xs1] > 0
        region[inside] = spr[ys0:ys1, xs0:xs1][inside]
        mask[y0 + ys0:y0 + ys1, x0 + xs0:x0 + xs1] = np.where(inside, 255, 0)
    return out, mask


def source_photo() -> tuple[Image.Image, Image.Image]:
    """The product photo (640×480, product centred) and its ground-truth mask."""
    img, mask = render(640, 480)
    return Image.fromarray(img), Image.fromarray(mask, "L")


SOURCE, MASK = source_photo()


def clip(make, n: int = N) -> tuple[np.ndarray, ...]:
    """n frames, ``make(t)`` for t from 0 to 1."""
    return tuple(make(i / (n - 1)) for i in range(n))


def ctx_of(frames: tuple[np.ndarray, ...] | None, *, source: Image.Image | None = SOURCE,
           mask: Image.Image | None = MASK, video: dict | None = None) -> ScoreContext:
    first = frames[0] if frames else np.asarray(SOURCE)
    facts = {"fps": 24.0, "sampled_indices": [10 * i for i in range(len(frames or ()))],
             "frame_count": 120, "width": 1080, "height": 1920, "duration_s": 5.0}
    output = Image.fromarray(np.asarray(first).astype(np.uint8))
    return ScoreContext(task="image_to_video", output=output, source=source,
                        mask=mask, frames=frames, video=facts if video is None else video)


def value(metric: str, ctx: ScoreContext) -> float:
    score = compute(metric, ctx)
    assert score.value is not None, score.missing_reason
    assert score.version == SCORER_VERSION and score.metric == metric
    return score.value


STATIC = clip(lambda t: render()[0])
PAN = clip(lambda t: render(cx=0.5 + 0.25 * t)[0])
LEAVES = clip(lambda t: render(cx=0.5 + 0.8 * t)[0])
UNRELATED = clip(lambda t: unrelated(W, H, shift=0.1 * t))


def decode(data: bytes, n: int = N) -> tuple[tuple[np.ndarray, ...], dict[str, Any]]:
    """Decode a clip with PyAV, sample n frames evenly, and its facts as the workbench gives
    them."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        fps = float(stream.average_rate or 0)
        facts: dict[str, Any] = {"fps": fps, "width": stream.width, "height": stream.height,
                                 "container": container.format.name,
                                 "codec": stream.codec_context.name}
    indices = np.linspace(0, len(frames) - 1, n).round().astype(int).tolist()
    facts.update(frame_count=len(frames), duration_s=len(frames) / fps,
                 sampled_indices=indices)
    return tuple(frames[i] for i in indices), facts


# --- the registry ----------------------------------------------------------------------------


def test_every_video_metric_is_registered_versioned_and_known() -> None:
    for metric in METRICS:
        assert metric in SCORERS and known_metric(metric)
        assert scorer_version(metric) == SCORER_VERSION == "video-1"
    for profile in ("tiktok", "instagram_reels", "youtube_shorts"):
        assert known_metric(f"{VIDEO_PLATFORM_PREFIX}{profile}")
        assert scorer_version(f"video_platform_{profile}") == "video-1"
    assert not known_metric("video_platform_myspace")
    assert {"video_first_frame_delta_e", "video_frozen_ratio"} <= LOWER_IS_BETTER
    assert "video_motion" not in LOWER_IS_BETTER


def test_the_image_to_video_task_scoring_loads_with_a_validity_gate() -> None:
    config = load_task_scoring()["image_to_video"]
    assert config.primary == "video_subject_consistency"
    assert config.gates == {"blank": 0.0}
    assert config.composite is not None and config.composite.version == 1
    terms = config.composite.terms
    assert set(terms) <= set(config.metrics)
    assert {"video_subject_consistency", "video_first_frame_ssim", "video_motion",
            "video_flicker", "video_product_presence", "video_platform_tiktok"} <= set(terms)
    assert sum(t.weight for t in terms.values()) == pytest.approx(1.0)
    assert terms["video_first_frame_delta_e"].worst > terms["video_first_frame_delta_e"].best
    assert terms["video_motion"].best == pytest.approx(MOTION_THRESHOLD, abs=1e-4)


# --- missing, never zero ---------------------------------------------------------------------


def test_an_image_output_has_no_video_scores() -> None:
    image = ctx_of(None, video={})
    image.video = None
    for metric in (*METRICS, "video_platform_tiktok"):
        score = compute(metric, image)
        assert score.value is None and score.missing_reason, metric
        assert "not a video" in score.missing_reason


def test_scores_that_need_the_source_or_its_mask_say_so() -> None:
    no_source = ctx_of(PAN, source=None, mask=None)
    for metric in ("video_first_frame_ssim", "video_first_frame_delta_e",
                   "video_subject_consistency", "video_product_presence"):
        assert compute(metric, no_source).missing_reason == "no source image", metric
    no_mask = ctx_of(PAN, mask=None)
    assert compute("video_product_presence", no_mask).missing_reason == "no ground-truth mask"
    for metric in ("video_first_frame_ssim", "video_first_frame_delta_e"):  # whole frame, said
        score = compute(metric, no_mask)
        assert score.value is not None and score.details["region"] == "whole_frame (no mask)"
    wrong = ctx_of(PAN, mask=MASK.resize((320, 240)))
    assert "differ in size" in str(compute("video_product_presence", wrong).missing_reason)
    empty = ctx_of(PAN, mask=Image.new("L", SOURCE.size, 0))
    assert compute("video_product_presence", empty).missing_reason == (
        "the mask has no product pixels")


def test_scores_of_change_need_two_frames() -> None:
    one = ctx_of(STATIC[:1])
    for metric in ("video_flicker", "video_motion", "video_frozen_ratio",
                   "video_subject_consistency"):
        assert "at least 2 sampled frames" in str(compute(metric, one).missing_reason)
    assert compute("video_first_frame_ssim", one).value is not None


def test_malformed_frames_are_missing_not_a_crash() -> None:
    floats = ctx_of(tuple(f.astype(np.float32) for f in PAN))
    assert "not uint8" in str(compute("video_flicker", floats).missing_reason)
    mixed = ctx_of((PAN[0], PAN[1][:200]))
    assert "differ in size" in str(compute("video_motion", mixed).missing_reason)


# --- each metric moves the right way ---------------------------------------------------------


def test_a_still_clip_does_not_move_and_is_frozen() -> None:
    ctx = ctx_of(STATIC)
    assert value("video_motion", ctx) < 1e-3
    assert value("video_frozen_ratio", ctx) == 1.0
    assert value("video_flicker", ctx) == 1.0
    motion = compute("video_motion", ctx).details
    assert motion["exceeds_threshold"] is False and motion["dynamic_vbench"] is False


def test_a_moving_clip_moves_past_vbench_threshold_and_nothing_is_frozen() -> None:
    ctx = ctx_of(PAN)
    score = compute("video_motion", ctx)
    assert score.value is not None and score.value > MOTION_THRESHOLD
    assert score.details["exceeds_threshold"] and score.details["dynamic_vbench"]
    assert score.details["method"] == "farneback_top5pct"
    assert value("video_frozen_ratio", ctx) == 0.0
    slow = value("video_motion", ctx_of(clip(lambda t: render(cx=0.5 + 0.03 * t)[0])))
    assert 0 < slow < score.value


def test_details_name_the_sampling() -> None:
    details = compute("video_flicker", ctx_of(PAN)).details
    assert details["frames"] == N and details["indices"] == [10 * i for i in range(N)]
    assert details["sampled"] is True and details["gap_frames"] == 10
    assert details["gap_s"] == pytest.approx(10 / 24, abs=1e-3)
    assert compute("video_motion", ctx_of(PAN)).details["per_second"] > 0
    first = compute("video_first_frame_ssim", ctx_of(PAN)).details
    assert first["frames"] == 1 and first["indices"] == [0] and first["method"] == "ssim"


def test_a_flickering_clip_scores_below_a_smooth_one() -> None:
    flicker = tuple(np.clip(f.astype(int) + (25 if i % 2 else -25), 0, 255).astype(np.uint8)
                    for i, f in enumerate(STATIC))
    assert value("video_flicker", ctx_of(flicker)) < 0.85 < 0.98 < value("video_flicker",
                                                                          ctx_of(PAN))
    assert value("video_frozen_ratio", ctx_of(flicker)) == 0.0


def test_a_small_object_moving_on_a_still_background_is_not_frozen() -> None:
    def frame(t: float) -> np.ndarray:
        img = studio(W, H)
        cv2.circle(img, (round(100 + 200 * t), 200), 6, (10, 10, 10), -1)
        return img
    assert value("video_frozen_ratio", ctx_of(clip(frame))) == 0.0


def test_half_frozen_clip() -> None:
    frames = PAN[:6] + (PAN[5],) * 6
    assert value("video_frozen_ratio", ctx_of(frames)) == pytest.approx(6 / 11)


# --- first-frame fidelity --------------------------------------------------------------------


def test_a_first_frame_equal_to_the_source_is_perfect() -> None:
    photo = np.asarray(SOURCE)
    ctx = ctx_of((photo, photo))
    assert value("video_first_frame_ssim", ctx) == pytest.approx(1.0, abs=1e-6)
    assert value("video_first_frame_delta_e", ctx) == pytest.approx(0.0, abs=1e-6)
    smaller = ctx_of(STATIC)  # the same scene, sampled at 512×384
    assert value("video_first_frame_ssim", smaller) > 0.97
    assert value("video_first_frame_delta_e", smaller) < 1.5
    assert compute("video_first_frame_ssim", smaller).details["alignment"] == "same_aspect"


def test_a_vertical_clip_of_a_landscape_photo_is_compared_where_it_shows_the_photo() -> None:
    photo = np.asarray(SOURCE)  # 640×480
    crop = cv2.resize(photo[:, 185:455], (288, 512), interpolation=cv2.INTER_AREA)  # 9:16 crop
    score = compute("video_first_frame_ssim", ctx_of((crop, crop)))
    assert score.details["alignment"] == "center_crop" and score.value is not None
    assert score.value > 0.95
    padded = np.zeros((512, 288, 3), np.uint8)  # letterboxed: the whole photo in the middle
    padded[148:364] = cv2.resize(photo, (288, 216), interpolation=cv2.INTER_AREA)
    score = compute("video_first_frame_ssim", ctx_of((padded, padded)))
    assert score.details["alignment"] == "fit_pad" and score.value is not None
    assert score.value > 0.95
    assert value("video_first_frame_delta_e", ctx_of((padded, padded))) < 1.5


def test_a_first_frame_of_something_else_is_far_from_the_source() -> None:
    ctx = ctx_of(UNRELATED)
    assert value("video_first_frame_ssim", ctx) < 0.4
    assert value("video_first_frame_delta_e", ctx) > 20
    recoloured = tuple(np.ascontiguousarray(f[..., ::-1]) for f in STATIC)  # RGB -> BGR
    assert value("video_first_frame_delta_e", ctx_of(recoloured)) > 10


def test_ssim_map_is_scikit_images_ssim() -> None:
    rng = np.random.default_rng(1)
    a = cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), (5, 5), 0)
    b = np.clip(a.astype(int) + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)
    _, full = structural_similarity(a, b, data_range=255, channel_axis=-1, full=True)
    assert np.abs(full.mean(axis=-1)[3:-3, 3:-3] - ssim_map(a, b)[3:-3, 3:-3]).max() < 1e-4


# --- subject consistency and product presence ------------------------------------------------


def test_a_clip_of_an_unrelated_image_is_less_consistent_with_the_source() -> None:
    own = compute("video_subject_consistency", ctx_of(PAN))
    other = compute("video_subject_consistency", ctx_of(UNRELATED))
    assert own.value is not None and other.value is not None
    assert own.value > 0.95 and other.value < 0.85
    assert own.details["method"].startswith("classical:")
    assert own.details["weights"] == {"max_to_input": 0.4, "mean_consecutive": 0.3,
                                      "min_consecutive": 0.3}
    assert other.details["max_to_input"] < 0.6 < other.details["min_consecutive"]


def test_the_product_leaving_the_frame_drops_presence() -> None:
    assert value("video_product_presence", ctx_of(PAN)) == 1.0
    score = compute("video_product_presence", ctx_of(LEAVES))
    assert score.value is not None and 0.2 < score.value < 0.8
    frames = score.details["per_frame"]
    assert frames[0]["present"] and not frames[-1]["present"]
    assert any(f["cut_off"] == ["right"] or not f["found"] for f in frames[-6:])
    assert score.details["threshold"] == PRESENCE_THRESHOLD
    assert value("video_product_presence", ctx_of(UNRELATED)) == 0.0


def test_a_product_cut_by_the_frame_edge_is_not_present() -> None:
    edge = clip(lambda t: render(cx=0.5 + 0.45 * t)[0])  # ends half out on the right
    score = compute("video_product_presence", ctx_of(edge))
    last = score.details["per_frame"][-1]
    assert not last["present"] and (last["cut_off"] == ["right"] or not last["found"])


def test_presence_threshold_separates_the_product_from_other_content_through_h264() -> None:
    """The calibration behind PRESENCE_THRESHOLD: the product moved, zoomed, relit, turned a
    little or on another backdrop is found; clips without it are not."""
    def turned(img: np.ndarray, degrees: float) -> np.ndarray:
        m = cv2.getRotationMatrix2D((W / 2, H / 2), degrees, 1.0)
        return cv2.warpAffine(img, m, (W, H), borderMode=cv2.BORDER_REFLECT)

    spr, m = sprite()
    other = (np.ascontiguousarray(spr[..., ::-1]), m)  # same shape, other colours
    present = {
        "zoom": lambda t: render(scale=1 + 0.4 * t)[0],
        "relit": lambda t: (render()[0] * (1 - 0.3 * t)).astype(np.uint8),
        "turned": lambda t: turned(render()[0], 10 * t),
        "backdrop": lambda t: render(backdrop=unrelated(W, H))[0],
    }
    absent = {
        "no_product": lambda t: render(scale=1e-4, cx=0.5 + 0.2 * t)[0],
        "other_product": lambda t: render(product=other, cx=0.5 + 0.1 * t)[0],
    }
    for name, make in (*present.items(), *absent.items()):
        frames, facts = decode(encode_video(list(clip(make, 24)), fps=24))
        score = compute("video_product_presence", ctx_of(frames, video=facts))
        peaks = [f["confidence"] for f in score.details["per_frame"]]
        if name in present:
            assert score.value == 1.0 and min(peaks) > PRESENCE_THRESHOLD + 0.1, (name, peaks)
        else:
            assert score.value == 0.0 and max(peaks) < PRESENCE_THRESHOLD - 0.1, (name, peaks)


# --- platform profiles -----------------------------------------------------------------------


def platform(profile: str, **facts: object) -> Score:
    video = {"width": 1080, "height": 1920, "duration_s": 15.0, "fps": 30.0, **facts}
    return compute(f"video_platform_{profile}", ctx_of(PAN, video=video))


def test_a_vertical_15_s_1080p_clip_passes_tiktok_and_a_landscape_one_fails_on_aspect() -> None:
    ok = platform("tiktok", container="mov,mp4,m4a,3gp,3g2,mj2", codec="h264")
    assert ok.value == 1.0 and ok.details["failed"] == [] and ok.details["unmeasured"] == []
    assert ok.details["verified"] is False and ok.details["sources"]
    wide = platform("tiktok", width=1920, height=1080)
    assert wide.value == 0.0 and wide.details["failed"] == ["aspect_ratio"]
    rule = next(r for r in wide.details["rules"] if r["rule"] == "aspect_ratio")
    assert "9:16" in rule["message"] and rule["passed"] is False


def test_each_platform_rule_fails_on_its_own_fact() -> None:
    assert platform("tiktok", duration_s=3.0).details["failed"] == ["min_duration"]
    assert platform("tiktok", duration_s=700.0).details["failed"] == ["max_duration"]
    assert platform("tiktok", width=288, height=512).details["failed"] == ["min_short_side"]
    assert platform("tiktok", fps=15.0).details["failed"] == ["fps"]
    assert platform("tiktok", container="matroska,webm").details["failed"] == ["container"]
    assert platform("tiktok", codec="vp9").details["failed"] == ["codec"]
    assert platform("tiktok", codec="libx264").value == 1.0  # an encoder name maps to h264
    assert platform("tiktok", width=720, height=1248).value == 1.0  # 2.6 % off 9:16: tolerated
    assert platform("youtube_shorts", width=1080, height=1080).value == 1.0  # square is a Short
    assert platform("youtube_shorts", duration_s=200.0).details["failed"] == ["max_duration"]
    assert platform("instagram_reels", fps=24.0).details["failed"] == ["fps"]


def test_platform_facts_that_are_not_known_are_listed_not_failed() -> None:
    score = platform("tiktok", fps=None)
    assert score.value == 1.0 and score.details["unmeasured"] == ["fps", "container", "codec"]
    missing = compute("video_platform_tiktok", ctx_of(PAN, video={"width": 1080}))
    assert missing.value is None and "height, duration_s" in str(missing.missing_reason)
    with pytest.raises(ConfigError, match="unknown video platform profile"):
        compute("video_platform_myspace", ctx_of(PAN))
    with pytest.raises(ConfigError, match="unknown video platform profile"):
        score_video_platform(ctx_of(PAN), "tiktok", profiles={})


def test_every_platform_rule_cites_a_source_and_says_whether_it_was_verified(
        tmp_path: Path) -> None:
    profiles = load_platform_profiles()
    assert set(profiles) == {"tiktok", "instagram_reels", "youtube_shorts"}
    for profile in profiles.values():
        assert all(s.url.startswith("https://") and isinstance(s.verified, bool)
                   for s in profile.sources)
    assert any(s.verified for s in profiles["youtube_shorts"].sources)
    bad = tmp_path / "platforms.toml"
    bad.write_text('[profiles.x]\nmax_duration_s = 60.0\n[[profiles.x.sources]]\n'
                   'url = "https://example.com"\nvalues = ["min_fps"]\nverified = false\n')
    with pytest.raises(ConfigError, match="rules without a source: max_duration_s"):
        load_platform_profiles(bad)
    bad.write_text('[profiles.x]\nmax_duration_s = "60"\n[[profiles.x.sources]]\n'
                   'url = "https://example.com"\nvalues = ["max_duration_s"]\nverified = false\n')
    with pytest.raises(ConfigError, match="max_duration_s"):
        load_platform_profiles(bad)


# --- end to end and cost ---------------------------------------------------------------------


def test_an_encoded_clip_gets_every_score() -> None:
    """A 9:16 H.264 clip of the product panning, decoded with PyAV and sampled to 12 frames of
    288×512: every metric has a value (their cost is measured in benchmarks/bench_video.py,
    not here: a timed unit test fails on a busy machine)."""
    photo = np.asarray(SOURCE)

    def frame(t: float) -> np.ndarray:
        shifted = np.roll(photo, round(100 * t), axis=0)[:, 185:455]
        return cv2.resize(shifted, (288, 512), interpolation=cv2.INTER_AREA)

    frames, facts = decode(encode_video([frame(i / 47) for i in range(48)], fps=24))
    ctx = ctx_of(frames, video=facts)
    metrics = (*METRICS, "video_platform_tiktok", "video_platform_youtube_shorts")
    scores = {m: compute(m, ctx) for m in metrics}
    assert all(s.value is not None for s in scores.values()), scores
    assert value("video_first_frame_ssim", ctx) > 0.9
    assert scores["video_product_presence"].value == 1.0
    assert scores["video_motion"].details["exceeds_threshold"]
    tiktok = scores["video_platform_tiktok"]  # 288 px wide, 2 s: too small and too short
    assert set(tiktok.details["failed"]) == {"min_duration", "min_short_side"}
    assert tiktok.details["unmeasured"] == []
    assert scores["video_platform_youtube_shorts"].value == 1.0
