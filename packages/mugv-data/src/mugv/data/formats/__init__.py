"""Loaders for standard caption, scene-graph and video-QA formats, mapped onto the schema.

Every loader is strict: a malformed record raises `FormatError` naming the file, the record
(index or line) and the field. Media are not read until `CaptionRecord.load(root)`.
"""

from mugv.data._errors import FormatError
from mugv.data.formats._common import CaptionRecord, QARecord
from mugv.data.formats.coco import load_coco_captions, load_coco_results, load_karpathy
from mugv.data.formats.msrvtt import (
    load_jsfusion_csv,
    load_msrvtt,
    load_qa_jsonl,
    load_retrieval_jsonl,
)
from mugv.data.formats.scene_graphs import SceneGraphRecord, load_sgae, load_visual_genome

__all__ = [
    "CaptionRecord",
    "FormatError",
    "QARecord",
    "SceneGraphRecord",
    "load_coco_captions",
    "load_coco_results",
    "load_jsfusion_csv",
    "load_karpathy",
    "load_msrvtt",
    "load_qa_jsonl",
    "load_retrieval_jsonl",
    "load_sgae",
    "load_visual_genome",
]
