"""DiT training on precomputed latents and text embeddings, on mugv.infra's `Trainer`.

MUG-V trains from shards of VAE latents and text-encoder features (the encoders run once, at
curation time). `LatentTextDataset` holds such pairs, `collate_latents` pads the variable-length
text, and `DiTStep` is the step function `mugv.infra.Trainer` calls: the joint-task
rectified-flow loss (`RectifiedFlow.loss`) with per-task losses as metrics. The Trainer owns
everything else (AdamW, clipping, schedule, EMA with decay 0.9999 in MUG-V, data parallelism,
checkpoints); `train_dit` wires the three together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from mugv.dit.rectified_flow import FlowConfig, FlowError, RectifiedFlow
from mugv.infra.data import ShuffledBatches
from mugv.infra.parallel import DistInfo
from mugv.infra.trainer import Trainer, TrainerConfig

logger = logging.getLogger(__name__)

__all__ = ["DiTStep", "LatentTextDataset", "collate_latents", "train_dit"]


class LatentTextDataset(Dataset):
    """Precomputed pairs: latents (N, C, T, h, w), per-item text features (L_i, D), fps (N,).

    `height` and `width` are the clips' pixel size (the flow's shift depends on it). Items
    may share latents (several captions of one clip): pass the same tensor row again.
    """

    def __init__(
        self,
        latents: Tensor,
        texts: Sequence[Tensor],
        fps: Tensor | float,
        *,
        height: int,
        width: int,
    ) -> None:
        if latents.dim() != 5:
            raise FlowError(f"latents must be (N, C, T, h, w), got shape {tuple(latents.shape)}")
        if len(texts) != latents.shape[0]:
            raise FlowError(
                f"got {latents.shape[0]} latents but {len(texts)} text features; pass one per item"
            )
        dims = {t.shape[-1] for t in texts}
        if len(dims) != 1 or any(t.dim() != 2 or t.shape[0] == 0 for t in texts):
            raise FlowError("texts must be non-empty (L_i, D) tensors with one common D")
        self.latents = latents
        self.texts = list(texts)
        self.fps = torch.as_tensor(fps, dtype=torch.float32).expand(latents.shape[0])
        self.height = height
        self.width = width

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, index: int) -> dict[str, Tensor | int]:
        return {
            "latents": self.latents[index],
            "text": self.texts[index],
            "fps": self.fps[index],
            "height": self.height,
            "width": self.width,
        }


def collate_latents(
    items: Sequence[dict[str, Tensor | int]], *, text_length: int = 0
) -> dict[str, Tensor | int]:
    """Stack latents and fps; pad text with a validity mask to the longest item or to
    `text_length`, whichever is longer (a fixed length gives a compiled model one shape)."""
    length = max(text_length, *(int(item["text"].shape[0]) for item in items))
    dim = int(items[0]["text"].shape[1])
    text = torch.zeros(len(items), length, dim)  # (B, L, D)
    mask = torch.zeros(len(items), length, dtype=torch.bool)  # (B, L)
    for i, item in enumerate(items):
        n = item["text"].shape[0]
        text[i, :n] = item["text"]
        mask[i, :n] = True
    return {
        "latents": torch.stack([item["latents"] for item in items]),  # (B, C, T, h, w)
        "text": text,
        "text_mask": mask,
        "fps": torch.stack([torch.as_tensor(item["fps"]) for item in items]).float(),
        "height": int(items[0]["height"]),
        "width": int(items[0]["width"]),
    }


class DiTStep:
    """`step_fn(model, batch) -> (loss, {"loss/<task>": float})` for `mugv.infra.Trainer`.

    Randomness (t, noise, tasks, text dropout) comes from the global torch RNG, which the
    Trainer seeds per rank and checkpoints, so a resumed run continues the same stream.
    """

    def __init__(self, flow: RectifiedFlow | None = None, *, fixed_signature: bool = False) -> None:
        self.flow = flow or RectifiedFlow(FlowConfig())
        self.fixed_signature = fixed_signature  # see RectifiedFlow.loss: for compiled models

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        param = next(model.parameters())
        index = batch.get("frame_index")
        loss, logs = self.flow.loss(
            model,
            batch["latents"].to(param.device, param.dtype),
            batch["text"].to(param.device, param.dtype),
            batch["text_mask"].to(param.device),
            batch["fps"].to(param.device, param.dtype),
            height=int(batch["height"]),
            width=int(batch["width"]),
            frame_index=None if index is None else index.to(param.device),
            fixed_signature=self.fixed_signature,
        )
        return loss, {k: float(v) for k, v in logs.items()}


def train_dit(
    model: nn.Module,
    dataset: LatentTextDataset,
    config: TrainerConfig,
    *,
    info: DistInfo,
    batch_size: int,
    flow: RectifiedFlow | None = None,
    seed: int = 0,
    forward_flops: Callable[[Any], float] | None = None,
    model_config: dict[str, Any] | None = None,
) -> Trainer:
    """A `Trainer` for `model` on shuffled, DP-sharded batches of `dataset`; call `.fit()`.

    With `config.compile` every batch pads its text to the dataset's longest caption and
    calls the model with the same arguments (`RectifiedFlow.loss`'s `fixed_signature`), so the
    compiled model meets one shape per stage instead of recompiling for each new mix."""
    text_length = max(len(text) for text in dataset.texts) if config.compile else 0
    data = ShuffledBatches(
        len(dataset),
        batch_size,
        lambda indices: collate_latents([dataset[i] for i in indices], text_length=text_length),
        seed=seed,
        data_rank=info.data_rank,
        data_size=info.data_size,
    )
    return Trainer(
        model,
        DiTStep(flow, fixed_signature=config.compile),
        data,
        config,
        info=info,
        forward_flops=forward_flops,
        model_config=model_config,
    )
