"""Retrieval and QA data from the synthetic world, with its hard negatives.

Clips are rendered once at the model's frame count and size and kept as one tensor. Pair ids
group clips whose canonical captions are equal (the text cannot tell them apart), so the
contrastive losses treat them as positives of each other. Hard negatives edit one scene's
spec and re-render it: the motion of one moving object reversed (left <-> right, up <-> down),
or the colours of two objects swapped; their captions come from the edited spec.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mugv.data import QAPair
from mugv.data.world import SceneSpec, SyntheticWorld
from mugv.retrieval._errors import InputError
from mugv.retrieval.preprocess import clip_to_tensor

REVERSE = {"left": "right", "right": "left", "up": "down", "down": "up"}


@dataclass
class ClipSet:
    """Preprocessed clips with their captions, QA pairs and scene specs."""

    frames: torch.Tensor  # (N, T, 3, S, S)
    captions: list[list[str]]
    qa: list[list[QAPair]]
    specs: list[SceneSpec]
    pair_ids: torch.Tensor  # (N,) equal for clips with equal canonical captions

    def __len__(self) -> int:
        return self.frames.shape[0]


def load_world(
    world: SyntheticWorld, split: str, count: int, *, num_frames: int, image_size: int
) -> ClipSet:
    """The first `count` clips of `split`, rendered and preprocessed."""
    if count > world.size(split):
        raise InputError(
            f"asked for {count} {split} clips but the world's {split} split holds "
            f"{world.size(split)}; raise WorldConfig.{split}_size"
        )
    frames, captions, qa, specs = [], [], [], []
    for i in range(count):
        sample = world.sample(split, i)
        frames.append(clip_to_tensor(sample.clip, num_frames, image_size))
        captions.append(sample.captions)
        qa.append(sample.qa)
        specs.append(SceneSpec.from_dict(sample.clip.metadata["spec"]))
    canonical = [c[0] for c in captions]
    ids = {c: k for k, c in enumerate(dict.fromkeys(canonical))}
    pair_ids = torch.tensor([ids[c] for c in canonical])
    return ClipSet(torch.stack(frames), captions, qa, specs, pair_ids)


def batches(
    data: ClipSet, batch_size: int, *, seed: int = 0
) -> Iterator[tuple[torch.Tensor, list[str], torch.Tensor]]:
    """Endless shuffled (frames, one random paraphrase per clip, pair ids) batches."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(data))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            texts = [data.captions[i][rng.integers(len(data.captions[i]))] for i in idx]
            yield data.frames[idx], texts, data.pair_ids[idx]


def motion_negative(spec: SceneSpec) -> SceneSpec | None:
    """The scene with its first moving object's direction reversed; None if nothing moves."""
    for k, o in enumerate(spec.objects):
        if o.motion in REVERSE:
            objects = list(spec.objects)
            objects[k] = dataclasses.replace(o, motion=REVERSE[o.motion])
            return dataclasses.replace(spec, objects=tuple(objects))
    return None


def colour_negative(spec: SceneSpec) -> SceneSpec | None:
    """The scene with the colours of its first two differently coloured objects swapped."""
    objs = spec.objects
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            a, b = objs[i], objs[j]
            if a.colour != b.colour and (a.shape, a.size, a.motion) != (b.shape, b.size, b.motion):
                objects = list(objs)
                objects[i] = dataclasses.replace(objs[i], colour=objs[j].colour)
                objects[j] = dataclasses.replace(objs[j], colour=objs[i].colour)
                return dataclasses.replace(spec, objects=tuple(objects))
    return None


NEGATIVES = {"motion": motion_negative, "colour": colour_negative}


@dataclass
class HardNegativeSet:
    """Originals and their edited twins: videos 2i and 2i+1, texts 2i and 2i+1 match."""

    frames: torch.Tensor  # (2n, T, 3, S, S)
    texts: list[str]
    text_to_video: list[int]
    source_index: list[int]  # index in the split of each pair's original


def hard_negatives(
    world: SyntheticWorld,
    data: ClipSet,
    kind: str,
    *,
    num_frames: int,
    image_size: int,
    limit: int | None = None,
) -> HardNegativeSet:
    """Every clip of `data` that admits a `kind` edit ("motion" or "colour"), with its twin."""
    if kind not in NEGATIVES:
        raise InputError(f"hard negative kind must be one of {sorted(NEGATIVES)}; got {kind!r}")
    frames, texts, sources = [], [], []
    for i, spec in enumerate(data.specs):
        edited = NEGATIVES[kind](spec)
        if edited is None or edited.caption() == spec.caption():
            continue
        twin = clip_to_tensor(world.render(edited), num_frames, image_size)
        frames += [data.frames[i], twin]
        texts += [spec.caption(), edited.caption()]
        sources.append(i)
        if limit is not None and len(sources) == limit:
            break
    return HardNegativeSet(torch.stack(frames), texts, list(range(len(texts))), sources)


class AnswerVocab:
    """The answers a QA head predicts: the most frequent training answers, by index."""

    def __init__(self, answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.index = {a: k for k, a in enumerate(self.answers)}

    @classmethod
    def build(cls, qa: Sequence[Sequence[QAPair]], max_size: int = 1000) -> AnswerVocab:
        counts: dict[str, int] = {}
        for pairs in qa:
            for p in pairs:
                counts[p.answer] = counts.get(p.answer, 0) + 1
        return cls(sorted(counts, key=lambda a: (-counts[a], a))[:max_size])

    def __len__(self) -> int:
        return len(self.answers)

    def encode(self, answer: str) -> int:
        """Index of `answer`, -1 when it is outside the vocabulary (counted wrong)."""
        return self.index.get(answer, -1)


def qa_items(data: ClipSet, vocab: AnswerVocab) -> tuple[list[int], list[str], torch.Tensor]:
    """Flattened (clip index, question, answer index) over every QA pair of `data`."""
    clips, questions, answers = [], [], []
    for i, pairs in enumerate(data.qa):
        for p in pairs:
            clips.append(i)
            questions.append(p.question)
            answers.append(vocab.encode(p.answer))
    return clips, questions, torch.tensor(answers)
