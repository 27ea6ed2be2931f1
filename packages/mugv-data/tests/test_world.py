"""The synthetic world: determinism, splits, held-out compositions, rendering, annotations."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from mugv.data import CaptionedClip, DataError
from mugv.data.world import (
    COLOURS,
    MOTIONS,
    PALETTE,
    SHAPES,
    SIZES,
    ObjectSpec,
    PromptError,
    SceneSpec,
    SyntheticWorld,
    WorldConfig,
    WorldError,
    parse_prompt,
)
from mugv.data.world._spec import speed_word


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(WorldConfig(num_frames=17, height=64, width=64, fps=8, seed=0))


def _attributes(spec: SceneSpec) -> Counter:
    return Counter(
        (o.shape, o.colour, o.size, o.motion, speed_word(o.speed) if o.speed else "")
        for o in spec.objects
    )


def test_five_distinct_captions_for_every_scene():
    world = SyntheticWorld(WorldConfig(captions_per_clip=5))
    for i in range(30):
        captions = world.sample("val", i).captions
        assert len(set(captions)) == 5, captions


def test_vocabulary_sizes():
    assert len(COLOURS) >= 6 and len(SHAPES) >= 4 and len(SIZES) == 2
    assert set(MOTIONS) == {"left", "right", "up", "down", "static"}
    rgb = np.array([PALETTE[c] for c in COLOURS], float)
    distances = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(len(COLOURS)) * 1e9
    assert distances.min() > 100  # well separated


def test_sample_is_deterministic_and_complete(world):
    a, b = world.sample("train", 7), SyntheticWorld(world.config).sample("train", 7)
    assert isinstance(a, CaptionedClip)
    np.testing.assert_array_equal(a.clip.frames, b.clip.frames)
    assert a.captions == b.captions and a.key == b.key
    assert a.clip.frames.shape == (17, 64, 64, 3) and a.clip.frames.dtype == np.uint8
    assert a.clip.fps == 8
    spec = world.scene("train", 7)
    assert SceneSpec.from_dict(a.clip.metadata["spec"]) == spec
    n = len(spec.objects)
    assert 1 <= n <= 3
    assert len(a.captions) == world.config.captions_per_clip == len(set(a.captions))
    assert a.captions[0] == spec.caption()
    assert len(a.scene_graph.objects) == n and len(a.trajectories) == n
    assert all(t.boxes.shape == (17, 4) and t.boxes.dtype == np.float32 for t in a.trajectories)
    assert a.qa and all(q.answer and len(q.answer.split()) == 1 for q in a.qa)
    other = SyntheticWorld(WorldConfig(seed=1)).sample("train", 7)
    assert not np.array_equal(other.clip.frames, a.clip.frames)


def test_splits_never_share_a_clip(world):
    seen = {}
    for split in ("train", "val", "test"):
        for i in range(150):
            key = json.dumps(world.scene(split, i).to_dict(), sort_keys=True)
            assert key not in seen, f"{split}[{i}] repeats {seen.get(key)}"
            seen[key] = (split, i)
    assert world.size("train") == world.config.train_size
    assert world.size("test") == world.config.test_size


def test_held_out_compositions_only_in_test(world):
    held = world.held_out()
    assert held["colour_shape"] and held["shape_motion"]
    pairs_cs, pairs_sm = set(held["colour_shape"]), set(held["shape_motion"])
    for split in ("train", "val"):
        for i in range(400):
            for o in world.scene(split, i).objects:
                assert (o.colour, o.shape) not in pairs_cs and (o.shape, o.motion) not in pairs_sm
    flags = [bool(world.sample("test", i).clip.metadata["held_out"]) for i in range(100)]
    assert 0.3 < np.mean(flags) < 0.7  # half novel compositions, half in-distribution
    novel = [world.held_out_in(world.scene("test", i)) for i in range(100)]
    kinds = Counter(name for names in novel for name in names)
    assert len(kinds) >= 4  # several different held-out combinations are exercised


def test_trajectories_are_exact_boxes(world):
    for i in range(20):
        sample = world.sample("val", i)
        frames = sample.clip.frames.astype(int)
        spec = world.scene("val", i)
        for traj, obj in zip(sample.trajectories, spec.objects):
            colour = np.array(PALETTE[obj.colour])
            for t in (0, 8, 16):
                x, y, w, h = traj.boxes[t]
                cx, cy = int(x + w / 2), int(y + h * (0.75 if obj.shape == "triangle" else 0.5))
                np.testing.assert_array_equal(frames[t, cy, cx], colour)  # inside: the colour
                near = np.abs(frames[t] - colour).sum(-1) < 3  # pixels of this exact colour
                ys, xs = np.nonzero(near)
                if len({o.colour for o in spec.objects}) == len(spec.objects):
                    assert xs.min() >= x - 1 and xs.max() <= x + w and ys.min() >= y - 1
                    assert ys.max() <= y + h


def test_motion_follows_spec(world):
    for i in range(30):
        sample = world.sample("train", i)
        for traj, obj in zip(sample.trajectories, world.scene("train", i).objects):
            dx, dy = traj.boxes[-1, :2] - traj.boxes[0, :2]
            expected = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
            ex, ey = expected.get(obj.motion, (0, 0))
            travel = obj.speed * world.config.duration * 64
            np.testing.assert_allclose([dx, dy], [ex * travel, ey * travel], atol=1e-3)


def test_same_spec_at_any_resolution_and_fps(world):
    spec = world.scene("train", 3)
    small = world.render(spec, num_frames=9, height=32, width=32, fps=4).frames.astype(float)
    large = world.render(spec, num_frames=9, height=128, width=128, fps=4).frames.astype(float)
    pooled = large.reshape(9, 32, 4, 32, 4, 3).mean(axis=(2, 4))
    assert np.abs(pooled - small).mean() < 2.0  # anti-aliased: area sampling agrees
    fast = world.render(spec, num_frames=17, fps=8).frames
    slow = world.render(spec, num_frames=9, fps=4).frames
    np.testing.assert_array_equal(fast[::2], slow)
    wide = world.render(spec, height=48, width=80)
    assert wide.frames.shape == (17, 48, 80, 3)


def test_rendering_is_anti_aliased(world):
    spec = SceneSpec(objects=(ObjectSpec(shape="circle", colour="red", size="large"),))
    frame = world.render(spec, num_frames=1).frames[0, :, :, 0]
    partial = (frame > spec.background[0] + 10) & (frame < PALETTE["red"][0] - 10)
    assert partial.sum() >= 8  # edge pixels blend object and background


def test_image_is_one_still_frame(world):
    image = world.image("test", 4)
    assert image.clip.frames.shape == (1, 64, 64, 3)
    assert image.key.endswith("-image")
    for caption in image.captions:
        assert not any(w in caption for w in ("moving", "moves", "still", "drifting"))
        assert all(o.motion == "static" for o in parse_prompt(caption).objects)
    assert not any("moving" in q.question for q in image.qa)


def test_every_caption_parses_back(world):
    for split in ("train", "test"):
        for i in range(40):
            spec = world.scene(split, i)
            for caption in world.sample(split, i).captions:
                parsed = parse_prompt(caption, duration=spec.duration)
                assert _attributes(parsed) == _attributes(spec), caption


def test_relations_in_captions_hold(world):
    checked = 0
    for i in range(60):
        spec = world.scene("train", i)
        for caption in world.sample("train", i).captions:
            if " is to the " in caption or " is above " in caption or " is below " in caption:
                parsed = parse_prompt(caption, duration=spec.duration)
                assert parsed.relations(), caption
                checked += 1
    assert checked >= 10


def test_scene_graph_and_qa_agree_with_spec(world):
    for i in range(20):
        spec, sample = world.scene("val", i), world.sample("val", i)
        for node, obj in zip(sample.scene_graph.objects, spec.objects):
            assert node.name == obj.shape
            assert obj.colour in node.attributes and obj.size in node.attributes
        assert [(r.subject, r.predicate, r.object) for r in sample.scene_graph.relations] == (
            spec.relations()
        )
        answers = {q.question: q.answer for q in sample.qa}
        assert (
            answers["How many objects are there?"] == ["one", "two", "three"][len(spec.objects) - 1]
        )


def test_spec_dict_round_trip_is_json():
    spec = parse_prompt("a small red circle moving left quickly and a big blue square")
    assert SceneSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.objects[0].motion == "left" and spec.objects[1].motion == "static"


def test_parse_prompt_relations_are_laid_out():
    spec = parse_prompt("a red circle is above a large green triangle", seed=3)
    assert (0, "above", 1) in spec.relations()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"height": 8},
        {"fps": 0},
        {"num_frames": 0},
        {"num_frames": 200},
        {"train_size": -1},
        {"held_out_colour_shape": (("pink", "circle"),)},
        {"max_objects": 5},
        {"captions_per_clip": 9},
    ],
)
def test_bad_config_names_the_field(kwargs):
    with pytest.raises(WorldError, match="WorldConfig"):
        WorldConfig(**kwargs)


def test_bad_inputs(world):
    with pytest.raises(WorldError, match="split"):
        world.sample("training", 0)
    with pytest.raises(WorldError, match="out of range"):
        world.sample("val", world.size("val"))
    with pytest.raises(PromptError, match="no colour"):
        parse_prompt("a circle moving left")
    with pytest.raises(PromptError, match="no object"):
        parse_prompt("a dog running")
    with pytest.raises(WorldError, match="colour"):
        ObjectSpec(shape="circle", colour="pink", size="small")
    with pytest.raises(WorldError, match=r"objects\[0\]"):
        SceneSpec.from_dict({"objects": [{"shape": "circle"}]})
    assert issubclass(WorldError, DataError)
