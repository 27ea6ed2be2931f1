"""WebDataset tar shards of samples, a JSONL manifest, and a rank/worker-aware reader.

A sample ``key`` is stored as tar members sharing the key (the WebDataset convention: the
key is the member name up to its first dot):

- ``key.json``: captions, scene graph, trajectories, QA, the clip's fps/source/span/metadata
- ``key.mp4`` (H.264) or ``key.0000.png``/``key.0000.jpg`` ... (one image per frame)
- ``key.safetensors`` (every named tensor) or ``key.<name>.npy`` (one per tensor):
  precomputed latents, text embeddings, ...

Shards are written to a temporary name and renamed when complete, so a reader never sees half
a shard; each writer appends a line per finished shard to its own ``<prefix>.manifest.jsonl``
(so writers on many ranks never share a file), and `read_manifest` merges them.

`ShardDataset` splits the data across ``torch.distributed`` ranks and DataLoader workers so
that every sample is read exactly once per epoch: by whole shards (``split="shard"``) or by
contiguous runs of samples (``split="sample"``, which needs the manifest's counts).
"""

from mugv.data._errors import ShardError
from mugv.data.shards._dataset import ShardDataset, read_shard
from mugv.data.shards._sample import ShardInfo, ShardSample
from mugv.data.shards._writer import ShardWriter, read_manifest

__all__ = [
    "ShardDataset",
    "ShardError",
    "ShardInfo",
    "ShardSample",
    "ShardWriter",
    "read_manifest",
    "read_shard",
]
