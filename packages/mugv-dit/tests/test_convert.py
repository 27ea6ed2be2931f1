"""The authors' `dit.pt` -> our layout -> safetensors + config.json -> from_pretrained, and back."""

import torch
from _mugdit_reference import RefMUGDiT, randomize

from mugv.dit import (
    MUGDiT,
    config_from_reference,
    from_reference,
    load_reference_checkpoint,
    to_reference,
)
from mugv.dit.pretrained import full_state_dict, load_full_state_dict
from mugv.infra import single_process


def test_dit_pt_to_pretrained_folder_reproduces_reference(tmp_path):
    torch.manual_seed(0)
    ref = RefMUGDiT(24, 2, 1, 16, 8).double()
    randomize(ref, seed=5)
    wrapped = {"ema": {f"module.{k}": v for k, v in ref.state_dict().items()}, "step": 3}
    torch.save(wrapped, tmp_path / "dit.pt")

    state = load_reference_checkpoint(tmp_path / "dit.pt")
    assert set(state) == set(ref.state_dict())
    cfg = config_from_reference(state)
    g = torch.Generator().manual_seed(1)
    args = dict(
        x=torch.randn(2, 24, 2, 4, 6, generator=g, dtype=torch.float64),
        timestep=torch.tensor([0.3, 0.9], dtype=torch.float64),
        text=torch.randn(2, 3, 16, generator=g, dtype=torch.float64),
        text_mask=torch.tensor([[True, True, False], [True, True, True]]),
        fps=torch.tensor([8.0, 16.0], dtype=torch.float64),
    )
    with single_process():
        model = MUGDiT(cfg, params_dtype=torch.float64)
        load_full_state_dict(model, from_reference(state, cfg))
        model.save_pretrained(tmp_path / "ours")
        loaded = MUGDiT.from_pretrained(tmp_path / "ours", params_dtype=torch.float64)
        torch.testing.assert_close(loaded(**args), ref(**args), rtol=1e-5, atol=1e-8)
        back = to_reference(full_state_dict(loaded), cfg)
    ref2 = RefMUGDiT(24, 2, 1, 16, 8).double()
    ref2.load_state_dict(back)
    torch.testing.assert_close(ref2(**args), ref(**args), rtol=1e-5, atol=1e-8)
