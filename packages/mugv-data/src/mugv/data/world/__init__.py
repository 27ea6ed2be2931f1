"""The synthetic video-language world: the embedded default dataset of the stack.

Scenes of 1-3 coloured shapes moving over a grey background, deterministic from a seed, with
caption paraphrases, scene graphs, exact trajectories and QA pairs; held-out compositions in
the test split; `parse_prompt` reads any caption back into a `SceneSpec`.
"""

from mugv.data.world._prompt import PromptError, parse_prompt
from mugv.data.world._spec import (
    COLOURS,
    MOTIONS,
    PALETTE,
    PREDICATES,
    SHAPES,
    SIZE_FRACTIONS,
    SIZES,
    SPEEDS,
    ObjectSpec,
    SceneSpec,
    WorldError,
)
from mugv.data.world._world import SPLITS, SyntheticWorld, WorldConfig

__all__ = [
    "COLOURS",
    "MOTIONS",
    "PALETTE",
    "PREDICATES",
    "SHAPES",
    "SIZES",
    "SIZE_FRACTIONS",
    "SPEEDS",
    "SPLITS",
    "ObjectSpec",
    "PromptError",
    "SceneSpec",
    "SyntheticWorld",
    "WorldConfig",
    "WorldError",
    "parse_prompt",
]
