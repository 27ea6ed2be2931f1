import json

import numpy as np
import pytest

from mugv.data import VideoClip
from mugv.data.formats import load_qa_jsonl, load_retrieval_jsonl
from mugv.data.video import write_video
from mugv.retrieval import InputError
from mugv.retrieval.datasets import qa_set, retrieval_set


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("msrvtt")
    rng = np.random.default_rng(0)
    for name in ("video0", "video1"):
        frames = rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
        write_video(root / f"{name}.mp4", VideoClip(frames=frames, fps=8))
    (root / "video2.mp4").write_bytes(b"not a video at all")
    lines = [
        {"clip_name": "video0", "caption": ["a man sings", "someone is singing"]},
        {"clip_name": "video1", "caption": "a dog runs"},
        {"clip_name": "video2", "caption": "a broken file"},
        {"clip_name": "video3", "caption": "a missing file"},
    ]
    (root / "retrieval.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    qa = [
        {"question": "what sings?", "answer": "man", "question_id": 1, "video_id": "video0"},
        {"question": "what runs?", "answer": "dog", "question_id": 2, "video_id": "video1"},
        {"question": "what breaks?", "answer": "file", "question_id": 3, "video_id": "video2"},
    ]
    (root / "qa.jsonl").write_text("\n".join(json.dumps(x) for x in qa))
    return root


def test_retrieval_jsonl_set_skips_unreadable_videos(tiny_model, root):
    data = retrieval_set(tiny_model, load_retrieval_jsonl(root / "retrieval.jsonl"), root)
    assert data.keys == ["video0", "video1"]
    assert data.frames.shape == (2, 4, 3, 32, 32)
    assert data.texts == ["a man sings", "someone is singing", "a dog runs"]
    assert data.text_to_video == [0, 0, 1]
    assert sorted(data.skipped) == ["video2.mp4", "video3.mp4"]


def test_qa_jsonl_set(tiny_model, root):
    data = qa_set(tiny_model, load_qa_jsonl(root / "qa.jsonl"), root)
    assert data.questions == ["what sings?", "what runs?"]
    assert data.answers == ["man", "dog"] and data.video_index == [0, 1]
    assert list(data.skipped) == ["video2.mp4"]


def test_nothing_usable_is_a_clear_error(tiny_model, root):
    records = load_retrieval_jsonl(root / "retrieval.jsonl")[2:]
    with pytest.raises(InputError, match="no record"):
        retrieval_set(tiny_model, records, root)
