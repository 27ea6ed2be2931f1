"""Preference data: which of two videos fits a prompt better, and whether one video is correct.

The records a preference optimiser (DPO-style fine-tuning of the generator) reads, and what
the labelling tool (`mugv label`) and the automatic labellers write:

- `PreferencePair`: a prompt, two videos and the choice ``"a"``, ``"b"`` or ``"tie"``.
- `CorrectnessLabel`: a prompt, one video and whether it shows the prompt.
- `write_labels` / `read_labels`: JSON lines, one object per line with a ``"kind"`` field
  (``"preference"`` or ``"correctness"``). Video paths in the file are relative to the file's
  folder when relative, so a folder of videos with its labels file can be moved as a whole.
- `oracle_labels`: prefers the video the world oracle scores higher against its prompt.
- `best_worst_labels`: of K videos per prompt, pairs the one the oracle scores best with the
  worst (best-of-K pairs carry a larger, clearer margin than two random draws).
- `scorer_labels`: the same with any `VideoTextScorer` (e.g. the retrieval model's score).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mugv.data._errors import FormatError, SchemaError
from mugv.data._schema import VideoClip, VideoTextScorer

logger = logging.getLogger(__name__)

CHOICES = ("a", "b", "tie")
_KINDS = {"preference": "PreferencePair", "correctness": "CorrectnessLabel"}

Video = str | os.PathLike[str] | VideoClip


def _check_text(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise SchemaError(f"{owner}.{name} must be a str; got {type(value).__name__}")


def _check_common(owner: str, item: Any, videos: tuple[str, ...]) -> None:
    _check_text(owner, "prompt", item.prompt)
    for name in videos:
        value = getattr(item, name)
        if isinstance(value, os.PathLike):
            object.__setattr__(item, name, os.fspath(value))
        elif not isinstance(value, str) or not value:
            raise SchemaError(f"{owner}.{name} must be a non-empty path; got {value!r}")
    if not isinstance(item.source, str) or not item.source:
        raise SchemaError(
            f"{owner}.source must name who labelled it ('human', 'oracle', 'scorer', ...); "
            f"got {item.source!r}"
        )
    if not isinstance(item.metadata, dict):
        raise SchemaError(f"{owner}.metadata must be a dict; got {type(item.metadata).__name__}")


@dataclass(frozen=True, kw_only=True)
class PreferencePair:
    """Which of two videos fits `prompt` better: ``choice`` is ``"a"``, ``"b"`` or ``"tie"``."""

    prompt: str
    video_a: str
    video_b: str
    choice: str
    source: str = "human"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_common("PreferencePair", self, ("video_a", "video_b"))
        if self.choice not in CHOICES:
            raise SchemaError(
                f"PreferencePair.choice must be one of {list(CHOICES)}; got {self.choice!r}"
            )


@dataclass(frozen=True, kw_only=True)
class CorrectnessLabel:
    """Whether `video` shows `prompt`; `score` is the labeller's score when it has one."""

    prompt: str
    video: str
    correct: bool
    score: float | None = None
    source: str = "human"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_common("CorrectnessLabel", self, ("video",))
        if not isinstance(self.correct, (bool, np.bool_)):
            raise SchemaError(
                f"CorrectnessLabel.correct must be a bool; got {type(self.correct).__name__}"
            )
        object.__setattr__(self, "correct", bool(self.correct))
        if self.score is not None:
            if isinstance(self.score, bool) or not isinstance(self.score, (int, float, np.number)):
                raise SchemaError(
                    f"CorrectnessLabel.score must be a number or None; got {self.score!r}"
                )
            object.__setattr__(self, "score", float(self.score))


Label = PreferencePair | CorrectnessLabel


def _stored_path(video: str, folder: Path) -> str:
    """`video` as written to a file in `folder`: relative to it when it lies inside it."""
    p = Path(video)
    if p.is_absolute():
        try:
            return p.relative_to(folder.absolute()).as_posix()
        except ValueError:
            return video
    return video


def _loaded_path(video: str, folder: Path) -> str:
    return video if Path(video).is_absolute() else str(folder / video)


def write_labels(path: str | os.PathLike[str], items: Iterable[Label]) -> Path:
    """Writes labels as JSON lines, atomically (temp file, then rename).

    Relative video paths are taken as relative to the file's folder (and stored as they are);
    absolute ones inside that folder are stored relative to it.
    """
    path = Path(path)
    folder = path.parent
    lines = []
    for k, item in enumerate(items):
        if isinstance(item, PreferencePair):
            row = {
                "kind": "preference",
                "prompt": item.prompt,
                "video_a": _stored_path(item.video_a, folder),
                "video_b": _stored_path(item.video_b, folder),
                "choice": item.choice,
            }
        elif isinstance(item, CorrectnessLabel):
            row = {
                "kind": "correctness",
                "prompt": item.prompt,
                "video": _stored_path(item.video, folder),
                "correct": item.correct,
                "score": item.score,
            }
        else:
            raise SchemaError(
                f"write_labels: item {k} is a {type(item).__name__}; write PreferencePair or "
                f"CorrectnessLabel items"
            )
        row |= {"source": item.source, "metadata": item.metadata}
        try:
            lines.append(json.dumps(row, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise SchemaError(
                f"write_labels: item {k} has metadata that is not plain JSON ({exc}); use str, "
                f"numbers, bools, lists and dicts"
            ) from exc
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _parse_line(row: Any, folder: Path) -> Label:
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object; got {type(row).__name__}")
    kind = row.get("kind")
    if kind not in _KINDS:
        raise ValueError(f'"kind" must be one of {list(_KINDS)}; got {kind!r}')
    fields = {k: v for k, v in row.items() if k != "kind"}
    cls = PreferencePair if kind == "preference" else CorrectnessLabel
    for name in ("video_a", "video_b") if cls is PreferencePair else ("video",):
        if isinstance(fields.get(name), str) and fields[name]:
            fields[name] = _loaded_path(fields[name], folder)
    names = {f.name for f in dataclasses.fields(cls)}
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    if unknown := sorted(set(fields) - names):
        raise ValueError(f"unknown field(s) {unknown}; a {kind} line has {sorted(names)}")
    if missing := sorted(required - set(fields)):
        raise ValueError(f"missing field(s) {missing} of a {kind} line")
    return cls(**fields)


def read_labels(path: str | os.PathLike[str]) -> list[Label]:
    """Reads a file `write_labels` wrote; relative video paths come back joined to its folder.

    Blank lines are skipped; any other line that is not a valid label raises `FormatError`
    naming the file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such labels file")
    items: list[Label] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                items.append(_parse_line(json.loads(line), path.parent))
            except (ValueError, SchemaError) as exc:
                raise FormatError(f"{path}:{n}: not a valid label line: {exc}") from exc
    return items


def _video_name(video: Video) -> str:
    if isinstance(video, VideoClip):
        return video.source or "<in-memory clip>"
    return os.fspath(video)


def _load(video: Video) -> VideoClip:
    if isinstance(video, VideoClip):
        return video
    from mugv.data.video import read_video

    return read_video(video)


def _check_lengths(fn: str, prompts: Sequence[str], a: Sequence[Video], b: Sequence[Video]):
    if not len(prompts) == len(a) == len(b):
        raise SchemaError(
            f"{fn}: prompts, videos_a and videos_b must have one item per pair; got "
            f"{len(prompts)}, {len(a)} and {len(b)}"
        )


def _choose(score_a: float, score_b: float) -> str:
    return "a" if score_a > score_b else "b" if score_b > score_a else "tie"


def oracle_labels(
    prompts: Sequence[str],
    videos_a: Sequence[Video],
    videos_b: Sequence[Video],
    oracle: Any = None,
) -> list[PreferencePair]:
    """Prefers the video with the higher oracle "all" score against its prompt (tie if equal).

    Videos are mp4 paths (read with `read_video`) or `VideoClip`s; prompts are parsed with
    `parse_prompt`. Each pair's metadata holds both scores and ``index``, its position in the
    inputs. A prompt outside the world's vocabulary raises `PromptError`; an unreadable video
    raises `VideoError`.
    """
    from mugv.data.oracle import Oracle
    from mugv.data.world import parse_prompt

    _check_lengths("oracle_labels", prompts, videos_a, videos_b)
    oracle = oracle or Oracle()
    pairs = []
    for i, (prompt, a, b) in enumerate(zip(prompts, videos_a, videos_b)):
        spec = parse_prompt(prompt)
        score_a = oracle.score(_load(a).frames, spec)["all"]
        score_b = oracle.score(_load(b).frames, spec)["all"]
        pairs.append(
            PreferencePair(
                prompt=prompt,
                video_a=_video_name(a),
                video_b=_video_name(b),
                choice=_choose(score_a, score_b),
                source="oracle",
                metadata={"index": i, "score_a": score_a, "score_b": score_b},
            )
        )
    return pairs


def best_worst_labels(
    prompts: Sequence[str],
    videos: Sequence[Sequence[Video]],
    oracle: Any = None,
) -> list[PreferencePair]:
    """One pair per prompt: the best of its K >= 2 videos (``video_a``) against the worst.

    ``videos[i]`` holds prompt i's videos; the oracle's "all" score against the prompt ranks
    them (the first of equals wins). ``choice`` is ``"a"``, or ``"tie"`` when all K score the
    same. Metadata: ``index`` (the prompt's position), ``best`` / ``worst`` (positions within
    ``videos[i]``), ``score_a`` / ``score_b`` and ``scores`` (all K, for absolute labels).
    """
    from mugv.data.oracle import Oracle
    from mugv.data.world import parse_prompt

    if len(prompts) != len(videos):
        raise SchemaError(
            f"best_worst_labels: videos must hold one list per prompt; got {len(prompts)} "
            f"prompts and {len(videos)} lists"
        )
    oracle = oracle or Oracle()
    pairs = []
    for i, (prompt, group) in enumerate(zip(prompts, videos)):
        if len(group) < 2:
            raise SchemaError(
                f"best_worst_labels: prompt {i} has {len(group)} video(s); each needs at least 2"
            )
        spec = parse_prompt(prompt)
        scores = [float(oracle.score(_load(v).frames, spec)["all"]) for v in group]
        best, worst = int(np.argmax(scores)), int(np.argmin(scores))
        if best == worst:  # all equal: argmax and argmin both give the first
            worst = 1
        pairs.append(
            PreferencePair(
                prompt=prompt,
                video_a=_video_name(group[best]),
                video_b=_video_name(group[worst]),
                choice=_choose(scores[best], scores[worst]),
                source="oracle",
                metadata={
                    "index": i,
                    "best": best,
                    "worst": worst,
                    "score_a": scores[best],
                    "score_b": scores[worst],
                    "scores": scores,
                },
            )
        )
    return pairs


def scorer_labels(
    prompts: Sequence[str],
    videos_a: Sequence[Video],
    videos_b: Sequence[Video],
    scorer: VideoTextScorer,
    *,
    batch_size: int = 16,
) -> list[PreferencePair]:
    """Prefers the video `scorer` scores higher against its prompt (tie if equal).

    Scores `batch_size` pairs per call. A pair with a NaN score (the scorer could not score a
    video) is skipped and logged as a warning, never fatal: the returned pairs carry ``index``,
    their position in the inputs, in their metadata, so a caller sees which are missing.
    """
    _check_lengths("scorer_labels", prompts, videos_a, videos_b)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise SchemaError(f"scorer_labels: batch_size must be a positive int; got {batch_size!r}")
    pairs = []
    for start in range(0, len(prompts), batch_size):
        stop = min(start + batch_size, len(prompts))
        texts = list(prompts[start:stop])
        clips = [_load(v) for v in videos_a[start:stop]] + [_load(v) for v in videos_b[start:stop]]
        scores = np.asarray(scorer.score(clips, texts + texts), dtype=np.float64)
        if scores.shape != (len(clips),):
            raise SchemaError(
                f"scorer_labels: {type(scorer).__name__}.score returned shape {scores.shape} for "
                f"{len(clips)} clips; a VideoTextScorer returns one score per clip"
            )
        for j, i in enumerate(range(start, stop)):
            score_a, score_b = float(scores[j]), float(scores[j + len(texts)])
            if math.isnan(score_a) or math.isnan(score_b):
                logger.warning(
                    "scorer_labels: skipped pair %d (%s vs %s): the scorer returned NaN",
                    i,
                    _video_name(videos_a[i]),
                    _video_name(videos_b[i]),
                )
                continue
            pairs.append(
                PreferencePair(
                    prompt=prompts[i],
                    video_a=_video_name(videos_a[i]),
                    video_b=_video_name(videos_b[i]),
                    choice=_choose(score_a, score_b),
                    source="scorer",
                    metadata={"index": i, "score_a": score_a, "score_b": score_b},
                )
            )
    return pairs
