import logging

import numpy as np
import pytest

from mugv.data import VideoClip
from mugv.data.video import write_video
from mugv.retrieval import InputError, TWBertScorer
from mugv.retrieval.search import VideoLibrary


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    for i in range(3):
        frames = rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
        write_video(root / f"clip{i}.mp4", VideoClip(frames=frames, fps=8))
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    return root


def test_library_skips_unreadable_files_and_searches_the_rest(tiny_model, folder, caplog):
    with caplog.at_level(logging.WARNING):
        library = VideoLibrary.from_folder(tiny_model, folder)
    assert sorted(p.rsplit("/", 1)[-1] for p in library.paths) == [
        "clip0.mp4",
        "clip1.mp4",
        "clip2.mp4",
    ]
    assert list(library.skipped) == [str(folder / "broken.mp4")]
    assert "broken.mp4" in caplog.text
    hits = library.search("a red circle moves left", k=2, rerank=2)
    assert len(hits) == 2 and hits[0].score >= hits[1].score


def test_empty_folder_is_a_clear_error(tiny_model, tmp_path):
    with pytest.raises(InputError, match="holds no video files"):
        VideoLibrary.from_folder(tiny_model, tmp_path)


def test_score_files_gives_nan_for_the_unreadable_file(tiny_model, folder):
    paths = [folder / "clip0.mp4", folder / "broken.mp4", folder / "missing.mp4"]
    s = TWBertScorer(tiny_model).score_files(paths, ["a red circle"] * 3)
    assert np.isfinite(s[0]) and np.isnan(s[1:]).all()
