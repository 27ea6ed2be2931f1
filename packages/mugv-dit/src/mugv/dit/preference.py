"""Preference optimisation of MUGDiT: Diffusion-DPO for rectified flow, plus absolute labels.

MUG-V's last training stage learns from human labels of two kinds (SPEC "MUG-V training"):
pairwise comparisons and absolute correctness labels. This module turns both into losses on
the velocity-prediction model, next to a frozen reference model (the SFT checkpoint).

**Pairs: Diffusion-DPO** (Wallace et al. 2023, "Diffusion Model Alignment Using Direct
Preference Optimization", eq. 14), with the noise-prediction error replaced by the flow's
velocity error. Winner x_w and loser x_l are noised at the same t with the same eps; with
e(x) = mean-squared error of a model's velocity against v = x0 - eps over the generated frames,

    loss = -log sigmoid(-beta / 2 * [(e_theta(x_w) - e_ref(x_w)) - (e_theta(x_l) - e_ref(x_l))])

The bracket is the paper's ELBO-difference estimate of the log-likelihood ratio; `beta`
absorbs the paper's T * omega(lambda_t) and our mean over latent elements (so it is large,
thousands, as in diffusers' DPO recipe). Its gradient raises how much better the model fits the
winner than the reference does, relative to the loser. Ties carry no preference and are skipped.

**Absolute labels.** A correct video adds the plain flow loss (SFT on a good sample,
`sft_weight`). An incorrect one adds a bounded, KTO-style unlikelihood term (Ethayarajh et al.
2024, "KTO", with the reference point at 0; as in Diffusion-KTO, Li et al. 2024):
sigmoid(-beta / 2 * (e_theta(x) - e_ref(x))), the probability-like reward of the bad sample.
Maximising a flow error directly is unbounded and wrecks the model; this term saturates once
the model fits the bad sample clearly worse than the reference (its gradient vanishes), so
it moves the model away from failures only as far as the reference anchors.

**Draws.** Each error above is a one-sample estimate: one t and one eps per sample. The DPO
logit multiplies the small difference of four such estimates by beta, so with one draw it is
mostly noise (on the world demo model the per-step loss swings between 0.03 and 4). With
`draws = K`, every sample's error is the mean over K independent (t, eps) draws (winner and
loser still share each draw) before the sigmoid: a K-sample estimate of the ELBO difference,
at K times the step cost. (On the world demo model four draws did not raise DPO's gain: see
docs/packages/dit-posttraining.md.)

**Guidance.** The videos are sampled with classifier-free guidance, v_u + w (v_c - v_u), but
the terms above score the conditional velocity v_c alone, and DPO moves the null-text branch
v_u only as a side effect of the shared weights, which the sampler then amplifies w - 1 times.
With `guidance_scale = w`, every error (both models, every term) is that of the guided
velocity, computed from the conditional and the null-text branch in one batch at twice the
cost: the preference is fitted on the policy that made the videos. 1 (default) scores v_c.

The reference is either a separate frozen model (eval, no gradients) or, for a LoRA run, the
trained model itself with its adapters switched off (`adapters_disabled`), which costs no
extra memory. `DPOStep` is the `mugv.infra.Trainer` step function; the Trainer owns the
optimiser, the EMA (of the trainable weights: the adapters in a LoRA run) and checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mugv.dit.guidance import cfg_combine
from mugv.dit.lora import adapters_disabled
from mugv.dit.rectified_flow import FlowConfig, FlowError, RectifiedFlow
from mugv.infra.data import ShuffledBatches
from mugv.infra.parallel import DistInfo
from mugv.infra.trainer import Trainer, TrainerConfig

logger = logging.getLogger(__name__)

__all__ = [
    "DPOStep",
    "PreferenceConfig",
    "PreferenceLatents",
    "dpo_loss",
    "generate_pairs",
    "train_preference",
    "unlikelihood_loss",
]


@dataclass(frozen=True, kw_only=True)
class PreferenceConfig:
    """Weights of the three terms, (t, eps) draws averaged per sample (see the module
    docstring) and whether latent frame 0 is a given condition (i2v)."""

    beta: float = 2000.0
    sft_weight: float = 1.0
    unlikelihood_weight: float = 1.0
    draws: int = 1
    guidance_scale: float = 1.0
    condition_first_frame: bool = False

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise FlowError(f"PreferenceConfig.beta must be > 0 (e.g. 2000), got {self.beta}")
        for name in ("sft_weight", "unlikelihood_weight"):
            if getattr(self, name) < 0:
                raise FlowError(f"PreferenceConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not self.guidance_scale >= 1.0:
            raise FlowError(
                f"PreferenceConfig.guidance_scale must be >= 1 (1: the conditional velocity; "
                f"the sampler's CFG scale, e.g. 4.0, for the guided one), got "
                f"{self.guidance_scale}"
            )
        if not (isinstance(self.draws, int) and self.draws >= 1):
            raise FlowError(
                f"PreferenceConfig.draws must be an int >= 1 ((t, eps) draws per sample), got "
                f"{self.draws!r}"
            )


def dpo_loss(
    err_w: Tensor, err_l: Tensor, ref_err_w: Tensor, ref_err_l: Tensor, beta: float
) -> tuple[Tensor, Tensor]:
    """Per-pair Diffusion-DPO loss (B,) and the logit inside the sigmoid (B,).

    `err_*` are the trained model's and `ref_err_*` the reference's per-sample velocity MSE on
    the winner (w) and loser (l). The logit is positive when the model prefers the winner more
    than the reference does (its implicit reward margin).
    """
    logit = -0.5 * beta * ((err_w - ref_err_w) - (err_l - ref_err_l))
    return -F.logsigmoid(logit), logit


def unlikelihood_loss(err: Tensor, ref_err: Tensor, beta: float) -> Tensor:
    """Bounded unlikelihood (B,) of incorrect samples: sigmoid of their implicit reward,
    sigmoid(-beta / 2 * (err - ref_err)), in (0, 1); it falls as the model fits them worse."""
    return torch.sigmoid(-0.5 * beta * (err - ref_err))


def _mean_over_draws(err: Tensor, draws: int, groups: int = 1) -> Tensor:
    """Per-sample errors (groups * draws * B,) -> their means over the draws (groups * B,).

    Each group (the winners, then the losers of a pair batch) is stacked draw-major:
    ``[draw 0 of samples 0..B-1, draw 1 of samples 0..B-1, ...]``.
    """
    return err.view(groups, draws, -1).mean(1).reshape(-1)


def _velocity_error(pred: Tensor, target: Tensor, loss_mask: Tensor) -> Tensor:
    """Per-sample MSE (B,) over the frames where `loss_mask` (B, T) is True, in at least
    float32 (float64 stays float64: DPO differences of two models' errors need the digits)."""
    dtype = torch.promote_types(pred.dtype, torch.float32)
    frame_err = (pred.to(dtype) - target.to(dtype)).pow(2).mean(dim=(1, 3, 4))  # (B, T)
    weight = loss_mask.to(dtype)
    return (frame_err * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1)


class PreferenceLatents:
    """Latents for preference training: pairs (winner, loser) and single labelled samples.

    pairs: `latents_w`, `latents_l` (N, C, T, h, w) with per-pair text features (L_i, D);
    singles: `latents` (M, C, T, h, w), per-item text features and `correct` (M,) bool.
    Either part may be empty (None). `height`/`width` are the clips' pixel size (flow shift).
    """

    def __init__(
        self,
        *,
        height: int,
        width: int,
        fps: float,
        latents_w: Tensor | None = None,
        latents_l: Tensor | None = None,
        pair_texts: Sequence[Tensor] = (),
        latents: Tensor | None = None,
        texts: Sequence[Tensor] = (),
        correct: Tensor | Sequence[bool] | None = None,
    ) -> None:
        if (latents_w is None) != (latents_l is None):
            raise FlowError("give both latents_w and latents_l (winners and losers), or neither")
        if latents_w is not None:
            if latents_w.shape != latents_l.shape or latents_w.dim() != 5:
                raise FlowError(
                    f"latents_w {tuple(latents_w.shape)} and latents_l {tuple(latents_l.shape)} "
                    "must be equal-shaped (N, C, T, h, w)"
                )
            if len(pair_texts) != latents_w.shape[0]:
                raise FlowError(
                    f"got {latents_w.shape[0]} pairs but {len(pair_texts)} pair_texts; one per pair"
                )
        if (latents is None) != (correct is None):
            raise FlowError("give both latents and correct (single labelled samples), or neither")
        if latents is not None:
            correct = torch.as_tensor(correct, dtype=torch.bool)
            if latents.dim() != 5 or correct.shape != (latents.shape[0],):
                raise FlowError(
                    f"latents must be (M, C, T, h, w) with correct (M,), got "
                    f"{tuple(latents.shape)} and {tuple(correct.shape)}"
                )
            if len(texts) != latents.shape[0]:
                raise FlowError(f"got {latents.shape[0]} singles but {len(texts)} texts")
        if latents_w is None and latents is None:
            raise FlowError("PreferenceLatents holds no pair and no labelled sample")
        self.height, self.width, self.fps = height, width, float(fps)
        self.latents_w, self.latents_l, self.pair_texts = latents_w, latents_l, list(pair_texts)
        self.latents, self.texts, self.correct = latents, list(texts), correct

    @property
    def num_pairs(self) -> int:
        return 0 if self.latents_w is None else self.latents_w.shape[0]

    @property
    def num_singles(self) -> int:
        return 0 if self.latents is None else self.latents.shape[0]

    @classmethod
    @torch.no_grad()
    def from_labels(
        cls,
        labels: Sequence[Any],
        codec: Any,
        text_encoder: Any,
        *,
        height: int,
        width: int,
        batch_size: int = 8,
    ) -> PreferenceLatents:
        """Encodes the videos of `mugv.data.preference` labels (PreferencePair and
        CorrectnessLabel; ties skipped) with `codec` and their prompts with `text_encoder`."""
        from mugv.data.preference import CorrectnessLabel, PreferencePair
        from mugv.data.video import read_video

        fps: list[float] = []

        def encode(paths: list[str]) -> Tensor:
            out = []
            for start in range(0, len(paths), batch_size):
                clips = [
                    read_video(p, size=(height, width)) for p in paths[start : start + batch_size]
                ]
                fps.extend(c.fps for c in clips)
                video = torch.stack([torch.from_numpy(c.frames) for c in clips])  # (B, T, H, W, 3)
                video = video.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # (B, 3, T, H, W)
                out.append(codec.encode(video).float().cpu())
            return torch.cat(out)

        def text_features(prompts: list[str]) -> list[Tensor]:
            if not prompts:
                return []
            tokens, mask = text_encoder.encode(prompts)
            return [tokens[i, mask[i]].float().cpu() for i in range(len(prompts))]

        pairs = [p for p in labels if isinstance(p, PreferencePair) and p.choice != "tie"]
        singles = [s for s in labels if isinstance(s, CorrectnessLabel)]
        unknown = [x for x in labels if not isinstance(x, (PreferencePair, CorrectnessLabel))]
        if unknown:
            raise FlowError(
                f"labels hold a {type(unknown[0]).__name__}; pass PreferencePair and "
                "CorrectnessLabel items (mugv.data.preference.read_labels)"
            )
        winners = [p.video_a if p.choice == "a" else p.video_b for p in pairs]
        losers = [p.video_b if p.choice == "a" else p.video_a for p in pairs]
        kwargs: dict[str, Any] = {}
        if pairs:
            kwargs |= dict(
                latents_w=encode(winners),
                latents_l=encode(losers),
                pair_texts=text_features([p.prompt for p in pairs]),
            )
        if singles:
            kwargs |= dict(
                latents=encode([s.video for s in singles]),
                texts=text_features([s.prompt for s in singles]),
                correct=[s.correct for s in singles],
            )
        skipped = len(labels) - len(pairs) - len(singles)
        logger.info(
            "%d pairs, %d labelled samples (%d ties skipped)", len(pairs), len(singles), skipped
        )
        if not fps:
            raise FlowError("labels hold no pair with a preference and no correctness label")
        return cls(height=height, width=width, fps=sum(fps) / len(fps), **kwargs)


def _pad_texts(texts: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    length = max(int(t.shape[0]) for t in texts)
    text = torch.zeros(len(texts), length, texts[0].shape[1])  # (B, L, D)
    mask = torch.zeros(len(texts), length, dtype=torch.bool)  # (B, L)
    for i, t in enumerate(texts):
        text[i, : t.shape[0]], mask[i, : t.shape[0]] = t, True
    return text, mask


class _PreferenceBatches:
    """Each step: `pair_batch` pairs and `single_batch` labelled samples, each part reshuffled
    per epoch and DP-sharded; an epoch is one pass over the larger part. Resumable."""

    def __init__(self, data: PreferenceLatents, pair_batch: int, single_batch: int, **shard):
        self.data = data
        self.parts = {}
        if data.num_pairs and pair_batch:
            self.parts["pairs"] = ShuffledBatches(data.num_pairs, pair_batch, self._pairs, **shard)
        if data.num_singles and single_batch:
            self.parts["singles"] = ShuffledBatches(
                data.num_singles, single_batch, self._singles, **shard
            )
        if not self.parts:
            raise FlowError("no batch to draw: the data has no pairs/singles for the batch sizes")
        self.lead = max(self.parts, key=lambda k: self.parts[k].batches_per_epoch)

    def _pairs(self, idx: list[int]) -> dict[str, Tensor]:
        text, mask = _pad_texts([self.data.pair_texts[i] for i in idx])
        return {
            "latents_w": self.data.latents_w[idx],
            "latents_l": self.data.latents_l[idx],
            "text": text,
            "text_mask": mask,
        }

    def _singles(self, idx: list[int]) -> dict[str, Tensor]:
        text, mask = _pad_texts([self.data.texts[i] for i in idx])
        return {
            "latents": self.data.latents[idx],
            "correct": self.data.correct[idx],
            "text": text,
            "text_mask": mask,
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        iters = {k: iter(v) for k, v in self.parts.items()}
        while True:
            batch: dict[str, Any] = {
                "fps": self.data.fps,
                "height": self.data.height,
                "width": self.data.width,
            }
            for name in self.parts:
                try:
                    batch[name] = next(iters[name])
                except StopIteration:
                    if name == self.lead:
                        return
                    iters[name] = iter(self.parts[name])  # the smaller part cycles
                    batch[name] = next(iters[name])
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {
            f"{k}.{f}": v for k, part in self.parts.items() for f, v in part.state_dict().items()
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        for name, part in self.parts.items():
            part.load_state_dict({f: state[f"{name}.{f}"] for f in ("epoch", "index")})


class DPOStep:
    """`step_fn(model, batch) -> (loss, metrics)` for `mugv.infra.Trainer`.

    `reference`: the frozen reference model (put in eval, gradients off), or None to use
    `model` with its LoRA adapters switched off. Randomness (t, noise) comes from the global
    torch RNG, which the Trainer seeds and checkpoints.
    """

    def __init__(
        self,
        reference: nn.Module | None = None,
        config: PreferenceConfig | None = None,
        flow: RectifiedFlow | None = None,
    ) -> None:
        self.config = config or PreferenceConfig()
        self.flow = flow or RectifiedFlow(FlowConfig())
        self.reference = reference
        if reference is not None:
            reference.eval().requires_grad_(False)

    def _reference(self, model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
        if self.reference is None:
            return adapters_disabled(model)
        if self.reference is model:
            raise FlowError("DPOStep: the reference must be a separate frozen copy of the model")
        return contextlib.nullcontext(self.reference)

    def draw(self, x0: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """t (B,) from the flow's shifted logit-normal and eps like x0 (B, C, T, h, w)."""
        ratio = self.flow.ratio(size[0], size[1], x0.shape[2])
        t = self.flow.sample_t(x0.shape[0], ratio).to(x0.device, x0.dtype)
        return t, torch.randn_like(x0)

    def errors(
        self,
        model: nn.Module,
        x0: Tensor,
        t: Tensor,
        noise: Tensor,
        text: Tensor,
        text_mask: Tensor,
        fps: float,
    ) -> tuple[Tensor, Tensor]:
        """Per-sample velocity MSE (B,) of `model` (with gradients) and of the reference at
        x_t = (1 - t) x0 + t eps; a conditioning frame (frame 0 for i2v) is given clean and
        not counted, as in the flow loss."""
        batch, _, frames = x0.shape[:3]
        device, dtype = x0.device, x0.dtype
        cond = torch.zeros(batch, frames, dtype=torch.bool, device=device)
        if self.config.condition_first_frame:
            cond[:, 0] = True
        x_t = torch.where(cond.view(batch, 1, frames, 1, 1), x0, self.flow.add_noise(x0, noise, t))
        args = (x_t, t, text, text_mask, torch.full((batch,), fps, device=device, dtype=dtype))
        kwargs = {"cond_mask": cond if cond.any() else None}
        target = self.flow.velocity(x0, noise)
        err = _velocity_error(self._velocity(model, args, kwargs), target, ~cond)
        with torch.no_grad(), self._reference(model) as ref:
            ref_err = _velocity_error(self._velocity(ref, args, kwargs), target, ~cond)
        return err, ref_err

    def _velocity(self, model: nn.Module, args: tuple, kwargs: dict[str, Any]) -> Tensor:
        """The model's velocity, or with `guidance_scale` > 1 the CFG-guided velocity the
        sampler follows: the conditional and the null-text branch in one batch."""
        scale = self.config.guidance_scale
        if scale == 1.0:
            return model(*args, **kwargs)
        batch = args[0].shape[0]
        doubled = tuple(a.repeat(2, *[1] * (a.dim() - 1)) for a in args)
        cond = kwargs["cond_mask"]
        drop = torch.arange(2 * batch, device=args[0].device) >= batch
        v = model(*doubled, cond_mask=None if cond is None else cond.repeat(2, 1), drop_text=drop)
        return cfg_combine(v[:batch], v[batch:], scale)

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
        cfg = self.config
        size = (int(batch["height"]), int(batch["width"]))
        fps = float(batch["fps"])
        loss = torch.zeros((), device=device, dtype=torch.promote_types(dtype, torch.float32))
        logs: dict[str, float] = {}
        k = cfg.draws
        if "pairs" in batch:
            part = batch["pairs"]
            n = part["latents_w"].shape[0]
            # draw d of pair i sits at row d * n + i; the loser rows repeat the winner rows'
            x_w = part["latents_w"].to(device, dtype).repeat(k, 1, 1, 1, 1)
            x0 = torch.cat([x_w, part["latents_l"].to(device, dtype).repeat(k, 1, 1, 1, 1)])
            t, noise = self.draw(x_w, size)  # one t and eps per (pair, draw), shared by w and l
            err, ref_err = self.errors(
                model,
                x0,
                t.repeat(2),
                noise.repeat(2, 1, 1, 1, 1),
                part["text"].to(device, dtype).repeat(2 * k, 1, 1),
                part["text_mask"].to(device).repeat(2 * k, 1),
                fps,
            )
            err, ref_err = (_mean_over_draws(e, k, groups=2) for e in (err, ref_err))  # (2n,)
            pair_loss, logit = dpo_loss(err[:n], err[n:], ref_err[:n], ref_err[n:], cfg.beta)
            loss = loss + pair_loss.mean()
            logs["loss/dpo"] = pair_loss.mean().item()
            logs["dpo/accuracy"] = (logit > 0).float().mean().item()
            logs["dpo/margin"] = logit.mean().item()
        if "singles" in batch:
            part = batch["singles"]
            x0 = part["latents"].to(device, dtype).repeat(k, 1, 1, 1, 1)
            correct = part["correct"].to(device)
            t, noise = self.draw(x0, size)
            text = part["text"].to(device, dtype).repeat(k, 1, 1)
            mask = part["text_mask"].to(device).repeat(k, 1)
            err, ref_err = self.errors(model, x0, t, noise, text, mask, fps)
            err, ref_err = (_mean_over_draws(e, k) for e in (err, ref_err))
            zero = err.sum() * 0  # keeps the graph when one kind is absent from the batch
            sft = err[correct].mean() if correct.any() else zero
            ul = unlikelihood_loss(err[~correct], ref_err[~correct], cfg.beta)
            bad = ul.mean() if ul.numel() else zero
            loss = loss + cfg.sft_weight * sft + cfg.unlikelihood_weight * bad
            logs["loss/sft"], logs["loss/unlikelihood"] = sft.item(), bad.item()
        return loss, logs


def train_preference(
    model: nn.Module,
    data: PreferenceLatents,
    config: TrainerConfig,
    *,
    info: DistInfo,
    reference: nn.Module | None = None,
    preference: PreferenceConfig | None = None,
    flow: RectifiedFlow | None = None,
    pair_batch: int = 8,
    single_batch: int = 8,
    seed: int = 0,
    model_config: dict[str, Any] | None = None,
) -> Trainer:
    """A `Trainer` for preference optimisation of `model`; call `.fit()`.

    Full fine-tuning: pass `reference`, a frozen copy of the SFT model. LoRA: `apply_lora` to
    `model` first and leave `reference=None` (the adapters-off model is the reference).
    """
    batches = _PreferenceBatches(
        data,
        pair_batch,
        single_batch,
        seed=seed,
        data_rank=info.data_rank,
        data_size=info.data_size,
    )
    return Trainer(
        model,
        DPOStep(reference, preference, flow),
        batches,
        config,
        info=info,
        model_config=model_config,
    )


def generate_pairs(
    pipeline: Any,
    prompts: Sequence[str],
    out_dir: str | Path,
    config: Any,
    *,
    crf: int = 18,
) -> tuple[list[Path], list[Path]]:
    """Two videos per prompt from `pipeline` (a `mugv.dit.Pipeline`) with different seeds:
    `out_dir/a/NNN.mp4` (seeds `config.seed + i`) and `out_dir/b/NNN.mp4` (seeds
    `config.seed + len(prompts) + i`), ready for `mugv.data.preference.oracle_labels`."""
    from dataclasses import replace

    out = Path(out_dir)
    videos_a = pipeline.generate_mp4(prompts, out / "a", config=config, crf=crf)
    other = replace(config, seed=config.seed + len(prompts))
    videos_b = pipeline.generate_mp4(prompts, out / "b", config=other, crf=crf)
    return videos_a, videos_b
