"""MSR-VTT: ``MSRVTT_data.json``, the JSFusion 1k-A test csv, retrieval and QA ``.jsonl``."""

from __future__ import annotations

import csv
import io
import os

from mugv.data._schema import QAPair
from mugv.data.formats._common import CaptionRecord, QARecord, Records

_JSFUSION_HEADER = ["key", "vid_key", "video_id", "sentence"]


def load_msrvtt(path: str | os.PathLike[str]) -> list[CaptionRecord]:
    """``{"videos": [{"video_id", "split"?, ...}], "sentences": [{"video_id", "caption"}]}``.

    One record per video (file ``<video_id>.mp4``), captions in sentence order.
    """
    r = Records(path)
    data = r.load_json()
    records: dict[str, CaptionRecord] = {}
    for i, video in enumerate(r.items(r.get(data, "videos", list, "top level"), "videos")):
        where = f"videos[{i}]"
        key = r.key(video, "video_id", where)
        if key in records:
            raise r.fail(f"{where}.video_id", f"video {key} appears twice")
        split = r.get(video, "split", str, where, default="")
        records[key] = CaptionRecord(key=key, source=f"{key}.mp4", split=split)
    for i, sentence in enumerate(r.items(r.get(data, "sentences", list, "top level"), "sentences")):
        where = f"sentences[{i}]"
        key = r.key(sentence, "video_id", where)
        caption = r.get(sentence, "caption", str, where)
        if key not in records:
            raise r.fail(f"{where}.video_id", f"video {key} is not in 'videos'")
        records[key].captions.append(caption.strip())
    return list(records.values())


def load_jsfusion_csv(path: str | os.PathLike[str]) -> list[CaptionRecord]:
    """``MSRVTT_JSFUSION_test.csv`` (header ``key,vid_key,video_id,sentence``): the 1k-A test
    split, one (video, sentence) pair per row, in file order."""
    r = Records(path)
    rows = list(csv.reader(io.StringIO(r.read_text())))
    if [h.strip() for h in rows[0]] != _JSFUSION_HEADER:
        raise r.fail("header", f"expected {','.join(_JSFUSION_HEADER)}, got {','.join(rows[0])}")
    records = []
    for n, row in enumerate(rows[1:]):
        if not row:
            continue
        if len(row) != len(_JSFUSION_HEADER):
            raise r.fail(f"row {n} (line {n + 2})", f"expected 4 fields, got {len(row)}: {row}")
        key, sentence = row[2].strip(), row[3].strip()
        for name, value in (("video_id", key), ("sentence", sentence)):
            if not value:
                raise r.fail(f"row {n} (line {n + 2}).{name}", "is empty")
        records.append(
            CaptionRecord(key=key, source=f"{key}.mp4", captions=[sentence], split="test")
        )
    return records


def load_retrieval_jsonl(path: str | os.PathLike[str]) -> list[CaptionRecord]:
    """Retrieval ``.jsonl`` lines ``{"caption", "clip_name"}``; caption may be a list."""
    r = Records(path)
    records = []
    for i, line in enumerate(r.load_jsonl()):
        where = f"line {i + 1}"
        key = r.get(line, "clip_name", str, where)
        caption = r.get(line, "caption", (str, list), where)
        captions = [caption] if isinstance(caption, str) else caption
        if not captions or not all(isinstance(c, str) for c in captions):
            raise r.fail(f"{where}.caption", f"expected a string or strings, got {caption!r:.60}")
        captions = [c.strip() for c in captions]
        records.append(CaptionRecord(key=key, source=f"{key}.mp4", captions=captions))
    return records


def load_qa_jsonl(path: str | os.PathLike[str]) -> list[QARecord]:
    """QA ``.jsonl`` lines ``{"question", "answer", "question_id"}`` (plus ``video_id``, when
    present, naming the video)."""
    r = Records(path)
    records = []
    for i, line in enumerate(r.load_jsonl()):
        where = f"line {i + 1}"
        records.append(
            QARecord(
                question_id=r.key(line, "question_id", where),
                video=str(r.get(line, "video_id", (str, int), where, default="")),
                qa=QAPair(r.get(line, "question", str, where), r.get(line, "answer", str, where)),
            )
        )
    return records
