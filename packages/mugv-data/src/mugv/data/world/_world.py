"""`SyntheticWorld`: the deterministic, split-aware generator of captioned clips and images."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from mugv.data._schema import CaptionedClip, VideoClip
from mugv.data.world._annotate import qa_pairs, scene_graph, trajectories
from mugv.data.world._caption import MAX_CAPTIONS
from mugv.data.world._layout import MARGIN, fitting_speeds, place
from mugv.data.world._render import render_frames
from mugv.data.world._spec import (
    COLOURS,
    MOTIONS,
    SHAPES,
    SIZE_FRACTIONS,
    SIZES,
    SPEEDS,
    ObjectSpec,
    SceneSpec,
    WorldError,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """Clip geometry, split sizes and the compositions held out of training.

    `held_out_colour_shape` and `held_out_shape_motion` never occur in train or val; a
    `test_held_out_fraction` of test scenes contain at least one of them (compositional
    generalisation), the others are in-distribution.
    """

    num_frames: int = 17
    height: int = 64
    width: int = 64
    fps: float = 8.0
    seed: int = 0
    train_size: int = 10_000
    val_size: int = 500
    test_size: int = 500
    max_objects: int = 3
    captions_per_clip: int = 4
    held_out_colour_shape: tuple[tuple[str, str], ...] = (
        ("red", "triangle"),
        ("green", "circle"),
        ("blue", "diamond"),
        ("yellow", "square"),
    )
    held_out_shape_motion: tuple[tuple[str, str], ...] = (("circle", "up"), ("square", "left"))
    test_held_out_fraction: float = 0.5

    def __post_init__(self) -> None:
        for name in ("num_frames", "height", "width", "max_objects", "captions_per_clip"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise WorldError(
                    f"WorldConfig.{name} must be a positive int; got {getattr(self, name)!r}"
                )
        if min(self.height, self.width) < 16:
            raise WorldError(
                f"WorldConfig height x width = {self.height}x{self.width}: the shorter side must "
                f"be >= 16 pixels for small shapes to stay recognisable"
            )
        if not self.fps > 0:
            raise WorldError(f"WorldConfig.fps must be positive; got {self.fps!r}")
        for name in ("train_size", "val_size", "test_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise WorldError(
                    f"WorldConfig.{name} must be an int >= 0; got {getattr(self, name)!r}"
                )
        if self.max_objects > 3:
            raise WorldError(f"WorldConfig.max_objects must be 1..3; got {self.max_objects}")
        if self.captions_per_clip > MAX_CAPTIONS:
            raise WorldError(
                f"WorldConfig.captions_per_clip must be 1..{MAX_CAPTIONS} (the distinct "
                f"paraphrases every scene has); got {self.captions_per_clip}"
            )
        object.__setattr__(
            self, "held_out_colour_shape", tuple(tuple(p) for p in self.held_out_colour_shape)
        )
        object.__setattr__(
            self, "held_out_shape_motion", tuple(tuple(p) for p in self.held_out_shape_motion)
        )
        for colour, shape in self.held_out_colour_shape:
            if colour not in COLOURS or shape not in SHAPES:
                raise WorldError(
                    f"WorldConfig.held_out_colour_shape has ({colour!r}, {shape!r}); colours are "
                    f"{list(COLOURS)}, shapes {list(SHAPES)}"
                )
        for shape, motion in self.held_out_shape_motion:
            if shape not in SHAPES or motion not in MOTIONS:
                raise WorldError(
                    f"WorldConfig.held_out_shape_motion has ({shape!r}, {motion!r}); shapes are "
                    f"{list(SHAPES)}, motions {list(MOTIONS)}"
                )
        if not 0.0 <= self.test_held_out_fraction <= 1.0:
            raise WorldError(
                f"WorldConfig.test_held_out_fraction must be in [0, 1]; got {self.test_held_out_fraction}"
            )
        if not fitting_speeds("large", self.duration):
            room = 1.0 - SIZE_FRACTIONS["large"] - 2 * MARGIN  # travel a large shape has
            longest = self.fps * room / SPEEDS["slow"] + 1
            raise WorldError(
                f"WorldConfig: {self.num_frames} frames at {self.fps} fps last {self.duration:.2f} s, "
                f"too long for a moving shape to stay in the frame; use num_frames <= "
                f"{int(longest)} or a higher fps"
            )

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame (at least one frame period)."""
        return max(self.num_frames - 1, 1) / self.fps


class SyntheticWorld:
    """Deterministic clips of 1-3 coloured shapes moving over a grey background.

    ``scene(split, index)`` depends only on (seed, split, index), so any item can be made in any
    order, by any rank or worker, and train/val/test never share a clip.
    """

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()

    def size(self, split: str) -> int:
        self._check(split, 0)
        return getattr(self.config, f"{split}_size")

    def held_out(self) -> dict[str, tuple[tuple[str, str], ...]]:
        """The compositions absent from train and val: colour x shape and shape x motion pairs."""
        return {
            "colour_shape": self.config.held_out_colour_shape,
            "shape_motion": self.config.held_out_shape_motion,
        }

    def held_out_in(self, spec: SceneSpec) -> list[str]:
        """The held-out compositions `spec` contains, e.g. ``["red triangle", "circle up"]``."""
        cs, sm = set(self.config.held_out_colour_shape), set(self.config.held_out_shape_motion)
        out = [f"{o.colour} {o.shape}" for o in spec.objects if (o.colour, o.shape) in cs]
        return out + [f"{o.shape} {o.motion}" for o in spec.objects if (o.shape, o.motion) in sm]

    def scene(self, split: str, index: int) -> SceneSpec:
        self._check(split, index)
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, SPLITS.index(split), index])
        n = int(rng.integers(1, cfg.max_objects + 1))
        novel = split == "test" and rng.random() < cfg.test_held_out_fraction
        grey = int(rng.integers(8, 41))
        for _ in range(100):
            objects = [self._draw_object(rng) for _ in range(n)]
            if novel:
                objects[0] = self._draw_held_out(rng)
            if any(self.held_out_in(SceneSpec(objects=(o,))) for o in objects[int(novel) :]):
                continue
            spec = place(
                objects,
                rng,
                duration=cfg.duration,
                aspect=cfg.width / cfg.height,
                background=(grey, grey, grey),
                attempts=10,
            )
            if spec is not None:
                return spec
        raise WorldError(
            f"SyntheticWorld could not lay out {n} objects for {split}[{index}]; lower "
            f"WorldConfig.max_objects or num_frames"
        )

    def render(
        self,
        spec: SceneSpec,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        fps: float | None = None,
    ) -> VideoClip:
        """Frames of `spec` (defaults from the config); the same spec at any size and fps."""
        cfg = self.config
        t, h, w = num_frames or cfg.num_frames, height or cfg.height, width or cfg.width
        fps = fps or cfg.fps
        frames = render_frames(spec, t, h, w, fps)
        return VideoClip(
            frames=frames, fps=fps, source="mugv-world", metadata={"spec": spec.to_dict()}
        )

    def sample(self, split: str, index: int) -> CaptionedClip:
        """The clip with captions, scene graph, trajectories and QA pairs."""
        spec = self.scene(split, index)
        return self._annotated(spec, split, index, still=False)

    def image(self, split: str, index: int) -> CaptionedClip:
        """One frame of the scene with every object static, captioned without motion."""
        return self._annotated(self.scene(split, index).still(), split, index, still=True)

    def _annotated(self, spec: SceneSpec, split: str, index: int, *, still: bool) -> CaptionedClip:
        cfg = self.config
        t = 1 if still else cfg.num_frames
        clip = self.render(spec, num_frames=t)
        clip.metadata.update(split=split, index=index, held_out=self.held_out_in(spec))
        rng = np.random.default_rng([cfg.seed, SPLITS.index(split), index, 1])
        key = f"world{cfg.seed}-{split}-{index:07d}" + ("-image" if still else "")
        clip.source = key
        return CaptionedClip(
            key=key,
            clip=clip,
            captions=spec.captions(
                count=cfg.captions_per_clip, seed=int(rng.integers(2**31)), with_motion=not still
            ),
            scene_graph=scene_graph(spec, cfg.height, cfg.width),
            trajectories=trajectories(spec, t, cfg.height, cfg.width, cfg.fps),
            qa=qa_pairs(spec, rng, with_motion=not still),
        )

    def _draw_object(self, rng: np.random.Generator) -> ObjectSpec:
        size = SIZES[rng.integers(len(SIZES))]
        motion = MOTIONS[rng.integers(len(MOTIONS))]
        return self._object(
            rng,
            SHAPES[rng.integers(len(SHAPES))],
            COLOURS[rng.integers(len(COLOURS))],
            size,
            motion,
        )

    def _draw_held_out(self, rng: np.random.Generator) -> ObjectSpec:
        cs, sm = self.config.held_out_colour_shape, self.config.held_out_shape_motion
        k = int(rng.integers(len(cs) + len(sm)))
        size = SIZES[rng.integers(len(SIZES))]
        if k < len(cs):
            colour, shape = cs[k]
            return self._object(rng, shape, colour, size, MOTIONS[rng.integers(len(MOTIONS))])
        shape, motion = sm[k - len(cs)]
        return self._object(rng, shape, COLOURS[rng.integers(len(COLOURS))], size, motion)

    def _object(
        self, rng: np.random.Generator, shape: str, colour: str, size: str, motion: str
    ) -> ObjectSpec:
        speed = 0.0
        if motion != "static":
            allowed = fitting_speeds(size, self.config.duration)
            speed = SPEEDS[allowed[rng.integers(len(allowed))]]
        return ObjectSpec(shape=shape, colour=colour, size=size, motion=motion, speed=speed)

    def _check(self, split: str, index: int) -> None:
        if split not in SPLITS:
            raise WorldError(f"split must be one of {list(SPLITS)}; got {split!r}")
        size = getattr(self.config, f"{split}_size")
        if not isinstance(index, (int, np.integer)) or not 0 <= index < size:
            raise WorldError(
                f"index {index!r} is out of range for split {split!r} of size {size} "
                f"(WorldConfig.{split}_size)"
            )
