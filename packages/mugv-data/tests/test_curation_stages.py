"""Curation stages one by one: scene cuts, filters, hashes, entities, config errors."""

import numpy as np
import pytest

from mugv.data.curation import (
    CurationConfig,
    CurationError,
    SplitConfig,
    extract_entities,
    filters,
    scenes,
)
from mugv.data.curation.synthetic import _blur, _overlay
from mugv.data.world import SyntheticWorld, WorldConfig


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(WorldConfig(num_frames=25, height=96, width=128, fps=12.0, seed=3))


def _moving_clip(world, index=0):
    for i in range(index, index + 50):
        spec = world.scene("train", i)
        if all(o.motion != "static" for o in spec.objects):
            return world.render(spec).frames
    raise AssertionError("no moving scene found")


def test_cuts_found_exactly_between_shots(world):
    shots = [world.render(world.scene("train", i)).frames for i in range(4)]
    frames = np.concatenate(shots)
    cuts = scenes.detect_cuts(scenes.change_scores(frames[:, ::2, ::2]), SplitConfig())
    assert cuts == list(np.cumsum([len(s) for s in shots])[:-1])


def test_no_cut_inside_a_moving_shot(world):
    frames = _moving_clip(world)
    assert scenes.detect_cuts(scenes.change_scores(frames), SplitConfig()) == []


def test_scene_spans_drop_short_and_split_long():
    config = SplitConfig(min_seconds=1.0, max_seconds=2.0)
    spans = scenes.scene_spans([5, 25], num_frames=80, fps=10.0, config=config)
    # [0,5) too short; [5,25) fits; [25,80) is 5.5 s -> 3 pieces of <= 2 s
    assert spans == [(5, 25), (25, 43), (43, 62), (62, 80)]


def test_blur_sharpness_separates_blurred_from_sharp(world):
    frames = _moving_clip(world)
    _, sharp = filters.blur_scores(frames)
    _, blurred = filters.blur_scores(_blur(frames, radius=2.0))
    assert sharp > 1.2 and blurred < 0.8, (sharp, blurred)


def test_static_and_overlay(world):
    frames = _moving_clip(world)
    change, overlay = filters.static_and_overlay(frames)
    assert change > 0.5 and overlay < 0.02
    still_change, _ = filters.static_and_overlay(np.repeat(frames[:1], 10, axis=0))
    assert still_change == 0.0
    _, with_text = filters.static_and_overlay(_overlay(frames, "BREAKING 42"))
    assert with_text > 0.02


def test_flow_magnitude_tracks_motion(world):
    frames = _moving_clip(world)
    assert filters.flow_magnitude(frames) > 0.1
    assert filters.flow_magnitude(np.repeat(frames[:1], 8, axis=0)) < 0.01


def test_exposure_of_dark_frames():
    dark = np.full((4, 32, 32, 3), 5, np.uint8)
    brightness, contrast = filters.exposure(dark)
    assert brightness == pytest.approx(5.0) and contrast == 0.0


def test_perceptual_hash_near_duplicates(world):
    a = _moving_clip(world, 0)
    noisy = np.clip(a.astype(int) + np.random.default_rng(0).integers(-6, 7, a.shape), 0, 255)
    b = _moving_clip(world, 60)
    ha, hn, hb = (filters.perceptual_hash(x.astype(np.uint8)) for x in (a, noisy, b))
    assert filters.hamming(ha, hn) <= 10 < filters.hamming(ha, hb)


def test_entities_drop_function_words():
    assert extract_entities("A small red circle moves to the left of a big blue square.") == [
        "small",
        "red",
        "circle",
        "big",
        "blue",
        "square",
    ]


def test_config_errors_name_the_field():
    with pytest.raises(CurationError, match="unknown section 'blurr'"):
        CurationConfig.from_dict({"blurr": {}})
    with pytest.raises(CurationError, match=r"motion: unknown field\(s\) \['min'\]"):
        CurationConfig.from_dict({"motion": {"min": 1}})
    with pytest.raises(CurationError, match=r"min .* must be <= max"):
        CurationConfig.from_dict({"motion": {"min_flow": 3, "max_flow": 1}})
    assert CurationConfig.from_dict({"blur": {"min_sharpness": 0.5}}).blur.min_sharpness == 0.5
