import dataclasses

import pytest
import torch

from mugv.vae import (
    CONFIGS,
    LatentCodec,
    SpatialConfig,
    TemporalConfig,
    VAEConfig,
    VAEConfigError,
    VAEInputError,
    VideoVAE,
)

# SD/SDXL-VAE AutoencoderKL has 83,653,863 parameters; the spatial stage drops its encoder
# conv_norm_out (1,024) and conv_out (36,872), decoder conv_in (18,944), quant_conv (72) and
# post_quant_conv (20).
SPATIAL_REFERENCE = 83_653_863 - 1_024 - 36_872 - 18_944 - 72 - 20
TEMPORAL_REFERENCE = 328_099_128


def _count(model, prefix=""):
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))


def test_reference_parameter_count():
    with torch.device("meta"):
        vae = VideoVAE(CONFIGS["reference"])
    spatial = _count(vae, "spatial_")
    print(f"reference VAE: {_count(vae):,} parameters ({spatial:,} spatial)")
    assert spatial == SPATIAL_REFERENCE
    assert _count(vae) - spatial == TEMPORAL_REFERENCE


def test_shapes_and_protocol(tiny_vae, video):
    assert isinstance(tiny_vae, LatentCodec)
    z = tiny_vae.encode(video)
    assert z.shape == (2, 4, 3, 4, 4) == (2, 4, *tiny_vae.latent_shape(17, 32, 32))
    assert tiny_vae.decode(z).shape == video.shape
    assert tiny_vae.decode(z[:, :, 1:], num_frames=16).shape == (2, 3, 16, 32, 32)
    recon, post = tiny_vae(video)
    assert recon.shape == video.shape and post.kl().shape == (2,)


def test_first_latent_is_the_image(tiny_vae, video):
    """T % 8 == 1: latent 0 encodes frame 0 repeated, the same as encode_image(frame 0)."""
    z = tiny_vae.encode(video)
    z_img = tiny_vae.encode_image(video[:, :, 0])
    static = tiny_vae.encode(video[:, :, :1].expand(-1, -1, 8, -1, -1))
    torch.testing.assert_close(z[:, :, :1], z_img, rtol=0, atol=1e-6)
    torch.testing.assert_close(z_img, static, rtol=0, atol=1e-6)
    # and the remaining latents are the groups of frames 1..16
    torch.testing.assert_close(z[:, :, 1:], tiny_vae.encode(video[:, :, 1:]), rtol=0, atol=1e-6)


def test_groups_are_encoded_independently(tiny_vae, video):
    a = tiny_vae.encode(video[:, :, 1:])
    changed = video[:, :, 1:].clone()
    changed[:, :, 8:] = 0
    b = tiny_vae.encode(changed)
    torch.testing.assert_close(a[:, :, 0], b[:, :, 0], rtol=0, atol=0)
    assert not torch.allclose(a[:, :, 1], b[:, :, 1])


@pytest.mark.parametrize("chunk", [8, 16])
def test_chunked_encode_equals_unchunked(tiny_vae, video, chunk):
    full = tiny_vae.normalize(tiny_vae.posterior(video).mean)
    chunked = tiny_vae.encode(video, chunk_frames=chunk)
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-6)


def test_decode_chunks_cover_the_video(tiny_vae, video):
    z = tiny_vae.encode(video)  # 3 latent frames
    whole = tiny_vae.decode(z, chunk_latents=3)
    raw = tiny_vae.decode_raw(tiny_vae.denormalize(z)).clamp(-1, 1)
    torch.testing.assert_close(whole, raw, rtol=0, atol=1e-6)
    # chunk = 2 latents: the first chunk loses its 7 repeated frames, the second is whole
    chunked = tiny_vae.decode(z, chunk_latents=2)
    first = tiny_vae.decode(z[:, :, :2], chunk_latents=2)
    second = tiny_vae.decode(z[:, :, 2:], num_frames=8, chunk_latents=2)
    torch.testing.assert_close(chunked, torch.cat([first, second], 2), rtol=0, atol=0)


def test_normalisation_round_trip(tiny_vae, video):
    tiny_vae.latent_mean.uniform_(-1, 1)
    tiny_vae.latent_std.uniform_(0.5, 2)
    raw = tiny_vae.posterior(video).mean
    z = tiny_vae.encode(video)
    torch.testing.assert_close(
        z,
        (raw - tiny_vae.latent_mean.view(1, -1, 1, 1, 1))
        / tiny_vae.latent_std.view(1, -1, 1, 1, 1),
    )
    torch.testing.assert_close(tiny_vae.denormalize(z), raw, rtol=1e-5, atol=1e-5)


def test_bad_inputs(tiny_vae):
    with pytest.raises(VAEInputError, match="T % 8"):
        tiny_vae.encode(torch.zeros(1, 3, 12, 32, 32))
    with pytest.raises(VAEInputError, match="multiples of 8"):
        tiny_vae.encode(torch.zeros(1, 3, 8, 30, 32))
    with pytest.raises(VAEInputError, match=r"\(B, 3, T, H, W\)"):
        tiny_vae.encode(torch.zeros(3, 8, 32, 32))
    with pytest.raises(VAEInputError, match="tile=20"):
        tiny_vae.encode(torch.zeros(1, 3, 8, 32, 32), tile=20)
    with pytest.raises(VAEInputError, match="num_frames"):
        tiny_vae.decode(torch.zeros(1, 4, 2, 4, 4), num_frames=3)


def test_config_validation():
    with pytest.raises(VAEConfigError, match="norm_groups"):
        SpatialConfig(block_out_channels=(24, 48), norm_groups=32)
    with pytest.raises(VAEConfigError, match=r"temporal\.in_channels"):
        VAEConfig(temporal=TemporalConfig(in_channels=256))
    with pytest.raises(VAEConfigError, match="encode_chunk_frames"):
        dataclasses.replace(CONFIGS["tiny"], encode_chunk_frames=12)
    cfg = CONFIGS["small"]
    assert VAEConfig.from_dict(cfg.to_dict()) == cfg


def test_gradients_reach_every_parameter(tiny_vae, video):
    recon, post = tiny_vae.train()(video[:1, :, 1:])
    (recon.mean() + post.kl().mean()).backward()
    assert all(p.grad is not None for p in tiny_vae.parameters())


@pytest.mark.parametrize("name", ["small", "narrow"])
def test_cpu_presets_keep_the_8x8x8_24_channel_shape(name):
    vae = VideoVAE(CONFIGS[name]).eval()
    video = torch.rand(1, 3, 17, 64, 64) * 2 - 1
    latents = vae.encode(video)
    assert latents.shape == (1, 24, 3, 8, 8)
    assert vae.decode(latents, num_frames=17).shape == video.shape


def test_narrow4x_is_4x4x8_with_6_channels():
    with torch.device("meta"):
        counted = VideoVAE(CONFIGS["narrow4x"])
    assert (_count(counted), _count(counted, "spatial_")) == (2_937_307, 124_499)
    vae = VideoVAE(CONFIGS["narrow4x"]).eval()
    assert (vae.config.spatial_downsample, vae.config.group_frames) == (4, 8)
    video = torch.rand(1, 3, 17, 64, 64) * 2 - 1
    latents = vae.encode(video)
    assert latents.shape == (1, 6, 3, 16, 16)
    assert vae.decode(latents, num_frames=17).shape == video.shape
