import torch
from torch import nn

from mugv.vae.tiling import tiled_apply


def test_pointwise_tiling_is_exact():
    """The blend weights and tile coordinates are exact: a per-pixel fn tiles losslessly."""
    torch.manual_seed(0)
    up = nn.Sequential(nn.Upsample(scale_factor=8.0), nn.Conv2d(4, 3, 1))
    x = torch.randn(2, 4, 11, 7)
    torch.testing.assert_close(tiled_apply(up, x, 4, 8), up(x), rtol=0, atol=1e-5)
    down = nn.Sequential(nn.AvgPool2d(8), nn.Conv2d(3, 5, 1))
    y = torch.randn(2, 3, 88, 56)
    torch.testing.assert_close(tiled_apply(down, y, 32, 1 / 8), down(y), rtol=0, atol=1e-5)


def test_spatial_tiling_runs_the_model_tile_by_tile(tiny_vae):
    """Tiles see their own GroupNorm statistics and attention context, so tiled != untiled on
    an untrained model; the error on a trained one is measured by benchmarks/bench_codec.py."""
    torch.manual_seed(2)
    video = torch.rand(1, 3, 9, 64, 64) * 2 - 1
    z = tiny_vae.encode(video)
    z_tiled = tiny_vae.encode(video, tile=32)
    assert z_tiled.shape == z.shape and torch.isfinite(z_tiled).all()
    assert not torch.equal(z_tiled, z)
    x_tiled = tiny_vae.decode(z, tile=32)
    assert x_tiled.shape == video.shape and torch.isfinite(x_tiled).all()
    assert tiny_vae.encode(video, tile=64).equal(z)  # one tile: the untiled path
    assert tiny_vae.decode(z, tile=64).equal(tiny_vae.decode(z))
