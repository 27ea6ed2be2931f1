"""Encoding at scale: clip shards -> latent shards (+ caption embeddings), over ranks, resumable.

Input shards (written by `mugv.data.shards.ShardWriter`, listed by its manifest) are dealt to
ranks round-robin; each input shard ``<name>.tar`` becomes one output shard
``<name>-000000.tar`` with its own manifest part ``<name>.manifest.jsonl``, written atomically
by `ShardWriter`. A rerun skips every input whose manifest part already exists, so a killed job
resumes where it stopped and several jobs can share the work.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mugv.data.shards import ShardSample, ShardWriter, read_manifest, read_shard
from mugv.vae._errors import VAEInputError
from mugv.vae.frames import video_to_tensor
from mugv.vae.model import VideoVAE

logger = logging.getLogger(__name__)

TextEncodeFn = Callable[[Sequence[str]], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class EncodeReport:
    """What one rank did: shards written, shards skipped as already done, samples encoded."""

    written: tuple[str, ...]
    skipped: tuple[str, ...]
    samples: int


def _prefix(shard: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-]", "_", Path(shard).name.removesuffix(".tar"))


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@torch.no_grad()
def encode_shards(
    vae: VideoVAE,
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    text_encoder: TextEncodeFn | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    sample_posterior: bool = False,
    tile: int | None = None,
    keep_clips: bool = False,
) -> EncodeReport:
    """Encode this rank's share of ``input_dir``'s clip shards into ``output_dir``.

    Each output sample keeps the input's key and annotations and adds the tensors
    ``latents`` (C, t, h, w) float32, normalised, and, when ``text_encoder`` is given
    (``texts -> (embeddings (N, L, D), mask (N, L))``, e.g. a `mugv.dit` text encoder's
    ``encode``), ``text_embeddings`` (N, L, D) float32 and ``text_mask`` (N, L) bool for its N
    captions. ``rank``/``world_size`` default to torch.distributed's (or 0 of 1).
    """
    rank, world_size = _rank_world(rank, world_size)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = next(vae.parameters()).device
    shards = read_manifest(input_dir)[rank::world_size]
    written, skipped, samples = [], [], 0
    for info in shards:
        prefix = _prefix(info.shard)
        if (output_dir / f"{prefix}.manifest.jsonl").exists():
            skipped.append(info.shard)
            continue
        with ShardWriter(output_dir, prefix=prefix, max_count=max(info.count, 1)) as writer:
            for item in read_shard(Path(input_dir) / info.shard):
                writer.write(
                    _encode_one(vae, item, device, text_encoder, sample_posterior, tile, keep_clips)
                )
                samples += 1
        written.append(info.shard)
        logger.info("rank %d: encoded %s (%d samples)", rank, info.shard, info.count)
    return EncodeReport(tuple(written), tuple(skipped), samples)


def _encode_one(
    vae: VideoVAE,
    item: ShardSample,
    device: torch.device,
    text_encoder: TextEncodeFn | None,
    sample_posterior: bool,
    tile: int | None,
    keep_clips: bool,
) -> ShardSample:
    if item.clip is None:
        raise VAEInputError(f"sample {item.key!r} holds no clip to encode")
    video = video_to_tensor(item.clip)[None].to(device)  # (1, 3, T, H, W)
    latents = vae.encode(video, sample=sample_posterior, tile=tile)[0]  # (C, t, h, w)
    # the frame rate survives without the clip (keep_clips=False): train-dit embeds it
    tensors = {
        "latents": latents.float().cpu().numpy(),
        "fps": np.array([item.clip.fps], dtype=np.float32),  # (1,): shards store >= 1-d
    }
    if text_encoder is not None and item.captions:
        emb, mask = text_encoder(item.captions)  # (N, L, D), (N, L)
        tensors["text_embeddings"] = emb.float().cpu().numpy()
        tensors["text_mask"] = mask.bool().cpu().numpy()
    return ShardSample(
        key=item.key,
        clip=item.clip if keep_clips else None,
        captions=item.captions,
        scene_graph=item.scene_graph,
        trajectories=item.trajectories,
        qa=item.qa,
        tensors={**item.tensors, **tensors},
    )
