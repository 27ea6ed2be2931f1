"""A sample's tar members: annotations as JSON, the clip as mp4 or images, tensors."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from mugv.data._errors import DataError, ShardError
from mugv.data._schema import (
    CaptionedClip,
    QAPair,
    Relation,
    SceneGraph,
    SceneObject,
    Trajectory,
    VideoClip,
)
from mugv.data.video import (
    PixFmt,
    decode_image,
    encode_image,
    encode_video,
    read_video,
    sample_clip,
)

ClipFormat = Literal["mp4", "png", "jpg"]
TensorFormat = Literal["safetensors", "npy"]
_KEY = re.compile(r"^[A-Za-z0-9_\-/]+$")
_TENSOR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FRAME = re.compile(r"^(\d{4,})\.(png|jpg)$")


@dataclass
class ShardSample:
    """One stored sample: a clip (or none, for latent-only data), its annotations, tensors."""

    key: str
    clip: VideoClip | None = None
    captions: list[str] = field(default_factory=list)
    scene_graph: SceneGraph | None = None
    trajectories: list[Trajectory] = field(default_factory=list)
    qa: list[QAPair] = field(default_factory=list)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_captioned(
        cls, item: CaptionedClip, tensors: Mapping[str, Any] | None = None
    ) -> ShardSample:
        return cls(
            key=item.key,
            clip=item.clip,
            captions=list(item.captions),
            scene_graph=item.scene_graph,
            trajectories=list(item.trajectories),
            qa=list(item.qa),
            tensors=dict(tensors or {}),
        )

    def to_captioned(self) -> CaptionedClip:
        if self.clip is None:
            raise ShardError(f"sample {self.key!r} holds no clip (it was written without one)")
        return CaptionedClip(
            key=self.key,
            clip=self.clip,
            captions=self.captions,
            scene_graph=self.scene_graph,
            trajectories=self.trajectories,
            qa=self.qa,
        )


@dataclass(frozen=True)
class ShardInfo:
    """A manifest line: the shard's file name (relative to the directory), its samples."""

    shard: str
    count: int
    bytes: int
    keys: tuple[str, ...]


def _graph_to_json(graph: SceneGraph) -> dict[str, Any]:
    return {
        "objects": [
            {
                "object_id": o.object_id,
                "name": o.name,
                "attributes": list(o.attributes),
                "box": None if o.box is None else [float(v) for v in o.box],
                "feature": None if o.feature is None else o.feature.astype(np.float32).tolist(),
            }
            for o in graph.objects
        ],
        "relations": [[r.subject, r.predicate, r.object] for r in graph.relations],
    }


def _graph_from_json(d: dict[str, Any]) -> SceneGraph:
    objects = [
        SceneObject(
            object_id=o["object_id"],
            name=o["name"],
            attributes=list(o["attributes"]),
            box=None if o["box"] is None else tuple(o["box"]),
            feature=None if o["feature"] is None else np.asarray(o["feature"], np.float32),
        )
        for o in d["objects"]
    ]
    return SceneGraph(objects=objects, relations=[Relation(*r) for r in d["relations"]])


def _as_numpy(key: str, name: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bfloat16:
            raise ShardError(
                f"sample {key!r}: tensor {name!r} is bfloat16, which numpy cannot hold; "
                "store .float() and cast back after reading"
            )
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise ShardError(f"sample {key!r}: tensor {name!r} is {type(value).__name__}, not an array")
    return np.ascontiguousarray(value)


def _encode_sample(
    sample: ShardSample,
    clip_format: ClipFormat,
    crf: int,
    pix_fmt: PixFmt,
    tensor_format: TensorFormat,
) -> dict[str, bytes]:
    """The tar members (extension -> bytes) of one sample."""
    key = sample.key
    if not _KEY.match(key):
        raise ShardError(
            f"sample key {key!r} must be letters, digits, '_', '-' or '/' (no dots: WebDataset "
            "splits the key from the extension at the first dot)"
        )
    meta: dict[str, Any] = {
        "key": key,
        "captions": list(sample.captions),
        "scene_graph": None if sample.scene_graph is None else _graph_to_json(sample.scene_graph),
        "trajectories": [
            {
                "object_id": t.object_id,
                "label": t.label,
                "boxes": t.boxes.astype(np.float32).tolist(),
            }
            for t in sample.trajectories
        ],
        "qa": [[q.question, q.answer] for q in sample.qa],
        "clip": None,
    }
    members: dict[str, bytes] = {}
    if sample.clip is not None:
        clip = sample.clip
        meta["clip"] = {
            "fps": clip.fps,
            "source": clip.source,
            "span": None if clip.span is None else list(clip.span),
            "metadata": clip.metadata,
            "format": clip_format,
        }
        if clip_format == "mp4":
            members["mp4"] = encode_video(clip, crf=crf, pix_fmt=pix_fmt)
        else:
            for t, frame in enumerate(clip.frames):
                members[f"{t:04d}.{clip_format}"] = encode_image(frame, clip_format)
    try:
        members["json"] = json.dumps(meta, ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:
        raise ShardError(
            f"sample {key!r}: clip.metadata must be JSON-serialisable to be stored: {exc}"
        ) from exc
    tensors = {name: _as_numpy(key, name, v) for name, v in sample.tensors.items()}
    for name in tensors:
        if not _TENSOR_NAME.match(name):
            raise ShardError(f"sample {key!r}: tensor name {name!r} must be a Python identifier")
    if tensors and tensor_format == "safetensors":
        members["safetensors"] = save_safetensors(tensors)
    elif tensors:
        for name, array in tensors.items():
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            members[f"{name}.npy"] = buffer.getvalue()
    return members


def _decode_sample(
    key: str,
    members: Mapping[str, bytes],
    where: str,
    video_options: Mapping[str, Any] | None,
) -> ShardSample:
    """Inverse of `_encode_sample`; `video_options` go to `read_video` (None: skip the clip)."""
    if "json" not in members:
        raise ShardError(
            f"{where}: sample {key!r} has no .json member (members: {sorted(members)})"
        )
    try:
        meta = json.loads(members["json"])
        clip = None
        if meta["clip"] is not None and video_options is not None:
            c = meta["clip"]
            if "mp4" in members:
                clip = read_video(members["mp4"], **video_options)
            else:
                names = sorted(ext for ext in members if _FRAME.match(ext))
                if not names:
                    raise ShardError(f"{where}: sample {key!r} lists a clip but stores no frames")
                frames = np.stack([decode_image(members[n], name=f"{key}.{n}") for n in names])
                clip = VideoClip(frames=frames, fps=c["fps"])
                if video_options:
                    clip = sample_clip(clip, **video_options)
            # The writer's description of the clip; sampling adds frame_times, fps and span.
            clip.source = c["source"]
            clip.metadata = {**c["metadata"], **clip.metadata} if video_options else c["metadata"]
            if not video_options:
                clip.fps = c["fps"]
                clip.span = None if c["span"] is None else tuple(c["span"])
        tensors: dict[str, np.ndarray] = {}
        if "safetensors" in members:
            tensors.update(load_safetensors(members["safetensors"]))
        for ext, data in members.items():
            if ext.endswith(".npy"):
                tensors[ext[: -len(".npy")]] = np.load(io.BytesIO(data), allow_pickle=False)
        return ShardSample(
            key=key,
            clip=clip,
            captions=list(meta["captions"]),
            scene_graph=None
            if meta["scene_graph"] is None
            else _graph_from_json(meta["scene_graph"]),
            trajectories=[
                Trajectory(t["object_id"], np.asarray(t["boxes"], np.float32), t["label"])
                for t in meta["trajectories"]
            ],
            qa=[QAPair(q, a) for q, a in meta["qa"]],
            tensors=tensors,
        )
    except DataError:
        raise
    except (KeyError, TypeError, ValueError, OSError, SafetensorError) as exc:
        raise ShardError(
            f"{where}: sample {key!r} is malformed: {type(exc).__name__}: {exc}"
        ) from exc
