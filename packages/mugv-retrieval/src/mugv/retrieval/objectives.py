"""TW-BERT pre-training objectives (Sec. 3.3): align before fuse, then match and mask.

- VTC: video-text contrastive loss on the CLS embeddings with a learnable temperature, a
  momentum encoder (EMA 0.995) feeding feature queues, and momentum distillation (ALBEF,
  Li et al. 2021): targets = alpha * momentum similarities + (1 - alpha) * ground truth.
- Fine-grained VTC: per word and frame the max word-patch similarity, averaged over the
  words and frames, contrasted across the batch.
- VTM: binary matching on the cross-modal encoder, with one hard negative video per text and
  one hard negative text per video sampled from the contrastive similarities.
- MLM: 15% of the tokens masked (80% [MASK], 10% random, 10% kept), predicted from the fused
  stream.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mugv.retrieval._errors import ConfigError
from mugv.retrieval.model import TWBert
from mugv.retrieval.video_encoder import VideoFeatures


@dataclass(kw_only=True)
class LossWeights:
    """Weights of the four pre-training losses; a zero weight skips that loss's compute."""

    vtc: float = 1.0
    fine: float = 1.0
    vtm: float = 1.0
    mlm: float = 1.0

    def __post_init__(self) -> None:
        for name in ("vtc", "fine", "vtm", "mlm"):
            if getattr(self, name) < 0:
                raise ConfigError(f"LossWeights.{name} must be >= 0; got {getattr(self, name)}")


def soft_contrastive(sim: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of row-softmaxed similarities (B, K) against soft targets (B, K)."""
    return -(F.log_softmax(sim, dim=1) * targets).sum(dim=1).mean()


def positive_targets(idx: torch.Tensor, idx_all: torch.Tensor) -> torch.Tensor:
    """Rows normalised to 1 over the columns that share the row's pair id."""
    pos = (idx[:, None] == idx_all[None, :]).float()  # (B, K)
    return pos / pos.sum(dim=1, keepdim=True)


def fine_grained_similarity(
    words: torch.Tensor, word_mask: torch.Tensor, patches: torch.Tensor
) -> torch.Tensor:
    """Align-before-fuse fine-grained similarity of every text with every video.

    words (A, L, E) and patches (B, T, N, E), both L2-normalised; word_mask (A, L) marks the
    words that count. Returns (A, B): mean over words and frames of the max over patches.
    """
    sim = torch.einsum("ale,btne->abltn", words, patches).amax(dim=-1)  # (A, B, L, T)
    sim = sim.mean(dim=-1)  # over frames
    m = word_mask.float()[:, None, :]  # (A, 1, L)
    return (sim * m).sum(dim=-1) / m.sum(dim=-1).clamp_min(1.0)  # (A, B)


def mask_tokens(
    ids: torch.Tensor, mask: torch.Tensor, tokenizer, probability: float, generator=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: returns (masked ids, labels with -100 where nothing is predicted)."""
    special = torch.tensor([tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id])
    can = mask.bool() & ~torch.isin(ids, special)
    chosen = (torch.rand(ids.shape, generator=generator) < probability) & can
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=generator)
    masked = ids.clone()
    masked[chosen & (roll < 0.8)] = tokenizer.mask_token_id
    random_ids = torch.randint(len(tokenizer), ids.shape, generator=generator)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[swap] = random_ids[swap]
    return masked, labels


def cat_video(*videos: VideoFeatures) -> VideoFeatures:
    return VideoFeatures(
        patches=torch.cat([v.patches for v in videos]),
        frame_cls=torch.cat([v.frame_cls for v in videos]),
    )


def select_video(video: VideoFeatures, index: torch.Tensor) -> VideoFeatures:
    return VideoFeatures(patches=video.patches[index], frame_cls=video.frame_cls[index])


class TWBertObjective(nn.Module):
    """The pre-training loss of a `TWBert`, with its momentum encoders and feature queues.

    `forward(frames, ids, mask, pair_ids)` returns a dict of the weighted total ("loss") and
    every term; pairs that share a `pair_id` (e.g. two captions of one clip) count as positives.
    """

    momentum_names = ("video_encoder", "text_encoder", "vision_proj", "text_proj")

    def __init__(
        self, model: TWBert, weights: LossWeights | None = None, *, vtm_batch: int | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.weights = weights or LossWeights()
        self.vtm_batch = vtm_batch  # VTM on the first `vtm_batch` pairs only (CPU budgets)
        for name in self.momentum_names:
            twin = copy.deepcopy(getattr(model, name))
            twin.requires_grad_(False)
            setattr(self, f"{name}_m", twin)
        e, q = model.config.embed_dim, model.config.queue_size
        self.register_buffer("video_queue", F.normalize(torch.randn(e, q), dim=0))
        self.register_buffer("text_queue", F.normalize(torch.randn(e, q), dim=0))
        self.register_buffer("idx_queue", torch.full((q,), -1, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def momentum_update(self) -> None:
        m = self.model.config.momentum
        for name in self.momentum_names:
            online, twin = getattr(self.model, name), getattr(self, f"{name}_m")
            for p, pm in zip(online.parameters(), twin.parameters()):
                pm.mul_(m).add_(p.detach(), alpha=1 - m)

    @torch.no_grad()
    def enqueue(self, v: torch.Tensor, t: torch.Tensor, idx: torch.Tensor) -> None:
        q, b = self.video_queue.shape[1], v.shape[0]
        pos = (int(self.queue_ptr) + torch.arange(b)) % q
        self.video_queue[:, pos] = v.T
        self.text_queue[:, pos] = t.T
        self.idx_queue[pos] = idx
        self.queue_ptr.fill_((int(self.queue_ptr) + b) % q)

    def forward(
        self,
        frames: torch.Tensor,
        ids: torch.Tensor,
        mask: torch.Tensor,
        pair_ids: torch.Tensor,
        states: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        # frames (B, T, 3, H, W); ids, mask (B, L); pair_ids (B,) long; states (B, L, C) the
        # text encoder's output, precomputable only when the text encoder is frozen
        model, w = self.model, self.weights
        if states is not None and any(p.requires_grad for p in model.text_encoder.parameters()):
            raise ConfigError(
                "precomputed text states need a frozen text encoder: call "
                "model.text_encoder.requires_grad_(False) or pass states=None"
            )
        alpha = model.config.distill_alpha
        with torch.no_grad():
            model.temp.clamp_(0.001, 0.5)
        temp = model.temp
        video = model.encode_video(frames)
        states = model.encode_text(ids, mask) if states is None else states
        v = model.video_embed(video)  # (B, E)
        t = model.text_embed(states, mask)  # (B, E)

        with torch.no_grad():
            if self.training:
                self.momentum_update()
            v_m = F.normalize(self.vision_proj_m(self.video_encoder_m(frames).video_cls), dim=-1)
            states_m = states if states is not None else self.text_encoder_m(ids, mask)
            t_m = F.normalize(self.text_proj_m(model.sentence(states_m, mask)), dim=-1)
            v_all = torch.cat([v_m.T, self.video_queue.clone()], dim=1)  # (E, B+Q)
            t_all = torch.cat([t_m.T, self.text_queue.clone()], dim=1)
            idx_all = torch.cat([pair_ids, self.idx_queue.clone()])
            targets = positive_targets(pair_ids, idx_all)
            v2t_targets = alpha * F.softmax(v_m @ t_all / temp, dim=1) + (1 - alpha) * targets
            t2v_targets = alpha * F.softmax(t_m @ v_all / temp, dim=1) + (1 - alpha) * targets

        sim_v2t = v @ t_all / temp  # (B, B+Q)
        sim_t2v = t @ v_all / temp
        losses = {
            "vtc": (soft_contrastive(sim_v2t, v2t_targets) + soft_contrastive(sim_t2v, t2v_targets))
            / 2
        }
        if self.training:
            self.enqueue(v_m, t_m, pair_ids)

        if w.fine:
            words = F.normalize(model.text_proj(states - model.text_center), dim=-1)  # (B, L, E)
            patches = F.normalize(model.vision_proj(video.patches), dim=-1)  # (B, T, N, E)
            word_mask = mask.bool().clone()
            word_mask[:, 0] = False  # the CLS token is not a word
            sim = fine_grained_similarity(words, word_mask, patches) / temp  # (B, B)
            inbatch = positive_targets(pair_ids, pair_ids)
            losses["fine"] = (soft_contrastive(sim, inbatch) + soft_contrastive(sim.T, inbatch)) / 2

        if w.vtm:
            n = self.vtm_batch or states.shape[0]
            losses["vtm"] = self.vtm_loss(
                states[:n],
                mask[:n],
                select_video(video, torch.arange(min(n, states.shape[0]))),
                sim_t2v[:n, :n],
                sim_v2t[:n, :n],
                pair_ids[:n],
            )

        if w.mlm:
            masked, labels = mask_tokens(ids, mask, model.tokenizer, model.config.mlm_probability)
            cross = model.fuse(model.encode_text(masked, mask), mask, video)
            logits = model.mlm_logits(cross)
            if (labels != -100).any():
                losses["mlm"] = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
            else:
                losses["mlm"] = logits.sum() * 0.0

        losses["loss"] = sum(getattr(w, k) * v for k, v in losses.items())
        return losses

    def vtm_loss(
        self,
        states: torch.Tensor,
        mask: torch.Tensor,
        video: VideoFeatures,
        sim_t2v: torch.Tensor,
        sim_v2t: torch.Tensor,
        pair_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Positives plus one hard negative per text and per video, drawn ~ softmax(sim)."""
        b = states.shape[0]
        with torch.no_grad():
            same = pair_ids[:, None] == pair_ids[None, :]
            w_t2v = F.softmax(sim_t2v[:, :b].float(), dim=1).masked_fill(same, 0)
            w_v2t = F.softmax(sim_v2t[:, :b].float(), dim=1).masked_fill(same, 0)
            w_t2v[w_t2v.sum(dim=1) == 0] = 1.0  # only positives in the batch: any will do
            w_v2t[w_v2t.sum(dim=1) == 0] = 1.0
            neg_video = torch.multinomial(w_t2v, 1).squeeze(1)  # (B,) a video for each text
            neg_text = torch.multinomial(w_v2t, 1).squeeze(1)  # (B,) a text for each video
        all_states = torch.cat([states, states, states[neg_text]])  # (3B, L, C)
        all_mask = torch.cat([mask, mask, mask[neg_text]])
        all_video = cat_video(video, select_video(video, neg_video), video)
        logits = self.model.vtm_logits(self.model.fuse(all_states, all_mask, all_video))
        labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).long()
        labels[b : 2 * b][pair_ids[neg_video] == pair_ids] = 1  # a sampled "negative" may match
        labels[2 * b :][pair_ids[neg_text] == pair_ids] = 1
        return F.cross_entropy(logits, labels)


def qa_loss(
    model: TWBert,
    frames: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor,
    answers: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Video QA fine-tuning: cross-entropy of the answer classifier on the fused CLS pair."""
    cross = model.fuse(model.encode_text(ids, mask), mask, model.encode_video(frames))
    logits = model.qa_logits(cross)
    loss = F.cross_entropy(logits, answers)
    return {"loss": loss, "qa": loss, "accuracy": (logits.argmax(-1) == answers).float().mean()}
