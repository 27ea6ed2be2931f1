"""mugv.vae: the MUG-V two-stage video VAE (8x8x8 compression, 24 latent channels)."""

from mugv.vae._errors import VAECheckpointError, VAEConfigError, VAEError, VAEInputError
from mugv.vae.config import CONFIGS, SpatialConfig, TemporalConfig, VAEConfig
from mugv.vae.convert import convert_state_dict, load_authors_checkpoint
from mugv.vae.encode import EncodeReport, encode_shards
from mugv.vae.frames import clips_to_batch, tensor_to_frames, video_to_tensor
from mugv.vae.losses import LossConfig, PatchDiscriminator3D, psnr, ssim
from mugv.vae.model import LatentCodec, VideoVAE
from mugv.vae.stats import (
    RunningStats,
    compute_latent_stats,
    decoder_sensitivity,
    fit_linear_shortcut,
    fit_scaling_factor,
    fit_temporal_start,
    weight_latent_channels,
)
from mugv.vae.train import VAETrainConfig, VAETrainModule, make_step_fn, train_vae

__version__ = "0.1.0"

__all__ = [
    "CONFIGS",
    "EncodeReport",
    "LatentCodec",
    "LossConfig",
    "PatchDiscriminator3D",
    "RunningStats",
    "SpatialConfig",
    "TemporalConfig",
    "VAECheckpointError",
    "VAEConfig",
    "VAEConfigError",
    "VAEError",
    "VAEInputError",
    "VAETrainConfig",
    "VAETrainModule",
    "VideoVAE",
    "__version__",
    "clips_to_batch",
    "compute_latent_stats",
    "convert_state_dict",
    "decoder_sensitivity",
    "encode_shards",
    "fit_linear_shortcut",
    "fit_scaling_factor",
    "fit_temporal_start",
    "load_authors_checkpoint",
    "make_step_fn",
    "psnr",
    "ssim",
    "tensor_to_frames",
    "train_vae",
    "video_to_tensor",
    "weight_latent_channels",
]
