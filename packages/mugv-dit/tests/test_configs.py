"""Named configs: parameter counts on the meta device; the FLOPs formula against a counter."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mugv.dit import NAMED_CONFIGS, DiTConfig, DiTError, MUGDiT, dit_config, local_spec
from mugv.dit.attention import SDPAttention
from mugv.infra import single_process

SPEC_SHAPES = {"1B": (1152, 16), "4B": (2304, 32), "10B": (3456, 48), "18B": (4608, 64)}


def expected_params(cfg: DiTConfig) -> tuple[int, int]:
    """(total, in blocks) counted by hand from SPEC's layer list."""
    d, f, hd = cfg.hidden_size, cfg.mlp_hidden_size, cfg.head_dim
    attn = 3 * d * d + 3 * d + d * d + d + 2 * hd
    cross = d * d + d + 2 * d * d + 2 * d + 2 * hd + d * d + d + 2 * d  # + affine norm
    block = attn + cross + d * f + f + f * d + d + 6 * d
    pv_c = cfg.patch_volume * cfg.in_channels
    embed = pv_c * d + d + 2 * d  # patch conv + start/end tokens
    cond = 2 * (cfg.freq_dim * d + d + d * d + d) + d * 6 * d + 6 * d
    caption = cfg.text_len * cfg.text_dim + cfg.text_dim * d + d + d * d + d
    final = d * pv_c + pv_c + 2 * d
    blocks = cfg.depth * block
    return blocks + embed + cond + caption + final, blocks


@pytest.mark.parametrize("name", list(NAMED_CONFIGS))
def test_named_config_param_counts_on_meta(name):
    cfg = dit_config(name)
    if name in SPEC_SHAPES:
        assert (cfg.hidden_size, cfg.num_heads, cfg.depth) == (*SPEC_SHAPES[name], 56)
        assert cfg.head_dim == 72
    with single_process(), torch.device("meta"):
        model = MUGDiT(cfg)
    total = sum(p.numel() for p in model.parameters())
    blocks = sum(p.numel() for n, p in model.named_parameters() if n.startswith("blocks."))
    assert (total, blocks) == expected_params(cfg)
    if name == "10B":
        assert abs(total - 10.8e9) / 10.8e9 < 0.02
        assert abs(blocks - 10.7e9) / 10.7e9 < 0.02


def test_dit_config_overrides_and_errors():
    cfg = dit_config("tiny", text_dim=384, recompute=True)
    assert cfg.text_dim == 384 and cfg.recompute and cfg.hidden_size == 48
    assert DiTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(DiTError, match="unknown name"):
        dit_config("huge")
    with pytest.raises(DiTError, match="num_heads"):
        DiTConfig(hidden_size=50, num_heads=3)
    with pytest.raises(DiTError, match="patch_size"):
        DiTConfig(hidden_size=24, num_heads=2, patch_size=(1, 2))
    with pytest.raises(DiTError, match="unknown fields"):
        DiTConfig.from_dict({"hidden_size": 24, "num_heads": 2, "width": 3})


class MathAttention(SDPAttention):
    """Core attention written as matmuls, so the FLOP counter sees the attention products."""

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, **_):
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # (B, h, s, D)
        scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
        if isinstance(attention_mask, tuple):  # cross-attention: (query mask, key mask)
            attention_mask = attention_mask[1]
        if attention_mask is not None:
            scores = scores.masked_fill(attention_mask, float("-inf"))
        return (scores.softmax(-1) @ v).permute(2, 0, 1, 3).flatten(2)


def test_flops_formula_matches_counted_flops():
    cfg = dit_config("tiny")
    spec = local_spec()
    for attn in (spec.submodules.self_attention, spec.submodules.cross_attention):
        attn.core_attention = MathAttention
    frames, size, length, batch = 3, 8, 7, 2
    with single_process():
        model = MUGDiT(cfg, spec=spec)
        mask = torch.ones(batch, length, dtype=torch.bool)
        mask[0, 4:] = False
        args = (
            torch.randn(batch, 24, frames, size, size),
            torch.rand(batch),
            torch.randn(batch, length, 384),
            mask,
            torch.full((batch,), 8.0),
        )
        with FlopCounterMode(display=False) as counter:
            model(*args)
        per_sample = model.flops_per_sample(frames, size, size, length)
    assert counter.get_total_flops() == batch * per_sample
