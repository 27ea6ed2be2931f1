"""The two-stage MUG-V video VAE: spatial 2D autoencoder + temporal 3D stage, 8x8x8, 24 channels.

Video tensors are ``(B, 3, T, H, W)`` in [-1, 1]. Each group of 8 frames is encoded on its own
into one latent frame; a video with ``T % 8 == 1`` first repeats frame 0 so latent 0 is a static
copy of it, and an image is encoded the same way (SPEC: "MUG-V video VAE"). ``encode``/``decode``
return and take latents normalised per channel by the mean/std stored in the model's buffers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from einops import rearrange
from torch import nn

from mugv.vae._errors import VAEInputError
from mugv.vae.checkpoint import check_state_dict, load_config, load_weights, save_checkpoint
from mugv.vae.config import VAEConfig
from mugv.vae.spatial import SpatialDecoder, SpatialEncoder
from mugv.vae.temporal import DiagonalGaussian, TemporalDecoder, TemporalEncoder
from mugv.vae.tiling import tiled_apply


@runtime_checkable
class LatentCodec(Protocol):
    """What a diffusion model needs from a video autoencoder (DESIGN.md, shared interfaces)."""

    latent_channels: int

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> normalised latents (B, C, t, h, w)."""
        ...

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> normalised latents (B, C, 1, h, w)."""
        ...

    def decode(self, latents: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Normalised latents (B, C, t, h, w) -> video (B, 3, T, H, W)."""
        ...

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(t, h, w) of the latents of a (num_frames, height, width) video."""
        ...


class VideoVAE(nn.Module):
    """Spatial stage (per frame) -> temporal stage (per 8-frame group) -> diagonal Gaussian."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.latent_channels = config.latent_channels
        self.spatial_encoder = SpatialEncoder(config.spatial)
        self.spatial_decoder = SpatialDecoder(config.spatial)
        self.temporal_encoder = TemporalEncoder(config.temporal)
        self.quant_conv = nn.Conv3d(2 * config.latent_channels, 2 * config.latent_channels, 1)
        self.post_quant_conv = nn.Conv3d(config.latent_channels, config.latent_channels, 1)
        with torch.no_grad():
            self.quant_conv.bias[config.latent_channels :].fill_(config.temporal.init_logvar)
        self.temporal_decoder = TemporalDecoder(config.temporal)
        self.register_buffer("latent_mean", torch.zeros(config.latent_channels))
        self.register_buffer("latent_std", torch.ones(config.latent_channels))

    # ---- shapes -------------------------------------------------------------------------
    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        self._check_size(num_frames, height, width, "video")
        g, s = self.config.group_frames, self.config.spatial_downsample
        return (num_frames + g - 1) // g, height // s, width // s

    def _check_size(self, t: int, h: int, w: int, name: str) -> None:
        g, s = self.config.group_frames, self.config.spatial_downsample
        if t % g not in (0, 1):
            raise VAEInputError(
                f"{name} has {t} frames; the VAE encodes groups of {g} frames and needs "
                f"T % {g} in (0, 1) (e.g. {g * (t // g)} or {g * (t // g) + 1}): trim or pad it"
            )
        if h % s or w % s:
            raise VAEInputError(
                f"{name} is {h}x{w}; height and width must be multiples of {s}: resize or crop it"
            )

    def _check_tile(self, tile: int | None) -> None:
        s = self.config.spatial_downsample
        if tile is not None and (tile < 4 * s or tile % (4 * s)):
            raise VAEInputError(
                f"tile={tile} pixels must be a multiple of {4 * s} (4 x the spatial downsample, "
                f"so the quarter-tile overlap is whole latent pixels); e.g. {max(4 * s, tile // (4 * s) * 4 * s)}"
            )

    def _check_video(self, video: torch.Tensor, name: str = "video") -> None:
        if video.ndim != 5 or video.shape[1] != self.config.spatial.in_channels:
            raise VAEInputError(
                f"{name} must be (B, {self.config.spatial.in_channels}, T, H, W); got "
                f"{tuple(video.shape)} (use video_to_tensor for uint8 (T, H, W, 3) frames)"
            )
        if not video.is_floating_point():
            raise VAEInputError(f"{name} must be a float tensor in [-1, 1]; got {video.dtype}")
        self._check_size(video.shape[2], video.shape[3], video.shape[4], name)

    def _frame_index(self, num_frames: int) -> torch.Tensor:
        """Pixel frame of every encoder input slot: frame 0 repeated to fill group 0 if T % 8 == 1."""
        index = torch.arange(num_frames)
        if num_frames % self.config.group_frames == 1:
            index = torch.cat([index.new_zeros(self.config.group_frames - 1), index])
        return index

    # ---- stages -------------------------------------------------------------------------
    def spatial_encode(self, frames: torch.Tensor, tile: int | None = None) -> torch.Tensor:
        """(N, 3, H, W) -> (N, C_mid, H/8, W/8) scaled features, in batches of frames."""
        scale = self.config.spatial.scaling_factor
        out = []
        for chunk in frames.split(self.config.frame_batch):
            feats = tiled_apply(
                self.spatial_encoder, chunk, tile, 1 / self.config.spatial_downsample
            )
            out.append(feats * scale)
        return torch.cat(out)

    def spatial_decode(self, feats: torch.Tensor, tile: int | None = None) -> torch.Tensor:
        """(N, C_mid, h, w) scaled features -> (N, 3, 8h, 8w), in batches of frames."""
        scale = self.config.spatial.scaling_factor
        tile_latent = None if tile is None else tile // self.config.spatial_downsample
        out = []
        for chunk in feats.split(self.config.frame_batch):
            out.append(
                tiled_apply(
                    self.spatial_decoder, chunk / scale, tile_latent, self.config.spatial_downsample
                )
            )
        return torch.cat(out)

    def spatial_features(self, video: torch.Tensor, tile: int | None = None) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, C_mid, 8t, h, w) scaled features of every encoder slot.

        The temporal stage's input: with ``T % 8 == 1`` frame 0 fills the first 7 extra slots.
        """
        self._check_video(video)
        B = video.shape[0]
        index = self._frame_index(video.shape[2]).to(video.device)
        feats = self.spatial_encode(rearrange(video, "B C T H W -> (B T) C H W"), tile)
        return rearrange(feats, "(B T) C h w -> B C T h w", B=B)[:, :, index]

    def temporal_posterior(self, feats: torch.Tensor) -> DiagonalGaussian:
        """(B, C_mid, 8t, h, w) features -> Gaussian over (B, C, t, h, w), one group at a time."""
        B = feats.shape[0]
        groups = rearrange(feats, "B C (t g) h w -> (B t) C g h w", g=self.config.group_frames)
        moments = self.quant_conv(self.temporal_encoder(groups))  # (B t, 2C, 1, h, w)
        return DiagonalGaussian(rearrange(moments, "(B t) C 1 h w -> B C t h w", B=B))

    def posterior(self, video: torch.Tensor, tile: int | None = None) -> DiagonalGaussian:
        """(B, 3, T, H, W) -> Gaussian over (B, C, t, h, w) latents (unnormalised), unchunked."""
        return self.temporal_posterior(self.spatial_features(video, tile))

    def temporal_decode(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Unnormalised latents (B, C, t, h, w) -> (B, C_mid, T, h, w) scaled spatial features.

        ``num_frames`` defaults to ``8 (t - 1) + 1``; when it is ``1 mod 8`` the first 7
        decoded frames (copies of frame 0) are dropped.
        """
        num_frames = self._num_frames(z.shape[2], num_frames)
        feats = self.temporal_decoder(self.post_quant_conv(z))  # (B, C_mid, 8t, h, w)
        return feats[:, :, feats.shape[2] - num_frames :]

    def decode_raw(
        self, z: torch.Tensor, num_frames: int | None = None, tile: int | None = None
    ) -> torch.Tensor:
        """Unnormalised latents (B, C, t, h, w) -> (B, 3, T, H, W), unchunked (see
        `temporal_decode` for ``num_frames``)."""
        feats = self.temporal_decode(z, num_frames)
        frames = self.spatial_decode(rearrange(feats, "B C T h w -> (B T) C h w"), tile)
        return rearrange(frames, "(B T) C H W -> B C T H W", B=z.shape[0])

    def _num_frames(self, t: int, num_frames: int | None) -> int:
        g = self.config.group_frames
        if num_frames is None:
            return g * (t - 1) + 1
        if (num_frames + g - 1) // g != t or num_frames % g not in (0, 1):
            raise VAEInputError(
                f"num_frames={num_frames} does not match {t} latent frames: use {g * t} or "
                f"{g * (t - 1) + 1}"
            )
        return num_frames

    def forward(
        self, video: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Training pass: (B, 3, T, H, W) -> reconstruction (B, 3, T, H, W) and the posterior."""
        posterior = self.posterior(video)
        z = posterior.sample(generator) if sample else posterior.mean
        return self.decode_raw(z, video.shape[2]), posterior

    # ---- normalised codec (LatentCodec) -------------------------------------------------
    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latent_mean.view(1, -1, 1, 1, 1)) / self.latent_std.view(1, -1, 1, 1, 1)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.latent_std.view(1, -1, 1, 1, 1) + self.latent_mean.view(1, -1, 1, 1, 1)

    @torch.no_grad()
    def encode(
        self,
        video: torch.Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
        chunk_frames: int | None = None,
        tile: int | None = None,
    ) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> normalised latents (B, C, t, h, w).

        Runs in chunks of ``chunk_frames`` encoder slots (default ``config.encode_chunk_frames``,
        a multiple of 8): groups are encoded independently, so chunking is exact. ``tile``
        (pixels) tiles the spatial stage with blended overlaps (approximate). ``sample`` draws
        from the posterior instead of taking its mean.
        """
        self._check_video(video)
        self._check_tile(tile)
        g = self.config.group_frames
        chunk = chunk_frames or self.config.encode_chunk_frames
        if chunk % g:
            raise VAEInputError(f"chunk_frames={chunk} must be a multiple of the group size {g}")
        index = self._frame_index(video.shape[2])
        latents = []
        for start in range(0, len(index), chunk):
            # frames lo..hi-1 fill these slots; the first chunk of a T % 8 == 1 video has
            # 8k + 1 frames, so `posterior` repeats its frame 0 exactly as for the whole video
            lo, hi = int(index[start]), int(index[min(start + chunk, len(index)) - 1]) + 1
            part = self.posterior(video[:, :, lo:hi], tile)
            latents.append(part.sample(generator) if sample else part.mean)
        return self.normalize(torch.cat(latents, dim=2))

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor, **kwargs) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, C, 1, h, w): the image as a static 8-frame group."""
        if image.ndim != 4:
            raise VAEInputError(f"image must be (B, 3, H, W); got {tuple(image.shape)}")
        return self.encode(image[:, :, None], **kwargs)

    @torch.no_grad()
    def decode(
        self,
        latents: torch.Tensor,
        num_frames: int | None = None,
        *,
        chunk_latents: int | None = None,
        tile: int | None = None,
    ) -> torch.Tensor:
        """Normalised latents (B, C, t, h, w) -> video (B, 3, T, H, W) clamped to [-1, 1].

        The temporal decoder runs on ``chunk_latents`` latent frames at a time (default
        ``config.decode_chunk_latents``); its GroupNorm statistics span the chunk, so a chunked
        decode is close to, not equal to, an unchunked one unless the chunk covers the video.
        """
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise VAEInputError(
                f"latents must be (B, {self.latent_channels}, t, h, w); got {tuple(latents.shape)}"
            )
        self._check_tile(tile)
        t = latents.shape[2]
        num_frames = self._num_frames(t, num_frames)
        z = self.denormalize(latents)
        chunk = chunk_latents or self.config.decode_chunk_latents
        g = self.config.group_frames
        drop = g * t - num_frames  # 0 or g - 1, taken from the first chunk
        out = None
        written = 0
        for start in range(0, t, chunk):
            part = z[:, :, start : start + chunk]
            frames_here = g * part.shape[2] - (drop if start == 0 else 0)
            video = self.decode_raw(part, frames_here, tile)
            if out is None:
                out = video.new_empty((*video.shape[:2], num_frames, *video.shape[3:]))
            out[:, :, written : written + frames_here] = video.clamp(-1.0, 1.0)
            written += frames_here
        return out

    # ---- checkpoints --------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> None:
        """Write ``model.safetensors`` (weights + latent statistics) and ``config.json``."""
        save_checkpoint(path, self.state_dict(), self.config.to_dict())

    @classmethod
    def from_pretrained(cls, path: str | Path, *, map_location: str = "cpu") -> VideoVAE:
        """Load a ``save_pretrained`` folder; mismatched keys raise VAECheckpointError."""
        config = VAEConfig.from_dict(load_config(path))
        model = cls(config)
        state = load_weights(path)
        check_state_dict(model, state, str(path))
        model.load_state_dict(state)
        return model.to(map_location)
