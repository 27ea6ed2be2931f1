"""Self- and cross-attention of a MUGDiT block, with QK-RMSNorm, 3D RoPE and CP awareness.

The projections and the core attention come from a `ModuleSpec` (Megatron or
TransformerEngine linears; our SDPA core or TE's fused attention). Heads are split over the
tensor-parallel ranks: q/k/v projections are column-parallel with their output laid out
(heads, 3, head_dim) so each rank owns whole heads, the output projection is row-parallel.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import ModuleSpec, build_module
from megatron.core.transformer.transformer_config import TransformerConfig
from torch import Tensor, nn

from mugv.dit.parallel import SequenceSharding
from mugv.dit.rope3d import apply_rope

SHORT_KEYS = 128
"""Up to this many keys, `cpu_attention` multiplies out the score matrix instead of calling
PyTorch's flash kernel: at a tiny DiT's shapes (32 x 4 heads x 50 tokens of 48) forward and
backward take 2.6 ms against 4.1 ms; at 200 keys the two are even, beyond it flash wins."""


def cpu_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None) -> Tensor:
    """softmax(q k^T / sqrt(D)) v on (B, heads, s, D); `allowed` (B, 1, 1, s_k) True = attend.

    Short key sequences take the explicit product (cheaper on CPU, see `SHORT_KEYS`), longer
    ones `scaled_dot_product_attention`; both give SDPA's result to rounding."""
    if k.shape[-2] > SHORT_KEYS:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)  # (B, heads, s_q, s_k)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(dim=-1) @ v


class SDPAttention(MegatronModule):
    """Core attention with `torch.nn.functional.scaled_dot_product_attention` (CPU and GPU).

    Megatron's signature: q, k, v (s, B, heads, head_dim) -> (s_q, B, heads * head_dim);
    `attention_mask` (B, 1, 1, s_k) bool with True = masked out (Megatron/TE convention), or
    a (q_mask, kv_mask) pair of which the kv mask is used. Text is masked, not packed, here.
    """

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        **_: object,
    ):
        super().__init__(config=config)
        self.attention_type = attention_type

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask: Tensor | tuple[Tensor, Tensor] | None,
        attn_mask_type: AttnMaskType | None = None,
        **_: object,
    ) -> Tensor:
        if isinstance(attention_mask, tuple):
            attention_mask = attention_mask[1]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # (B, heads, s, D)
        allowed = None if attention_mask is None else ~attention_mask
        if q.device.type == "cpu":
            # on CPU the bf16 attention kernels run behind fp32 (the backward ~8x at a tiny
            # DiT's shapes): attend in fp32 (or float64) and hand back the caller's dtype
            work = torch.float64 if q.dtype == torch.float64 else torch.float32
            with torch.autocast("cpu", enabled=False):
                out = cpu_attention(q.to(work), k.to(work), v.to(work), allowed).to(q.dtype)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (B, heads, s_q, D)
        return out.permute(2, 0, 1, 3).flatten(2)  # (s_q, B, heads*D)


class HeadRMSNorm(nn.Module):
    """RMSNorm over the head dim with a weight (no bias), eps 1e-6 (QK-norm)."""

    def __init__(self, head_dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(head_dim))

    def forward(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.rms_norm(x, x.shape[-1:], weight=weight, eps=self.eps)


@dataclasses.dataclass
class AttentionSubmodules:
    linear_in: ModuleSpec | type  # qkv (self) or q (cross): column-parallel
    linear_kv: ModuleSpec | type | None  # cross only: column-parallel on the text
    core_attention: ModuleSpec | type
    linear_proj: ModuleSpec | type  # row-parallel


def _column(spec, config: TransformerConfig, n_in: int, n_out: int, name: str) -> nn.Module:
    return build_module(
        spec,
        n_in,
        n_out,
        config=config,
        init_method=config.init_method,
        gather_output=False,
        bias=True,
        skip_bias_add=False,
        is_expert=False,
        tp_comm_buffer_name=name,
    )


def _row(spec, config: TransformerConfig, n_in: int, n_out: int, name: str) -> nn.Module:
    return build_module(
        spec,
        n_in,
        n_out,
        config=config,
        init_method=config.output_layer_init_method,
        bias=True,
        input_is_parallel=True,
        skip_bias_add=False,
        is_expert=False,
        tp_comm_buffer_name=name,
    )


class Attention(MegatronModule):
    """Full 3D self-attention (`cross=False`) or cross-attention to text (`cross=True`).

    Self: x (s, B, d) -> qkv -> q/k RMSNorm per head -> 3D RoPE -> attention over the whole
    video sequence (keys gathered over CP ranks) -> proj. Cross: queries from x, keys/values
    from the text (L, B, d), q/k RMSNorm, no RoPE, each sample sees only its valid tokens.
    """

    def __init__(
        self,
        config: TransformerConfig,
        submodules: AttentionSubmodules,
        layer_number: int,
        sharding: SequenceSharding,
        cross: bool,
        eps: float,
    ):
        super().__init__(config=config)
        d = config.hidden_size
        self.cross, self.sharding = cross, sharding
        self.head_dim = config.kv_channels
        self.local_heads = config.num_attention_heads // sharding.tp_size
        if cross:
            self.linear_q = _column(submodules.linear_in, config, d, d, "q")
            self.linear_kv = _column(submodules.linear_kv, config, d, 2 * d, "kv")
        else:
            self.linear_qkv = _column(submodules.linear_in, config, d, 3 * d, "qkv")
        self.q_norm = HeadRMSNorm(self.head_dim, eps)
        self.k_norm = HeadRMSNorm(self.head_dim, eps)
        # Under CP the queries are this rank's tokens and the keys all tokens: to
        # TransformerEngine that is cross-attention (q and kv lengths differ, masks in pairs).
        self.kv_apart = cross or sharding.cp_size > 1
        self.core_attention = build_module(
            submodules.core_attention,
            config=config,
            layer_number=layer_number,
            attn_mask_type=AttnMaskType.padding if cross else AttnMaskType.no_mask,
            attention_type="cross" if self.kv_apart else "self",
        )
        self._kv_order: dict[tuple[int, torch.device], Tensor] = {}
        self.linear_proj = _row(submodules.linear_proj, config, d, d, "proj")

    def _norm_weight(self, norm: HeadRMSNorm) -> Tensor:
        return self.sharding.tp_shared(norm.weight, sharded_input=True)

    def _gather_kv(self, x: Tensor) -> Tensor:
        """This CP rank's keys or values (s, B, heads, D) -> all ranks', in sequence order
        (S, B, heads, D): the padding comes last, because TransformerEngine's fused attention
        reads a padding mask as per-sample lengths."""
        shard = self.sharding
        if shard.cp_size == 1:
            return x
        x = shard.cp_gather_kv(x)  # ranks' chunks in all-gather order
        key = (x.shape[0], x.device)
        if key not in self._kv_order:
            self._kv_order[key] = torch.argsort(shard.cp_gathered_order(x.shape[0])).to(x.device)
        return x[self._kv_order[key]]

    def forward(
        self,
        x: Tensor,
        *,
        rope: Tensor | None = None,
        mask: Tensor | None = None,
        text: Tensor | None = None,
    ) -> Tensor:
        """x (s_sp, B, d) -> (s_sp, B, d). rope: complex rotation (s_cp, B, 1, 1, D/2) of this
        CP rank's tokens (`rope_rotation`); mask: (B, 1, 1, keys) True = ignore, keys in
        sequence order (padding last); text: (L, B, d) for cross-attention."""
        shard = self.sharding
        x = shard.sp_gather(x)  # (s_cp, B, d)
        s, b = x.shape[:2]
        if self.cross:
            q, _ = self.linear_q(x)
            q = q.view(s, b, self.local_heads, self.head_dim)
            kv, _ = self.linear_kv(text)  # (L, B, 2*d/tp) laid out (heads, 2, D)
            k, v = kv.view(text.shape[0], b, self.local_heads, 2, self.head_dim).unbind(3)
            q = self.q_norm(q, self._norm_weight(self.q_norm))
            k = self.k_norm(k, self._norm_weight(self.k_norm))
        else:
            qkv, _ = self.linear_qkv(x)  # (s, B, 3*d/tp) laid out (heads, 3, D)
            qkv = qkv.view(s, b, self.local_heads, 3, self.head_dim)
            # q and k side by side: one RMSNorm (per-head weights stacked) and one rotation
            weight = torch.stack([self._norm_weight(self.q_norm), self._norm_weight(self.k_norm)])
            qk = F.rms_norm(qkv[:, :, :, :2], (self.head_dim,), eps=self.q_norm.eps) * weight
            q, k = apply_rope(qk, rope).unbind(3)  # (s, B, heads, D) each
            k, v = self._gather_kv(k), self._gather_kv(qkv[:, :, :, 2])  # (S, B, heads, D)
        if self.kv_apart and mask is not None:  # TE's padding form: (query mask, key mask)
            mask = (torch.zeros(b, 1, 1, s, dtype=torch.bool, device=x.device), mask)
        mask_type = AttnMaskType.no_mask if mask is None else AttnMaskType.padding
        out = self.core_attention(q, k, v, mask, attn_mask_type=mask_type)  # (s_cp, B, h*D/tp)
        out, _ = self.linear_proj(out)  # (s_cp, B, d), reduced over TP
        return shard.sp_split(out)
