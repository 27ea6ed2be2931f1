"""MUGDiT: the MUG-V diffusion transformer as a Megatron-Core `VisionModule` (SPEC "MUG-V DiT").

    x (B, 24, T, H, W) -> patch (1, 2, 2) tokens -> [start, tokens, end] -> depth x block ->
    final adaLN layer -> unpatchify -> velocity (B, 24, T, H, W)

Block (PixArt-alpha / Open-Sora lineage): adaLN LayerNorm -> 3D self-attention (QK-RMSNorm,
3D RoPE) -> gated residual; affine LayerNorm -> cross-attention to text -> residual; adaLN
LayerNorm -> MLP -> gated residual. adaLN-single: one `t_block` on t_emb + fps_emb, plus a
6 x d table per block; tokens of conditioning frames use the t = 0 modulation.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import einops
import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.models.common.vision_module.vision_module import VisionModule
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import ModuleSpec, build_module
from megatron.core.transformer.transformer_config import TransformerConfig
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mugv.dit.adaln import modulate, token_modulation
from mugv.dit.attention import Attention, AttentionSubmodules, _column, _row
from mugv.dit.config import DiTConfig, DiTError
from mugv.dit.embedders import CaptionEmbedder, PatchEmbed3D, TimestepEmbedder
from mugv.dit.flops import dit_forward_flops
from mugv.dit.parallel import SequenceSharding
from mugv.dit.pretrained import PretrainedMixin
from mugv.dit.rope3d import rope_angles, rope_rotation, video_positions


@dataclasses.dataclass
class MUGDiTLayerSubmodules:
    self_attention: AttentionSubmodules
    cross_attention: AttentionSubmodules
    linear_fc1: ModuleSpec | type
    linear_fc2: ModuleSpec | type


class MLP(MegatronModule):
    """d -> 4d (column-parallel) -> GELU(tanh) -> d (row-parallel)."""

    def __init__(self, config: TransformerConfig, fc1, fc2, sharding: SequenceSharding):
        super().__init__(config=config)
        self.sharding = sharding
        self.linear_fc1 = _column(fc1, config, config.hidden_size, config.ffn_hidden_size, "fc1")
        self.linear_fc2 = _row(fc2, config, config.ffn_hidden_size, config.hidden_size, "fc2")

    def forward(self, x: Tensor) -> Tensor:
        h, _ = self.linear_fc1(self.sharding.sp_gather(x))  # (s_cp, B, 4d/tp)
        h, _ = self.linear_fc2(F.gelu(h, approximate="tanh"))  # (s_cp, B, d)
        return self.sharding.sp_split(h)


class MUGDiTLayer(MegatronModule):
    """One MUGDiT block on this rank's tokens x (s, B, d)."""

    def __init__(
        self,
        config: TransformerConfig,
        submodules: MUGDiTLayerSubmodules,
        layer_number: int,
        sharding: SequenceSharding,
        eps: float,
    ):
        super().__init__(config=config)
        d = config.hidden_size
        self.eps, self.sharding = eps, sharding
        self.layer_number = layer_number  # global, 1-based: names the block in checkpoints
        self.self_attention = Attention(
            config, submodules.self_attention, layer_number, sharding, cross=False, eps=eps
        )
        self.cross_attn_norm = nn.LayerNorm(d, eps=eps)
        self.cross_attention = Attention(
            config, submodules.cross_attention, layer_number, sharding, cross=True, eps=eps
        )
        self.mlp = MLP(config, submodules.linear_fc1, submodules.linear_fc2, sharding)
        self.scale_shift_table = nn.Parameter(torch.randn(6, d) / d**0.5)

    def forward(
        self,
        x: Tensor,
        t_mod: Tensor,
        t0_mod: Tensor | None,
        cond: Tensor | None,
        rope: Tensor,
        self_mask: Tensor | None,
        text: Tensor,
        text_mask: Tensor | None,
    ) -> Tensor:
        shard, d = self.sharding, x.shape[-1]
        table = shard.tp_shared(self.scale_shift_table, sharded_input=False)
        mod = token_modulation(table, t_mod, t0_mod, cond)  # 6 x (s or 1, B, d)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        h = modulate(F.layer_norm(x, (d,), eps=self.eps), shift_msa, scale_msa)
        x = x + gate_msa * self.self_attention(h, rope=rope, mask=self_mask)
        weight = shard.tp_shared(self.cross_attn_norm.weight, sharded_input=False)
        bias = shard.tp_shared(self.cross_attn_norm.bias, sharded_input=False)
        h = F.layer_norm(x, (d,), weight, bias, self.eps)
        x = x + self.cross_attention(h, mask=text_mask, text=text)
        h = modulate(F.layer_norm(x, (d,), eps=self.eps), shift_mlp, scale_mlp)
        return x + gate_mlp * self.mlp(h)


class FinalLayer(nn.Module):
    """LayerNorm (no affine) modulated by (2 x d table + t_emb) -> Linear to patch x channels."""

    def __init__(self, hidden_size: int, out_features: int, eps: float):
        super().__init__()
        self.eps = eps
        self.linear = nn.Linear(hidden_size, out_features)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden_size) / hidden_size**0.5)

    def forward(
        self, x: Tensor, t_emb: Tensor, t0_emb: Tensor | None, cond: Tensor | None
    ) -> Tensor:
        t0 = None if t0_emb is None else t0_emb.repeat(1, 2)
        shift, scale = token_modulation(self.scale_shift_table, t_emb.repeat(1, 2), t0, cond)
        x = modulate(F.layer_norm(x, x.shape[-1:], eps=self.eps), shift, scale)
        return self.linear(x)  # (S, B, patch volume * C)


def real_tokens_first(real: Tensor, length: int, padded: int) -> Tensor:
    """(B, S_pad) order that moves each sample's padding frames behind its end token.

    The natural sequence is [start, N video tokens, end, pad]; a sample with only `real[b]`
    real video tokens becomes [start, its real tokens, end, its padding tokens, pad], so every
    sample's ignored keys form a suffix (what TransformerEngine's padding masks can express).
    `sequence.gather(1, order)` reorders; identity for a sample whose tokens are all real.
    """
    i = torch.arange(padded, device=real.device)[None]  # (1, S_pad)
    n = real[:, None]  # (B, 1)
    end = length - 1
    return torch.where(i <= n, i, torch.where(i == n + 1, end, torch.where(i <= end, i - 1, i)))


def megatron_config(config: DiTConfig, params_dtype: torch.dtype) -> TransformerConfig:
    """The Megatron `TransformerConfig` of a MUGDiT on the current parallel state.

    Sequence and context parallel communication is done by `SequenceSharding`, so the spec's
    modules are built with SP off and CP = 1 (they see this CP rank's gathered tokens).
    """
    if not parallel_state.model_parallel_is_initialized():
        raise DiTError(
            "MUGDiT needs Megatron-Core parallel state: call mugv.infra.init_distributed(...) "
            "(torchrun) or build inside `with mugv.infra.single_process():`"
        )
    xavier = nn.init.xavier_uniform_
    return TransformerConfig(
        num_layers=config.depth,
        hidden_size=config.hidden_size,
        num_attention_heads=config.num_heads,
        kv_channels=config.head_dim,
        ffn_hidden_size=config.mlp_hidden_size,
        tensor_model_parallel_size=parallel_state.get_tensor_model_parallel_world_size(),
        pipeline_model_parallel_size=parallel_state.get_pipeline_model_parallel_world_size(),
        pipeline_dtype=params_dtype,
        params_dtype=params_dtype,
        use_cpu_initialization=True,  # same initial weights for every TP size and device
        init_method=xavier,
        output_layer_init_method=xavier,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )


class MUGDiT(PretrainedMixin, VisionModule):
    """The MUG-V DiT on this rank: its pipeline stage's blocks, its heads and tokens.

    `pre_process`/`post_process` (default: from the pipeline rank) say whether this stage
    embeds the latents and whether it runs the final layer; a later stage takes its hidden
    states from `set_input_tensor`. The conditioning embedders (t, fps, text) are replicated
    on every stage: their parameters carry Megatron's `pipeline_parallel` mark and the config
    `has_cond_embedder`, so the Trainer's data-parallel layer (plain or Megatron's
    `finalize_model_grads`) sums their gradients over the pipeline group.
    """

    def __init__(
        self,
        config: DiTConfig,
        *,
        spec: ModuleSpec | None = None,
        sequence_parallel: bool = False,
        pre_process: bool | None = None,
        post_process: bool | None = None,
        params_dtype: torch.dtype = torch.float32,
    ):
        from mugv.dit.specs import default_spec

        mcfg = megatron_config(config, params_dtype)
        super().__init__(config=mcfg)
        self.dit = config
        self.sharding = SequenceSharding.from_parallel_state(sequence_parallel)
        pp, pp_rank = (
            mcfg.pipeline_model_parallel_size,
            parallel_state.get_pipeline_model_parallel_rank(),
        )
        if config.depth % pp:
            raise DiTError(
                f"DiTConfig.depth={config.depth} is not divisible by {pp} pipeline stages"
            )
        self.pre_process = pp_rank == 0 if pre_process is None else pre_process
        self.post_process = pp_rank == pp - 1 if post_process is None else post_process
        per_stage = config.depth // pp
        self.layer_offset = pp_rank * per_stage
        d = config.hidden_size
        if self.pre_process:
            self.x_embedder = PatchEmbed3D(config.patch_size, config.in_channels, d)
            self.start_token = nn.Parameter(torch.randn(d) / d**0.5)
            self.end_token = nn.Parameter(torch.randn(d) / d**0.5)
        self.t_embedder = TimestepEmbedder(d, config.freq_dim)
        self.fps_embedder = TimestepEmbedder(d, config.freq_dim)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.y_embedder = CaptionEmbedder(config.text_dim, d, config.text_len, config.norm_eps)
        for embedder in (self.t_embedder, self.fps_embedder, self.t_block, self.y_embedder):
            for param in embedder.parameters():
                param.pipeline_parallel = True  # replicated on every stage
        mcfg.has_cond_embedder = True  # read by Megatron's finalize_model_grads
        spec = spec or default_spec()
        self.blocks = nn.ModuleList(
            build_module(
                spec,
                config=mcfg,
                layer_number=self.layer_offset + i + 1,
                sharding=self.sharding,
                eps=config.norm_eps,
            )
            for i in range(per_stage)
        )
        if self.post_process:
            out = config.patch_volume * config.in_channels
            self.final_layer = FinalLayer(d, out, config.norm_eps)
        self._init_plain_weights()
        self.to(params_dtype)
        self.input_tensor: Tensor | None = None
        self._static_calls = False  # set by `compile`: the blocks meet one call signature

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """torch.compile each transformer block in place (regional compilation); the
        embedders, token assembly and final layer stay eager.

        The blocks share one compiled graph (one code object, parameters as graph inputs), so
        a cold start compiles one block instead of the whole unrolled model: on two Zen 4 cores
        ~30 s instead of ~75 s, plus ~45 s for each new call signature the whole-model graph
        met. The forward then hands the blocks the same arguments on every call of a kind:
        the padding mask whenever `num_frames` is given and the text mask always (each the
        same output as leaving it out when nothing is masked).
        """
        self._static_calls = True
        for block in self.blocks:
            block.compile(*args, **kwargs)

    def _init_plain_weights(self) -> None:
        """DiT/PixArt init of the non-Megatron modules; the untrained model predicts 0."""
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Conv3d)) and not name.startswith("blocks"):
                nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
                nn.init.zeros_(module.bias)
        for mlp in (self.t_embedder.mlp, self.fps_embedder.mlp):
            nn.init.normal_(mlp[0].weight, std=0.02)
            nn.init.normal_(mlp[2].weight, std=0.02)
        nn.init.normal_(self.t_block[1].weight, std=0.02)
        if self.post_process:
            nn.init.zeros_(self.final_layer.linear.weight)

    def set_input_tensor(self, input_tensor: Tensor | list[Tensor] | None) -> None:
        """Hidden states (s, B, d) from the previous pipeline stage."""
        if isinstance(input_tensor, (list, tuple)):
            input_tensor = input_tensor[0]
        self.input_tensor = input_tensor

    def flops_per_sample(self, T: int, H: int, W: int, L: int) -> float:
        """Forward FLOPs of one sample of T x H x W latents and L text tokens (whole model,
        all ranks; recomputation not counted). Training ~ 3x this."""
        return dit_forward_flops(self.dit, T, H, W, L)

    def _check(
        self, x, timestep, text, text_mask, fps, cond_mask, frame_index, drop_text, num_frames
    ):
        cfg = self.dit
        if x.dim() != 5 or x.shape[1] != cfg.in_channels:
            raise DiTError(
                f"x must be (B, {cfg.in_channels}, T, H, W) latents, got {tuple(x.shape)}"
            )
        b, _, t, h, w = x.shape
        for size, p, name in zip((t, h, w), cfg.patch_size, "THW"):
            if size % p:
                raise DiTError(
                    f"x: {name}={size} is not divisible by the patch size {p}: crop or pad"
                )
        expected = {
            "timestep": (timestep, (b,)),
            "fps": (fps, (b,)),
            "text_mask": (text_mask, (b, text.shape[1])),
            "cond_mask": (cond_mask, (b, t)),
            "frame_index": (frame_index, (b, t)),
            "drop_text": (drop_text, (b,)),
            "num_frames": (num_frames, (b,)),
        }
        for name, (value, shape) in expected.items():
            if value is not None and tuple(value.shape) != shape:
                raise DiTError(
                    f"{name} must have shape {shape} for x {tuple(x.shape)}, got {tuple(value.shape)}"
                )
        if text.dim() != 3 or text.shape[0] != b or text.shape[2] != cfg.text_dim:
            raise DiTError(
                f"text must be (B={b}, L, text_dim={cfg.text_dim}), got {tuple(text.shape)}"
            )
        # reading values back would split a torch.compile graph: compiled, only shapes are checked
        if (
            num_frames is not None
            and not torch.compiler.is_compiling()
            and (
                bool(((num_frames < 1) | (num_frames > t)).any())
                or bool((num_frames % cfg.patch_size[0]).any())
            )
        ):
            raise DiTError(
                f"num_frames must count 1..{t} real frames per sample, in whole temporal "
                f"patches of {cfg.patch_size[0]}; got {num_frames.tolist()}"
            )

    def forward(
        self,
        x: Tensor,
        timestep: Tensor,
        text: Tensor,
        text_mask: Tensor,
        fps: Tensor,
        cond_mask: Tensor | None = None,
        frame_index: Tensor | None = None,
        drop_text: Tensor | None = None,
        num_frames: Tensor | None = None,
    ) -> Tensor:
        """Velocity (B, C, T, H, W); on a non-final pipeline stage, hidden states (s, B, d).

        timestep: (B,) rectified-flow t in [0, 1], embedded as t * `timestep_scale`.
        num_frames: (B,) real latent frames per sample (default: all T). The frames after them
        are padding, so clips of different lengths (an image among videos) share one forward:
        no real token attends to them, the end token follows the last real frame, and their
        velocity is 0. Each sample gives the output it would give alone, cropped.
        """
        self._check(
            x, timestep, text, text_mask, fps, cond_mask, frame_index, drop_text, num_frames
        )
        cfg, shard = self.dit, self.sharding
        pt, ph, pw = cfg.patch_size
        b, _, t, h, w = x.shape
        tt, ht, wt = t // pt, h // ph, w // pw
        dtype = self.t_block[1].weight.dtype
        if frame_index is None:
            frame_index = torch.arange(t, device=x.device).expand(b, t)
        fps_emb = self.fps_embedder(fps)
        t_emb = self.t_embedder(timestep * cfg.timestep_scale) + fps_emb  # (B, d)
        t_mod, t0_emb, t0_mod, cond = self.t_block(t_emb), None, None, None  # (B, 6d)
        length = tt * ht * wt + 2
        padded = math.ceil(length / shard.pad_multiple) * shard.pad_multiple
        if num_frames is not None and (self._static_calls or bool((num_frames < t).any())):
            real = (num_frames.to(x.device) // pt) * ht * wt  # (B,) real video tokens
            order = real_tokens_first(real, length, padded)  # (B, S_pad)
        else:
            real, order = None, None
        if cond_mask is not None:
            t0_emb = self.t_embedder(torch.zeros_like(timestep)) + fps_emb
            t0_mod = self.t_block(t0_emb)
            cond = cond_mask[:, ::pt].bool().repeat_interleave(ht * wt, dim=1)  # (B, N)
            cond = F.pad(cond, (1, padded - length + 1))  # (B, S_pad)
            cond = (cond if order is None else cond.gather(1, order)).T  # (S_pad, B)
        y, y_mask = self.y_embedder(text.to(dtype), text_mask.bool(), drop_text)  # (B, L', d)
        # compiled, the mask always goes in: reading it back would split the graph (whole
        # model) or give the blocks a second signature (`compile`)
        full = not (torch.compiler.is_compiling() or self._static_calls) and bool(y_mask.all())
        text_attn_mask = None if full else ~y_mask[:, None, None, :]
        frames = None if real is None else num_frames.to(x.device) // pt
        positions = video_positions(frame_index[:, ::pt] // pt, ht, wt, cfg.max_frames, frames)
        positions = F.pad(positions, (0, 0, 0, padded - length))  # (B, S_pad, 3)
        if order is not None:
            positions = positions.gather(1, order[..., None].expand(-1, -1, 3))
        cp_idx = shard.cp_indices(padded).to(x.device)
        angles = rope_angles(
            positions[:, cp_idx].transpose(0, 1)[:, :, None, None], cfg.head_dim, cfg.rope_theta
        )  # (s_cp, B, 1, 1, D/2): broadcast over heads and (q, k)
        rope = rope_rotation(angles, dtype)
        self_mask = None  # (B, 1, 1, S_pad) True = ignored key: each sample's tail
        if real is not None:
            keys = torch.arange(padded, device=x.device)
            self_mask = (keys >= real[:, None] + 2).view(b, 1, 1, padded)
        elif padded > length:
            keys = torch.arange(padded, device=x.device) >= length
            self_mask = keys.view(1, 1, 1, padded).expand(b, -1, -1, -1)
        if self.pre_process:
            tokens = self.x_embedder(x.to(dtype))  # (B, N, d)
            ends = [self.start_token.expand(b, 1, -1), tokens, self.end_token.expand(b, 1, -1)]
            seq = F.pad(torch.cat(ends, dim=1), (0, 0, 0, padded - length))  # (B, S_pad, d)
            if order is not None:
                seq = seq.gather(1, order[..., None].expand_as(seq))
            hidden = shard.shard(seq.transpose(0, 1).contiguous())  # (s, B, d)
        else:
            hidden = self.input_tensor
        local_cond = None if cond is None else shard.shard_constant(cond)
        args = (
            shard.tp_shared(t_mod, sharded_input=False),
            None if t0_mod is None else shard.tp_shared(t0_mod, sharded_input=False),
            local_cond,
            rope,
            self_mask,
            y.transpose(0, 1).contiguous(),  # (L, B, d)
            text_attn_mask,
        )
        for block in self.blocks:
            if cfg.recompute and torch.is_grad_enabled():
                hidden = checkpoint(block, hidden, *args, use_reentrant=False)
            else:
                hidden = block(hidden, *args)
        if not self.post_process:
            return hidden
        hidden = shard.unshard(hidden)  # (S_pad, B, d)
        out = self.final_layer(hidden, t_emb, t0_emb, cond).transpose(0, 1)  # (B, S_pad, pv*C)
        if order is not None:  # back to [start, tokens, end, pad]; padding frames give 0
            out = out.gather(1, order.argsort(dim=1)[..., None].expand_as(out))
            keep = torch.arange(padded, device=x.device) <= real[:, None]
            out = out * keep[..., None].to(out.dtype)
        out = out[:, 1 : length - 1]  # (B, N, pv*C)
        return einops.rearrange(
            out,
            "b (t h w) (pt ph pw c) -> b c (t pt) (h ph) (w pw)",
            t=tt,
            h=ht,
            w=wt,
            pt=pt,
            ph=ph,
            pw=pw,
        )
