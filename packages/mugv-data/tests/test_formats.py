"""Standard-format loaders on fixture files in the exact formats, and on malformed variants."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mugv.data import DataError, QAPair, Relation
from mugv.data.formats import (
    FormatError,
    load_coco_captions,
    load_coco_results,
    load_jsfusion_csv,
    load_karpathy,
    load_msrvtt,
    load_qa_jsonl,
    load_retrieval_jsonl,
    load_sgae,
    load_visual_genome,
)
from mugv.data.video import write_image, write_video

FIXTURES = Path(__file__).parent / "fixtures"
SGAE_VOCAB = ["<unk>", "man", "motorcycle", "road", "red", "young", "dirt", "riding", "on"]


def test_coco_captions() -> None:
    records = load_coco_captions(FIXTURES / "captions_val2014.json")
    assert [r.key for r in records] == ["391895", "522418", "184613"]
    first = records[0]
    assert first.source == "COCO_val2014_000000391895.jpg"
    assert first.captions == [
        "A man with a red helmet on a small moped on a dirt road.",
        "Man riding a motor bike on a dirt road on the countryside.",
        "A man riding on the back of a motorcycle.",
    ]
    assert sum(len(r.captions) for r in records) == 7


def test_coco_results() -> None:
    results = load_coco_results(FIXTURES / "captions_results.json")
    assert results["391895"] == "a man riding a motorcycle on a dirt road" and len(results) == 3


def test_karpathy() -> None:
    records = load_karpathy(FIXTURES / "dataset_coco.json")
    assert [(r.key, r.split) for r in records] == [
        ("391895", "test"),
        ("522418", "restval"),
        ("57870", "train"),
    ]
    assert records[0].source == "val2014/COCO_val2014_000000391895.jpg"
    assert records[0].captions[0] == "A man with a red helmet on a small moped on a dirt road."


def test_visual_genome() -> None:
    first, second = load_visual_genome(FIXTURES / "scene_graphs.json")
    assert first.key == "1"
    graph = first.scene_graph
    assert [o.name for o in graph.objects] == ["tree", "sidewalk", "man"]
    assert graph.object(1058534).attributes == ["grey", "concrete"]
    assert graph.object(1058549).box == (421.0, 91.0, 79.0, 339.0)
    assert graph.object(1058549).attributes == []
    assert graph.relations == [Relation(1058508, "ON", 1058534), Relation(1058549, "near", 1058534)]
    assert second.scene_graph.relations == []


def test_sgae_npy() -> None:
    record = load_sgae(FIXTURES / "391895.npy", SGAE_VOCAB)
    graph = record.scene_graph
    assert record.key == "391895"
    assert [(o.object_id, o.name, o.attributes) for o in graph.objects] == [
        (0, "man", ["red", "young"]),
        (1, "motorcycle", []),
        (2, "road", ["dirt"]),
    ]
    assert graph.relations == [Relation(0, "riding", 1), Relation(0, "on", 2)]
    assert load_sgae(FIXTURES / "391895.npy").scene_graph.objects[0].name == "1"


def test_msrvtt() -> None:
    records = load_msrvtt(FIXTURES / "MSRVTT_data.json")
    assert [(r.key, r.split, r.source) for r in records] == [
        ("video0", "train", "video0.mp4"),
        ("video1", "train", "video1.mp4"),
        ("video7010", "validate", "video7010.mp4"),
    ]
    assert records[0].captions == ["a car is shown", "a man is driving down a road"]


def test_jsfusion_retrieval_and_qa() -> None:
    pairs = load_jsfusion_csv(FIXTURES / "MSRVTT_JSFUSION_test.csv")
    assert [p.key for p in pairs] == ["video7579", "video7725", "video9258"]
    assert pairs[2].captions == ["a person is connecting something to system"]
    retrieval = load_retrieval_jsonl(FIXTURES / "msrvtt_ret_test.jsonl")
    assert [r.key for r in retrieval] == ["video7579", "video9258"]
    assert len(retrieval[1].captions) == 2
    qa = load_qa_jsonl(FIXTURES / "msrvtt_qa_test.jsonl")
    assert qa[0].question_id == "158581" and qa[0].video == "video7579"
    assert qa[0].qa == QAPair("what is a girl putting a sweater on?", "dog")
    assert qa[1].video == ""


def test_records_load_media(tmp_path: Path) -> None:
    image = np.full((8, 10, 3), 90, np.uint8)
    write_image(tmp_path / "val2014" / "COCO_val2014_000000391895.jpg", image)
    item = load_karpathy(FIXTURES / "dataset_coco.json")[0].load(tmp_path)
    assert item.clip.frames.shape == (1, 8, 10, 3) and item.key == "391895"
    write_video(tmp_path / "video0.mp4", np.full((6, 16, 16, 3), 50, np.uint8), fps=6)
    video = load_msrvtt(FIXTURES / "MSRVTT_data.json")[0].load(tmp_path, num_frames=3)
    assert video.clip.frames.shape == (3, 16, 16, 3) and len(video.captions) == 2
    with pytest.raises(DataError, match=r"video1\.mp4"):
        load_msrvtt(FIXTURES / "MSRVTT_data.json")[1].load(tmp_path)


def _edit_json(name: str, edit: Callable[[Any], None]) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        data = json.loads((FIXTURES / name).read_text())
        edit(data)
        (tmp / name).write_text(json.dumps(data))
        return tmp / name

    return make


def _edit_text(name: str, edit: Callable[[str], str]) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_text(edit((FIXTURES / name).read_text()))
        return tmp / name

    return make


def _sgae(contents: Any) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        np.save(tmp / "bad.npy", contents, allow_pickle=True)
        return tmp / "bad.npy"

    return make


MALFORMED = [
    # (loader, make the bad file, the message must name these)
    (
        load_coco_captions,
        _edit_json("captions_val2014.json", lambda d: d["annotations"][2].pop("caption")),
        r"annotations\[2\]: missing field 'caption'",
    ),
    (
        load_coco_captions,
        _edit_json("captions_val2014.json", lambda d: d["annotations"][4].update(image_id=7)),
        r"annotations\[4\]\.image_id: image 7 is not in 'images'",
    ),
    (
        load_coco_captions,
        _edit_json("captions_val2014.json", lambda d: d["images"][1].update(id=True)),
        r"images\[1\]\.id: expected int or str, got bool",
    ),
    (
        load_coco_results,
        _edit_json("captions_results.json", lambda d: d.append(dict(d[0]))),
        r"\[3\]\.image_id: image 391895 has two results",
    ),
    (
        load_karpathy,
        _edit_json("dataset_coco.json", lambda d: d["images"][1]["sentences"][0].pop("raw")),
        r"images\[1\]\.sentences\[0\]: missing field 'raw'",
    ),
    (
        load_karpathy,
        _edit_json("dataset_coco.json", lambda d: d.pop("images")),
        r"top level: missing field 'images'",
    ),
    (
        load_visual_genome,
        _edit_json("scene_graphs.json", lambda d: d[0]["objects"][2].update(w="wide")),
        r"\[0\]\.objects\[2\]\.w: expected int or float, got str",
    ),
    (
        load_visual_genome,
        _edit_json("scene_graphs.json", lambda d: d[0]["relationships"][1].update(object_id=9)),
        r"\[0\]\.relationships\[1\]\.object_id: object 9 is not among image 1's objects",
    ),
    (
        load_visual_genome,
        _edit_json("scene_graphs.json", lambda d: d[1]["objects"][0].update(names=[])),
        r"\[1\]\.objects\[0\]\.names: expected a non-empty list",
    ),
    (
        load_msrvtt,
        _edit_json("MSRVTT_data.json", lambda d: d["sentences"][3].update(caption=None)),
        r"sentences\[3\]\.caption: expected str, got NoneType",
    ),
    (
        load_jsfusion_csv,
        _edit_text("MSRVTT_JSFUSION_test.csv", lambda s: s.replace("ret1,msr7725,", "ret1,")),
        r"row 1 \(line 3\): expected 4 fields",
    ),
    (
        load_jsfusion_csv,
        _edit_text("MSRVTT_JSFUSION_test.csv", lambda s: s.replace("sentence", "caption", 1)),
        r"header: expected key,vid_key,video_id,sentence",
    ),
    (
        load_retrieval_jsonl,
        _edit_text("msrvtt_ret_test.jsonl", lambda s: s.replace('"clip_name"', '"clip"', 1)),
        r"line 1: missing field 'clip_name'",
    ),
    (
        load_retrieval_jsonl,
        _edit_text("msrvtt_ret_test.jsonl", lambda s: s + "{not json\n"),
        r"line 3 is not valid JSON",
    ),
    (
        load_qa_jsonl,
        _edit_text("msrvtt_qa_test.jsonl", lambda s: s.replace('"answer": "dance", ', "")),
        r"line 2: missing field 'answer'",
    ),
    (
        load_sgae,
        _sgae({"rela_matrix": np.array([[0, 5, 1]]), "obj_attr": np.array([[0, 1, -1]])}),
        r"rela_matrix\[0\]: object box 5 is not in obj_attr",
    ),
    (load_sgae, _sgae({"obj_attr": np.array([[0, 1, -1]])}), r"missing field 'rela_matrix'"),
    (
        load_sgae,
        _sgae({"rela_matrix": np.zeros((1, 2)), "obj_attr": np.array([[0, 1]])}),
        r"rela_matrix must be N x 3",
    ),
    (load_sgae, _sgae(np.arange(4)), r"expected a saved dict"),
]


@pytest.mark.parametrize(("loader", "make", "message"), MALFORMED)
def test_malformed_records_name_file_record_field(
    tmp_path: Path, loader: Callable, make: Callable[[Path], Path], message: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(FormatError, match=message) as info:
        loader(path)
    assert str(path) in str(info.value)


LOADERS = [
    load_coco_captions,
    load_coco_results,
    load_karpathy,
    load_visual_genome,
    load_msrvtt,
    load_jsfusion_csv,
    load_retrieval_jsonl,
    load_qa_jsonl,
    load_sgae,
]


@pytest.mark.parametrize("loader", LOADERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "empty|not a .npy"),
        (b"\x89PNG\r\n\x1a\n\x00\x00garbage\xff\xfe", "UTF-8|not a .npy"),
        (b'{"truncated": [1, 2', "not valid JSON|not a .npy|header|line 1|expected"),
    ],
)
def test_bad_files(tmp_path: Path, loader: Callable, content: bytes | None, message: str) -> None:
    path = tmp_path / "file.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(FormatError, match=message) as info:
        loader(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, DataError)


def test_sgae_refuses_code_in_pickles(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    np.save(tmp_path / "evil.npy", np.array({"rela_matrix": Payload()}), allow_pickle=True)
    with pytest.raises(FormatError, match="refusing to unpickle"):
        load_sgae(tmp_path / "evil.npy")
    path = _sgae({"rela_matrix": np.zeros((0, 3)), "obj_attr": np.array([[0, 99, -1]])})(tmp_path)
    with pytest.raises(FormatError, match=r"obj_attr\[0\]: label 99 is not in the vocabulary"):
        load_sgae(path, SGAE_VOCAB)
