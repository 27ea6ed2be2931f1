"""The converter against a synthetic state dict in the authors' layout.

`their_layout` spells out the authors' key names and shapes from their public inference code
(Shopee-MUG/MUG-V, mug_v/encoder/vae: a diffusers AutoencoderKL under `spatial_vae.module.`,
MUGVAETemporal under `temporal_vae.`), independently of our module tree.
"""

import pytest
import torch

from mugv.vae import (
    SpatialConfig,
    TemporalConfig,
    VAECheckpointError,
    VAEConfig,
    VideoVAE,
    convert_state_dict,
    load_authors_checkpoint,
)

# Distinct widths per level so that a mis-mapped key shows up as a shape mismatch.
CONFIG = VAEConfig(
    spatial=SpatialConfig(block_out_channels=(4, 8, 12, 16), layers_per_block=2, norm_groups=4),
    temporal=TemporalConfig(
        in_channels=16,
        latent_channels=6,
        filters=4,
        num_res_blocks=2,
        channel_multipliers=(1, 2, 3, 4),
        norm_groups=4,
    ),
)


def their_layout(ch=(4, 8, 12, 16), lpb=2, f=4, mult=(1, 2, 3, 4), nres=2, lat=6, zc=4):
    s: dict[str, tuple[int, ...]] = {}

    def conv2d(name, i, o, k):
        s[f"{name}.weight"], s[f"{name}.bias"] = (o, i, k, k), (o,)

    def norm(name, c):
        s[f"{name}.weight"], s[f"{name}.bias"] = (c,), (c,)

    def resnet2d(name, i, o):
        norm(f"{name}.norm1", i), conv2d(f"{name}.conv1", i, o, 3)
        norm(f"{name}.norm2", o), conv2d(f"{name}.conv2", o, o, 3)
        if i != o:
            conv2d(f"{name}.conv_shortcut", i, o, 1)

    def mid(name, c):
        resnet2d(f"{name}.resnets.0", c, c), resnet2d(f"{name}.resnets.1", c, c)
        norm(f"{name}.attentions.0.group_norm", c)
        for p in ("to_q", "to_k", "to_v", "to_out.0"):
            s[f"{name}.attentions.0.{p}.weight"], s[f"{name}.attentions.0.{p}.bias"] = (c, c), (c,)

    e, d = "spatial_vae.module.encoder", "spatial_vae.module.decoder"
    conv2d(f"{e}.conv_in", 3, ch[0], 3)
    prev = ch[0]
    for i, c in enumerate(ch):
        for j in range(lpb):
            resnet2d(f"{e}.down_blocks.{i}.resnets.{j}", prev if j == 0 else c, c)
        if i < len(ch) - 1:
            conv2d(f"{e}.down_blocks.{i}.downsamplers.0.conv", c, c, 3)
        prev = c
    mid(f"{e}.mid_block", ch[-1])
    norm(f"{e}.conv_norm_out", ch[-1]), conv2d(f"{e}.conv_out", ch[-1], 2 * zc, 3)  # unused
    conv2d(f"{d}.conv_in", zc, ch[-1], 3)  # unused
    mid(f"{d}.mid_block", ch[-1])
    rev = list(reversed(ch))
    prev = rev[0]
    for i, c in enumerate(rev):
        for j in range(lpb + 1):
            resnet2d(f"{d}.up_blocks.{i}.resnets.{j}", prev if j == 0 else c, c)
        if i < len(ch) - 1:
            conv2d(f"{d}.up_blocks.{i}.upsamplers.0.conv", c, c, 3)
        prev = c
    norm(f"{d}.conv_norm_out", ch[0]), conv2d(f"{d}.conv_out", ch[0], 3, 3)

    def cconv(name, i, o, k, bias):
        s[f"{name}.conv.weight"] = (o, i, k, k, k)
        if bias:
            s[f"{name}.conv.bias"] = (o,)

    def res3d(name, i, o):
        norm(f"{name}.norm1", i), cconv(f"{name}.conv1", i, o, 3, False)
        norm(f"{name}.norm2", o), cconv(f"{name}.conv2", o, o, 3, False)
        if i != o:
            cconv(f"{name}.conv3", i, o, 1, False)

    te, td = "temporal_vae.encoder", "temporal_vae.decoder"
    widths = [f * m for m in mult]
    cconv(f"{te}.conv_in", ch[-1], f, 3, False)
    prev = f
    for i, w in enumerate(widths):
        for j in range(nres):
            res3d(f"{te}.block_res_blocks.{i}.{j}", prev, w)
            prev = w
        if i < len(widths) - 1:
            cconv(f"{te}.conv_blocks.{i}", w, w, 3, True)
    for j in range(nres):
        res3d(f"{te}.res_blocks.{j}", prev, prev)
    norm(f"{te}.norm1", prev), cconv(f"{te}.conv2", prev, 2 * lat, 1, True)
    cconv("temporal_vae.quant_conv", 2 * lat, 2 * lat, 1, True)
    cconv("temporal_vae.post_quant_conv", lat, lat, 1, True)
    top = widths[-1]
    cconv(f"{td}.conv1", lat, top, 3, True)
    for j in range(nres):
        res3d(f"{td}.res_blocks.{j}", top, top)
    res3d(f"{td}.upsample_block", top, top)
    prev = top
    for i in reversed(range(len(widths))):
        for j in range(nres):
            res3d(f"{td}.block_res_blocks.{i}.{j}", prev, widths[i])
            prev = widths[i]
        if i > 1:  # their temporal_downsample=(False, True, True) for the decoder
            cconv(f"{td}.conv_blocks.{i - 1}", prev, 2 * prev, 3, True)
    norm(f"{td}.norm1", prev), cconv(f"{td}.conv_out", prev, ch[-1], 3, True)
    s["scale"], s["shift"], s["logvar"] = (1, lat, 1, 1, 1), (1, lat, 1, 1, 1), ()
    return s


def synthetic_checkpoint(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) for k, shape in their_layout().items()}


def test_converts_every_key():
    theirs = synthetic_checkpoint()
    ours = convert_state_dict(theirs, CONFIG)
    model = VideoVAE(CONFIG)
    model.load_state_dict(ours)  # strict
    assert torch.equal(model.latent_std, theirs["scale"].flatten())
    assert torch.equal(model.latent_mean, theirs["shift"].flatten())
    w = theirs["temporal_vae.decoder.conv_blocks.2.conv.weight"]
    assert torch.equal(model.temporal_decoder.upsamples["3"].weight, w)
    w = theirs["spatial_vae.module.decoder.mid_block.attentions.0.to_out.0.weight"]
    assert torch.equal(model.spatial_decoder.mid_block.attention.to_out.weight, w)


def test_corrupt_or_mismatched_checkpoint_names_the_keys(tmp_path):
    theirs = synthetic_checkpoint()
    del theirs["temporal_vae.encoder.conv2.conv.bias"]
    theirs["temporal_vae.encoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(VAECheckpointError) as e:
        convert_state_dict(theirs, CONFIG)
    assert "temporal_encoder.conv_out.bias" in str(e.value)  # missing, our name
    assert "temporal_vae.encoder.extra.weight" in str(e.value)  # unexpected, their name
    with pytest.raises(VAECheckpointError, match="shape mismatches"):
        convert_state_dict(
            synthetic_checkpoint(),
            VAEConfig.from_dict(
                CONFIG.to_dict() | {"temporal": CONFIG.temporal.__dict__ | {"latent_channels": 8}}
            ),
        )
    path = tmp_path / "vae.pt"
    torch.save(synthetic_checkpoint(), path)
    assert isinstance(load_authors_checkpoint(path, CONFIG), VideoVAE)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(VAECheckpointError, match="corrupt"):
        load_authors_checkpoint(path, CONFIG)


def test_save_load_round_trip_and_errors(tmp_path, tiny_vae, video):
    tiny_vae.latent_mean.fill_(0.5)
    tiny_vae.save_pretrained(tmp_path / "ckpt")
    loaded = VideoVAE.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(loaded.encode(video), tiny_vae.encode(video))
    assert torch.equal(loaded.latent_mean, tiny_vae.latent_mean)
    # a config that does not match the weights
    (tmp_path / "ckpt" / "config.json").write_text(
        (tmp_path / "ckpt" / "config.json")
        .read_text()
        .replace('"num_res_blocks": 1', '"num_res_blocks": 2')
    )
    with pytest.raises(VAECheckpointError, match=r"missing keys: .*temporal_decoder\.levels\.0\.1"):
        VideoVAE.from_pretrained(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(VAECheckpointError, match="corrupt"):
        VideoVAE.from_pretrained(tmp_path / "ckpt")
