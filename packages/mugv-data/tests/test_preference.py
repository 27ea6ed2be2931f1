"""Preference data: labels files round-trip, bad lines are named, automatic labellers choose right."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import numpy as np
import pytest

from mugv.data import FormatError, SchemaError, VideoClip
from mugv.data.oracle import Oracle
from mugv.data.preference import (
    CorrectnessLabel,
    PreferencePair,
    best_worst_labels,
    oracle_labels,
    read_labels,
    scorer_labels,
    write_labels,
)
from mugv.data.video import read_video, write_video
from mugv.data.world import SyntheticWorld, WorldConfig, parse_prompt

PROMPTS = [
    "a large red square moving right",
    "a small blue circle",
    "a large green triangle moving down and a small yellow diamond",
]
OTHER = [
    "a large yellow circle moving left",
    "a small green square",
    "a large blue diamond moving up",
]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """mp4s rendered from each prompt and from an unrelated one: (folder, good, bad)."""
    folder = tmp_path_factory.mktemp("videos")
    world = SyntheticWorld(WorldConfig(num_frames=9, fps=4))
    good, bad = [], []
    for i, (prompt, other) in enumerate(zip(PROMPTS, OTHER)):
        good.append(
            write_video(folder / f"good{i}.mp4", world.render(parse_prompt(prompt, seed=i)))
        )
        bad.append(write_video(folder / f"bad{i}.mp4", world.render(parse_prompt(other, seed=i))))
    return folder, good, bad


class OracleScorer:
    """A `VideoTextScorer` from the oracle: the "all" score, NaN for prompts it cannot parse."""

    def __init__(self) -> None:
        self.calls = 0

    def score(self, clips: Sequence[VideoClip], texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = []
        for clip, text in zip(clips, texts):
            try:
                out.append(Oracle().score(clip.frames, parse_prompt(text))["all"])
            except ValueError:
                out.append(float("nan"))
        return np.array(out)


def test_oracle_prefers_the_video_rendered_from_the_prompt(clips):
    _, good, bad = clips
    # the rendered clip on either side: the choice must follow it, not the position
    a = [good[0], bad[1], good[2]]
    b = [bad[0], good[1], bad[2]]
    pairs = oracle_labels(PROMPTS, a, b)
    assert [p.choice for p in pairs] == ["a", "b", "a"]
    assert all(p.source == "oracle" for p in pairs)
    assert [p.metadata["index"] for p in pairs] == [0, 1, 2]
    assert pairs[0].metadata["score_a"] == 1.0 and pairs[0].metadata["score_b"] == 0.0
    assert pairs[1].video_b == str(good[1])


def test_oracle_labels_clips_in_memory_and_ties(clips):
    _, good, _ = clips
    clip = read_video(good[0])
    pairs = oracle_labels(PROMPTS[:1], [clip], [good[0]])
    assert pairs[0].choice == "tie"
    assert pairs[0].video_b == str(good[0])


def test_best_worst_pairs_the_rendered_video_with_an_unrelated_one(clips):
    _, good, bad = clips
    # prompt 0: the rendered clip in the middle of three; prompt 1: three unrelated clips
    videos = [[bad[0], good[0], bad[1]], [bad[0], bad[2], bad[0]]]
    pairs = best_worst_labels(PROMPTS[:2], videos)
    first, second = pairs
    assert first.choice == "a" and first.video_a == str(good[0])
    assert first.metadata["best"] == 1 and first.metadata["score_a"] == 1.0
    assert first.metadata["score_b"] == 0.0 and first.metadata["worst"] in (0, 2)
    assert first.metadata["scores"][1] == 1.0 and len(first.metadata["scores"]) == 3
    assert second.choice == "tie" and second.metadata["best"] != second.metadata["worst"]
    assert [p.metadata["index"] for p in pairs] == [0, 1]


def test_best_worst_checks_its_input(clips):
    _, good, bad = clips
    with pytest.raises(SchemaError, match="one list per prompt"):
        best_worst_labels(PROMPTS, [[good[0], bad[0]]])
    with pytest.raises(SchemaError, match="prompt 0 has 1 video"):
        best_worst_labels(PROMPTS[:1], [[good[0]]])


def test_scorer_labels_skips_nan_pairs(clips, caplog):
    _, good, bad = clips
    scorer = OracleScorer()
    prompts = [PROMPTS[0], "a purple hexagon", PROMPTS[2]]  # the second cannot be scored
    with caplog.at_level(logging.WARNING, logger="mugv.data.preference"):
        pairs = scorer_labels(
            prompts, [bad[0], good[1], good[2]], [good[0], bad[1], bad[2]], scorer
        )
    assert [(p.metadata["index"], p.choice) for p in pairs] == [(0, "b"), (2, "a")]
    assert all(p.source == "scorer" for p in pairs)
    assert "skipped pair 1" in caplog.text
    assert scorer.calls == 1
    pairs = scorer_labels(PROMPTS, good, bad, scorer, batch_size=2)
    assert [p.choice for p in pairs] == ["a", "a", "a"] and scorer.calls == 3


def test_labellers_check_lengths(clips):
    _, good, bad = clips
    with pytest.raises(SchemaError, match="one item per pair"):
        oracle_labels(PROMPTS, good[:2], bad)
    with pytest.raises(SchemaError, match="one item per pair"):
        scorer_labels(PROMPTS[:1], good, bad, OracleScorer())


def test_round_trip(tmp_path):
    inside = str(tmp_path / "videos" / "a.mp4")
    outside = "/elsewhere/b.mp4"
    items = [
        PreferencePair(
            prompt="a red square",
            video_a=inside,
            video_b=outside,
            choice="b",
            source="human",
            metadata={"annotator": "x", "seconds": 1.5},
        ),
        CorrectnessLabel(prompt="a red square", video=inside, correct=True, score=0.75),
        CorrectnessLabel(prompt="a blue circle", video=outside, correct=False, source="oracle"),
    ]
    path = write_labels(tmp_path / "labels.jsonl", items)
    assert read_labels(path) == items
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["preference", "correctness", "correctness"]
    assert rows[0]["video_a"] == "videos/a.mp4"  # inside the folder: stored relative
    assert rows[0]["video_b"] == outside


def test_relative_paths_are_relative_to_the_file(tmp_path):
    pair = PreferencePair(prompt="p", video_a="v/a.mp4", video_b="b.mp4", choice="tie")
    path = write_labels(tmp_path / "sub" / "labels.jsonl", [pair])
    (back,) = read_labels(path)
    assert back.video_a == str(tmp_path / "sub" / "v" / "a.mp4")
    assert back.video_b == str(tmp_path / "sub" / "b.mp4")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "Expecting property name"),
        ("[1, 2]", "JSON object"),
        ('{"prompt": "p"}', '"kind" must be one of'),
        (
            '{"kind": "preference", "prompt": "p", "video_a": "a", "video_b": "b"}',
            "missing.*'choice'",
        ),
        (
            '{"kind": "preference", "prompt": "p", "video_a": "a", "video_b": "b", "choice": "c"}',
            "choice must be one of",
        ),
        ('{"kind": "correctness", "prompt": "p", "video": "a", "correct": "yes"}', "bool"),
        (
            '{"kind": "correctness", "prompt": "p", "video": "a", "correct": 1, "x": 0}',
            "unknown.*'x'",
        ),
    ],
)
def test_bad_line_names_its_number(tmp_path, line, message):
    good = '{"kind": "correctness", "prompt": "p", "video": "a.mp4", "correct": true}'
    path = tmp_path / "labels.jsonl"
    path.write_text(f"{good}\n\n{line}\n{good}\n")
    with pytest.raises(FormatError, match=f"labels.jsonl:3: .*{message}"):
        read_labels(path)


def test_invalid_items(tmp_path):
    with pytest.raises(SchemaError, match="choice must be one of"):
        PreferencePair(prompt="p", video_a="a", video_b="b", choice="A")
    with pytest.raises(SchemaError, match="video_b must be a non-empty path"):
        PreferencePair(prompt="p", video_a="a", video_b="", choice="a")
    with pytest.raises(SchemaError, match="score must be a number"):
        CorrectnessLabel(prompt="p", video="a", correct=True, score="high")
    with pytest.raises(FormatError, match="no such labels file"):
        read_labels("/nonexistent/labels.jsonl")
    with pytest.raises(SchemaError, match="not plain JSON"):
        write_labels(
            tmp_path / "labels.jsonl",
            [PreferencePair(prompt="p", video_a="a", video_b="b", choice="a", metadata={"x": {1}})],
        )
