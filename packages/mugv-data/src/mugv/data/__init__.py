"""mugv.data: the sample schema, video I/O, shards, formats, synthetic world and curation.

Sub-modules: `video` (PyAV I/O), `shards` (WebDataset), `buckets` (shape buckets), `formats`
(COCO, Karpathy, Visual Genome, SGAE, MSR-VTT), `world` (the synthetic video-language world),
`oracle` (reads world videos back), `curation` (raw videos to training shards).
"""

from mugv.data._errors import DataError, FormatError, SchemaError, ShardError, VideoError
from mugv.data._schema import (
    Box,
    CaptionedClip,
    Captioner,
    QAPair,
    Relation,
    SceneGraph,
    SceneObject,
    Trajectory,
    VideoClip,
    VideoTextScorer,
)
from mugv.data.buckets import (
    Bucket,
    BucketBatchSampler,
    BucketedBatches,
    assign_bucket,
    bucket_batches,
    fit_to_bucket,
    make_buckets,
)
from mugv.data.formats import (
    CaptionRecord,
    QARecord,
    SceneGraphRecord,
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
from mugv.data.shards import ShardDataset, ShardInfo, ShardSample, ShardWriter, read_shard
from mugv.data.video import (
    VideoInfo,
    encode_video,
    probe,
    read_image,
    read_video,
    resize_frames,
    sample_clip,
    write_image,
    write_video,
)

__version__ = "0.1.0"

__all__ = [
    "Box",
    "Bucket",
    "BucketBatchSampler",
    "BucketedBatches",
    "CaptionRecord",
    "CaptionedClip",
    "Captioner",
    "DataError",
    "FormatError",
    "QAPair",
    "QARecord",
    "Relation",
    "SceneGraph",
    "SceneGraphRecord",
    "SceneObject",
    "SchemaError",
    "ShardDataset",
    "ShardError",
    "ShardInfo",
    "ShardSample",
    "ShardWriter",
    "Trajectory",
    "VideoClip",
    "VideoError",
    "VideoInfo",
    "VideoTextScorer",
    "__version__",
    "assign_bucket",
    "bucket_batches",
    "encode_video",
    "fit_to_bucket",
    "load_coco_captions",
    "load_coco_results",
    "load_jsfusion_csv",
    "load_karpathy",
    "load_msrvtt",
    "load_qa_jsonl",
    "load_retrieval_jsonl",
    "load_sgae",
    "load_visual_genome",
    "make_buckets",
    "probe",
    "read_image",
    "read_shard",
    "read_video",
    "resize_frames",
    "sample_clip",
    "write_image",
    "write_video",
]
