"""MUGDiT (Megatron, local spec) equals the independent plain-PyTorch reference of SPEC."""

import pytest
import torch
from _mugdit_reference import RefMUGDiT, randomize

from mugv.dit import DiTConfig, MUGDiT, config_from_reference, from_reference, to_reference
from mugv.dit.pretrained import full_state_dict, load_full_state_dict
from mugv.infra import single_process

D, HEADS, DEPTH, TEXT_DIM, TEXT_LEN = 24, 2, 2, 16, 8


def make_reference() -> RefMUGDiT:
    torch.manual_seed(0)
    ref = RefMUGDiT(D, HEADS, DEPTH, TEXT_DIM, TEXT_LEN).double()
    randomize(ref, seed=1)
    return ref


def make_inputs(seed: int = 2, batch: int = 3, frames: int = 3, size: int = 8, length: int = 6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 24, frames, size, size, generator=g, dtype=torch.float64)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, 3:] = False
    mask[2, 1:] = False
    cond = torch.zeros(batch, frames, dtype=torch.bool)
    cond[1, 0] = True
    return dict(
        x=x,
        timestep=torch.rand(batch, generator=g, dtype=torch.float64),
        text=torch.randn(batch, length, TEXT_DIM, generator=g, dtype=torch.float64),
        text_mask=mask,
        fps=torch.tensor([8.0, 24.0, 12.0][:batch], dtype=torch.float64),
        cond_mask=cond,
        frame_index=torch.arange(frames).expand(batch, frames)
        + torch.tensor([[0], [40], [500]])[:batch],
        drop_text=torch.tensor([False, True, False][:batch]),
    )


def test_config_from_reference_infers_shape():
    cfg = config_from_reference(make_reference().state_dict())
    assert (cfg.hidden_size, cfg.num_heads, cfg.depth, cfg.text_dim, cfg.text_len) == (
        D,
        HEADS,
        DEPTH,
        TEXT_DIM,
        TEXT_LEN,
    )
    assert cfg.patch_size == (1, 2, 2) and cfg.in_channels == 24


@pytest.mark.parametrize("with_cond", [True, False])
def test_model_matches_reference(with_cond):
    ref = make_reference()
    inputs = make_inputs()
    if not with_cond:
        inputs.update(cond_mask=None, frame_index=None, drop_text=None)
    expected = ref(**inputs)
    with single_process():
        cfg = config_from_reference(ref.state_dict())
        model = MUGDiT(cfg).double()
        load_full_state_dict(model, from_reference(ref.state_dict(), cfg))
        got = model(**inputs)
    assert got.shape == expected.shape == inputs["x"].shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-8)


def test_round_trip_to_reference_layout():
    ref = make_reference()
    with single_process():
        cfg = config_from_reference(ref.state_dict())
        model = MUGDiT(cfg).double()
        load_full_state_dict(model, from_reference(ref.state_dict(), cfg))
        back = to_reference(full_state_dict(model), cfg)
    for key, value in ref.state_dict().items():
        if key == "final_layer.linear.weight" or key == "final_layer.linear.bias":
            kept = value.view(4, 48, *value.shape[1:])[:, :24]
            torch.testing.assert_close(back[key].view(4, 48, *value.shape[1:])[:, :24], kept)
        else:
            torch.testing.assert_close(back[key], value, rtol=0, atol=0)
    assert set(back) == set(ref.state_dict())


def test_rope_positions_follow_frame_index():
    """Time positions come from frame_index: spacing frames apart changes the output (a
    uniform offset does not: RoPE is relative), and positions past 479 are clamped."""
    ref = make_reference()
    inputs = make_inputs()
    shifted = dict(inputs, frame_index=inputs["frame_index"] * 2)
    with single_process():
        cfg = config_from_reference(ref.state_dict())
        model = MUGDiT(cfg).double()
        load_full_state_dict(model, from_reference(ref.state_dict(), cfg))
        a, b = model(**inputs), model(**shifted)
        offset = model(**dict(inputs, frame_index=inputs["frame_index"] + 7))
    assert not torch.allclose(a[:2], b[:2])
    torch.testing.assert_close(a[2], b[2])  # frames 500.. and 1000.. both clamp to 479
    torch.testing.assert_close(offset, a)
    torch.testing.assert_close(b, ref(**shifted), rtol=1e-5, atol=1e-8)


def test_config_rejects_bad_head_dim():
    with pytest.raises(ValueError, match="multiple of 6"):
        DiTConfig(hidden_size=32, num_heads=2)
