"""TW-BERT (Trajectory-Word BERT, arXiv 2301.01953): encoders, cross-modal encoder and heads.

The model holds what inference needs: unimodal encoders with their contrastive projections
(retrieval candidates), the asymmetric cross-modal encoder with the video-text matching head
(re-ranking), and the MLM and QA heads. Momentum copies and queues live with the training
objective (`objectives.py`), not here.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import load_file, save_file
from torch import nn

from mugv.retrieval._errors import ConfigError, InputError
from mugv.retrieval.config import TWBertConfig
from mugv.retrieval.cross_modal import CrossModalEncoder, CrossOutput
from mugv.retrieval.text_encoder import (
    TextEncoder,
    default_text_model,
    load_bert_config,
    load_bert_state,
    masked_mean,
)
from mugv.retrieval.video_encoder import VideoEncoder, VideoFeatures

logger = logging.getLogger(__name__)


def pool_patches(patches: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool each frame's square patch grid: (B, T, N, D) -> (B, T, N / factor^2, D)."""
    if factor == 1:
        return patches
    side = math.isqrt(patches.shape[2])
    grid = rearrange(patches, "b t (h w) d -> (b t) d h w", h=side)
    pooled = F.avg_pool2d(grid, factor)
    return rearrange(pooled, "(b t) d h w -> b t (h w) d", b=patches.shape[0])


class TWBert(nn.Module):
    """Video-text model: `encode_video`, `encode_text`, `fuse`, and the heads on top."""

    def __init__(self, config: TWBertConfig, *, pretrained_text: bool = True) -> None:
        super().__init__()
        from transformers import AutoTokenizer

        self.config = config
        text_path = config.text_model or default_text_model()
        bert = load_bert_config(text_path)
        available = bert["num_hidden_layers"]
        if config.text_layers + config.cross_layers > available:
            raise ConfigError(
                f"TWBertConfig.text_layers + cross_layers = "
                f"{config.text_layers + config.cross_layers} exceeds the {available} layers of "
                f"{text_path}; lower them (e.g. text_layers=3, cross_layers=3 for MiniLM-L6)"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(text_path)
        c, d = bert["hidden_size"], config.video.width
        self.hidden = c
        self.video_encoder = VideoEncoder(config.video)
        self.text_encoder = TextEncoder(bert, config.text_layers)
        self.video_to_cross = nn.Linear(d, c)
        keep = config.frame_keep if config.frame_selection else None
        self.cross_encoder = CrossModalEncoder(
            bert, config.cross_layers, config.cross_attention, keep
        )
        self.vision_proj = nn.Linear(d, config.embed_dim)
        self.text_proj = nn.Linear(c, config.embed_dim)
        # mean text-encoder state of the training captions, subtracted before `text_proj`
        self.register_buffer("text_center", torch.zeros(c))
        self.temp = nn.Parameter(torch.tensor(config.temperature))
        self.vtm_head = nn.Linear(2 * c, 2)
        self.mlm_transform = nn.Sequential(nn.Linear(c, c), nn.GELU(), nn.LayerNorm(c))
        self.mlm_bias = nn.Parameter(torch.zeros(bert["vocab_size"]))
        self.qa_head = (
            nn.Sequential(nn.Linear(2 * c, 2 * c), nn.GELU(), nn.Linear(2 * c, config.num_answers))
            if config.num_answers
            else None
        )
        if pretrained_text:
            state = load_bert_state(text_path)
            self.text_encoder.load_hf(state)
            self.cross_encoder.load_hf(state, first_layer=config.text_layers)

    # ---- text
    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> (ids (B, L), mask (B, L)); an empty text raises, a long one is truncated."""
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise InputError(
                    f"text {i} is empty ({text!r}); give every clip a non-empty caption or drop it"
                )
        enc = self.tokenizer(list(texts), padding=True, truncation=False, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        limit = self.config.max_text_len
        if ids.shape[1] > limit:
            lengths = mask.sum(dim=1)
            for i in torch.nonzero(lengths > limit).flatten().tolist():
                logger.warning(
                    "text %d has %d tokens, more than max_text_len=%d: truncated (%.60r...)",
                    i,
                    int(lengths[i]),
                    limit,
                    texts[i],
                )
            ids, mask = ids[:, :limit].clone(), mask[:, :limit].clone()
            cut = lengths > limit
            ids[cut, -1] = self.tokenizer.sep_token_id
        return ids, mask

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(ids, mask)  # (B, L, C)

    def sentence(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The centred sentence vector: masked mean of the states minus `text_center`."""
        return masked_mean(states, mask) - self.text_center  # (B, C)

    def text_embed(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(self.sentence(states, mask)), dim=-1)  # (B, E)

    @torch.no_grad()
    def set_text_center(self, sentences: torch.Tensor) -> None:
        """Centre the text side on the mean of these (N, C) uncentred sentence vectors.

        MiniLM's mean-pooled states of templated captions share one dominant direction
        (pairwise cosine ~0.87 on the world's captions, ~0.006 once centred); without the
        centring every projected caption starts near the same point and the contrastive
        loss learns slowly (BERT-whitening, Su et al. 2021, centres for the same reason).
        """
        self.text_center.copy_(sentences.mean(dim=0))

    # ---- video
    def encode_video(self, frames: torch.Tensor) -> VideoFeatures:
        return self.video_encoder(frames)

    def video_embed(self, video: VideoFeatures) -> torch.Tensor:
        return F.normalize(self.vision_proj(video.video_cls), dim=-1)  # (B, E)

    # ---- cross-modal
    def fuse(self, states: torch.Tensor, mask: torch.Tensor, video: VideoFeatures) -> CrossOutput:
        patches = self.video_to_cross(pool_patches(video.patches, self.config.patch_pool))
        # patches: (B, T, N', C) with N' = N / patch_pool^2
        frame_cls = self.video_to_cross(video.frame_cls)  # (B, T, C)
        return self.cross_encoder(states, mask, patches, frame_cls)

    def joint(self, cross: CrossOutput) -> torch.Tensor:
        return torch.cat([masked_mean(cross.text, cross.mask), cross.video_cls], dim=-1)  # (B, 2C)

    def vtm_logits(self, cross: CrossOutput) -> torch.Tensor:
        return self.vtm_head(self.joint(cross))  # (B, 2): [no match, match]

    def mlm_logits(self, cross: CrossOutput) -> torch.Tensor:
        h = self.mlm_transform(cross.text)
        return h @ self.text_encoder.word_embeddings.weight.T + self.mlm_bias  # (B, L, V)

    def qa_logits(self, cross: CrossOutput) -> torch.Tensor:
        if self.qa_head is None:
            raise ConfigError(
                "this TWBert has no QA head; build it with TWBertConfig.num_answers > 0"
            )
        return self.qa_head(self.joint(cross))  # (B, num_answers)

    # ---- checkpoints (safetensors + JSON config)
    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2))
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> TWBert:
        folder = Path(folder)
        if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
            raise ConfigError(
                f"{folder} is not a TW-BERT checkpoint: it needs config.json and "
                "model.safetensors as written by TWBert.save_pretrained"
            )
        config = TWBertConfig.from_dict(json.loads((folder / "config.json").read_text()))
        model = cls(config, pretrained_text=False)
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        return model.eval()
