"""TSG training steps: cross-entropy with Noam warm-up, then self-critical sequence training.

SCST (Rennie et al. 2017, as TSG trains): sample ``k`` captions per graph, reward each with
CIDEr-D against the graph's references, baseline = mean reward of the *other* k-1 samples, and
minimise ``-(r - b) * log p(caption)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mugv.captioning._errors import ConfigError
from mugv.captioning.data import CaptionBatch
from mugv.captioning.decoding import sample
from mugv.captioning.metrics import CiderD
from mugv.captioning.model import TSG
from mugv.captioning.vocab import Vocabulary


def noam_lambda(d_model: int, warmup: int, factor: float = 1.0):
    """``lr(step) = factor * d^-0.5 * min(step^-0.5, step * warmup^-1.5)`` for ``LambdaLR``
    (with the optimizer's base lr 1)."""
    if warmup < 1:
        raise ConfigError(f"Noam warmup must be >= 1 step; got {warmup}")

    def lr(step: int) -> float:
        step = max(step, 1)
        return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)

    return lr


def xe_loss(model: TSG, batch: CaptionBatch, label_smoothing: float = 0.0) -> torch.Tensor:
    """Token-averaged cross-entropy of the reference caption (teacher forcing)."""
    logits, _ = model(batch.graphs, batch.tokens[:, :-1])  # (B, L, V)
    return F.cross_entropy(
        logits.flatten(0, 1),
        batch.tokens[:, 1:].flatten(),
        ignore_index=Vocabulary.pad_id,
        label_smoothing=label_smoothing,
    )


def sequence_logprob(model: TSG, batch: CaptionBatch, tokens: torch.Tensor, repeats: int):
    """Sum of log p over the words (and ``<eos>``) of ``tokens`` (B*repeats, L), with grad."""
    index = torch.arange(batch.graphs.batch_size, device=tokens.device).repeat_interleave(repeats)
    inputs = torch.cat([torch.full_like(tokens[:, :1], Vocabulary.bos_id), tokens[:, :-1]], 1)
    logits, _ = model(batch.graphs.index_select(index), inputs)  # (B*k, L, V)
    logp = logits.log_softmax(-1).gather(2, tokens[..., None])[..., 0]  # (B*k, L)
    return (logp * (tokens != Vocabulary.pad_id)).sum(dim=1)


def mean_of_others_advantage(reward: torch.Tensor) -> torch.Tensor:
    """``reward`` (B, k) -> ``r_i - mean_{j != i} r_j`` (B, k): each sample's baseline is the
    mean reward of the graph's other samples."""
    k = reward.shape[1]
    baseline = (reward.sum(dim=1, keepdim=True) - reward) / (k - 1)
    return reward - baseline


@dataclass
class SCSTStats:
    loss: torch.Tensor
    reward: float  # mean CIDEr-D of the samples


def scst_loss(
    model: TSG,
    batch: CaptionBatch,
    words: Vocabulary,
    cider: CiderD,
    *,
    num_samples: int = 5,
    generator: torch.Generator | None = None,
) -> SCSTStats:
    """Self-critical loss with the mean-of-others baseline over ``num_samples`` samples."""
    if num_samples < 2:
        raise ConfigError(f"SCST needs num_samples >= 2 for its baseline; got {num_samples}")
    drawn = sample(model, batch.graphs, num_samples=num_samples, generator=generator)
    k = num_samples
    gts, res = {}, {}
    for row in range(drawn.tokens.shape[0]):
        gts[row] = batch.references[row // k]
        res[row] = [" ".join(words.decode(drawn.tokens[row].tolist()))]
    _, rewards = cider.compute_score(gts, res)
    reward = torch.tensor(rewards, dtype=torch.float32, device=drawn.tokens.device).view(-1, k)
    advantage = mean_of_others_advantage(reward).view(-1)  # (B*k,)
    logp = sequence_logprob(model, batch, drawn.tokens, k)
    lengths = (drawn.tokens != Vocabulary.pad_id).sum(dim=1).clamp(min=1)
    loss = -(advantage * logp / lengths).mean()
    return SCSTStats(loss, float(reward.mean()))
