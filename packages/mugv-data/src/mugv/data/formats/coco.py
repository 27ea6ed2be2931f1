"""COCO captions (``captions_*.json``), caption results, and Karpathy's ``dataset_coco.json``."""

from __future__ import annotations

import os

from mugv.data._errors import FormatError
from mugv.data.formats._common import CaptionRecord, Records


def load_coco_captions(path: str | os.PathLike[str]) -> list[CaptionRecord]:
    """``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "id", "caption"}]}``.

    One record per image, in the file's image order; captions in annotation order.
    """
    r = Records(path)
    data = r.load_json()
    records: dict[str, CaptionRecord] = {}
    for i, image in enumerate(r.items(r.get(data, "images", list, "top level"), "images")):
        where = f"images[{i}]"
        key = r.key(image, "id", where)
        if key in records:
            raise r.fail(f"{where}.id", f"image id {key} appears twice")
        records[key] = CaptionRecord(key=key, source=r.get(image, "file_name", str, where))
    annotations = r.get(data, "annotations", list, "top level")
    for i, ann in enumerate(r.items(annotations, "annotations")):
        where = f"annotations[{i}]"
        key = r.key(ann, "image_id", where)
        r.key(ann, "id", where)
        caption = r.get(ann, "caption", str, where)
        if key not in records:
            raise r.fail(f"{where}.image_id", f"image {key} is not in 'images'")
        records[key].captions.append(caption.strip())
    return list(records.values())


def load_coco_results(path: str | os.PathLike[str]) -> dict[str, str]:
    """``[{"image_id", "caption"}]`` (a captioner's output) as image id -> caption."""
    r = Records(path)
    results: dict[str, str] = {}
    for i, item in enumerate(r.items(r.load_json(), "top level")):
        where = f"[{i}]"
        key = r.key(item, "image_id", where)
        if key in results:
            raise r.fail(f"{where}.image_id", f"image {key} has two results; keep one per image")
        results[key] = r.get(item, "caption", str, where).strip()
    return results


def load_karpathy(path: str | os.PathLike[str]) -> list[CaptionRecord]:
    """Karpathy's split file ``{"images": [{"filepath", "filename", "cocoid", "split",
    "sentences": [{"raw", "tokens", ...}]}]}``; the key is ``cocoid`` (else ``imgid``)."""
    r = Records(path)
    data = r.load_json()
    records = []
    for i, image in enumerate(r.items(r.get(data, "images", list, "top level"), "images")):
        where = f"images[{i}]"
        if isinstance(image, dict) and "cocoid" in image:
            key = r.key(image, "cocoid", where)
        else:
            key = r.key(image, "imgid", where)
        folder = r.get(image, "filepath", str, where, default="")
        filename = r.get(image, "filename", str, where)
        split = r.get(image, "split", str, where)
        captions = []
        sentences = r.get(image, "sentences", list, where)
        for j, sentence in enumerate(sentences):
            raw = r.get(sentence, "raw", str, f"{where}.sentences[{j}]")
            r.get(sentence, "tokens", list, f"{where}.sentences[{j}]")
            captions.append(raw.strip())
        if not captions:
            raise FormatError(f"{r.path}: {where}.sentences: image {key} has no sentence")
        source = f"{folder}/{filename}" if folder else filename
        records.append(CaptionRecord(key=key, source=source, captions=captions, split=split))
    return records
