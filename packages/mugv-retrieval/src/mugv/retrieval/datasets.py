"""Real-data retrieval and QA sets from the standard formats read by `mugv.data.formats`.

MSR-VTT (`load_msrvtt`, `load_jsfusion_csv` for the 1k-A test split), DiDeMo-style retrieval
`.jsonl` (`load_retrieval_jsonl`) and QA `.jsonl` (`load_qa_jsonl`) give records; these
functions read their videos once at the model's frame count and size. A video that cannot be
read, or a record without a usable caption, is skipped with a warning and listed in `skipped`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mugv.data.formats import CaptionRecord, QARecord
from mugv.retrieval._errors import InputError
from mugv.retrieval.model import TWBert
from mugv.retrieval.search import read_clip_tensor

logger = logging.getLogger(__name__)


@dataclass
class RetrievalSet:
    """Videos (N) and captions (M) with the video each caption describes."""

    keys: list[str]
    frames: torch.Tensor  # (N, T, 3, S, S)
    texts: list[str]
    text_to_video: list[int]
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class QASet:
    """Questions with the video they ask about and their answers."""

    frames: torch.Tensor  # (V, T, 3, S, S), one per distinct video
    video_index: list[int]  # (Q,) row of `frames` for each question
    questions: list[str]
    answers: list[str]
    skipped: dict[str, str] = field(default_factory=dict)


def _read_all(
    model: TWBert, root: Path, sources: Sequence[str]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    frames, skipped = {}, {}
    for source in dict.fromkeys(sources):
        try:
            frames[source] = read_clip_tensor(model, root / source)
        except InputError as err:
            logger.warning("skipping %s", err)
            skipped[source] = str(err)
    return frames, skipped


def retrieval_set(
    model: TWBert, records: Sequence[CaptionRecord], root: str | os.PathLike[str]
) -> RetrievalSet:
    """Reads every record's video under `root`; every non-empty caption becomes a query."""
    frames, skipped = _read_all(model, Path(root), [r.source for r in records])
    keys, stacked, texts, text_to_video = [], [], [], []
    for r in records:
        if r.source not in frames:
            continue
        captions = [c for c in r.captions if c.strip()]
        if not captions:
            logger.warning("skipping %s: it has no non-empty caption", r.key)
            skipped[r.source] = "no non-empty caption"
            continue
        keys.append(r.key)
        stacked.append(frames[r.source])
        texts += captions
        text_to_video += [len(keys) - 1] * len(captions)
    if not keys:
        raise InputError(f"no record under {root} could be used: {skipped}")
    return RetrievalSet(keys, torch.stack(stacked), texts, text_to_video, skipped)


def qa_set(
    model: TWBert,
    records: Sequence[QARecord],
    root: str | os.PathLike[str],
    *,
    suffix: str = ".mp4",
) -> QASet:
    """Reads `<root>/<record.video><suffix>` for every question that names its video."""
    usable = [r for r in records if r.video]
    if len(usable) < len(records):
        logger.warning("%d questions name no video and are skipped", len(records) - len(usable))
    frames, skipped = _read_all(model, Path(root), [r.video + suffix for r in usable])
    rows = {source: k for k, source in enumerate(frames)}
    kept = [r for r in usable if r.video + suffix in frames]
    if not kept:
        raise InputError(f"no question's video under {root} could be read: {skipped}")
    return QASet(
        frames=torch.stack(list(frames.values())),
        video_index=[rows[r.video + suffix] for r in kept],
        questions=[r.qa.question for r in kept],
        answers=[r.qa.answer for r in kept],
        skipped=skipped,
    )
