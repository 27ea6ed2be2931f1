"""mugv.dit: MUGDiT, the MUG-V diffusion transformer."""

from mugv.dit.config import NAMED_CONFIGS, DiTConfig, DiTError, dit_config
from mugv.dit.convert import (
    config_from_reference,
    from_reference,
    load_reference_checkpoint,
    to_reference,
)
from mugv.dit.flops import dit_forward_flops
from mugv.dit.guidance import cfg_combine
from mugv.dit.model import MUGDiT
from mugv.dit.pipeline import (
    GenerationConfig,
    LatentCodec,
    Pipeline,
    PipelineError,
    video_to_clips,
)
from mugv.dit.rectified_flow import (
    TASKS,
    FlowConfig,
    FlowError,
    RectifiedFlow,
    masked_mse,
    shift_ratio,
    time_shift,
)
from mugv.dit.samplers import (
    SAMPLERS,
    EulerSampler,
    FlowSampler,
    HeunSampler,
    MultistepSampler,
    flow_sigmas,
)
from mugv.dit.specs import default_spec, local_spec, te_spec
from mugv.dit.text_encoder import (
    HFTextEncoder,
    TextEncoder,
    TextEncoderError,
    default_text_encoder_path,
)
from mugv.dit.train import DiTStep, LatentTextDataset, collate_latents, train_dit

__version__ = "0.1.0"

__all__ = [
    "NAMED_CONFIGS",
    "SAMPLERS",
    "TASKS",
    "DiTConfig",
    "DiTError",
    "DiTStep",
    "EulerSampler",
    "FlowConfig",
    "FlowError",
    "FlowSampler",
    "GenerationConfig",
    "HFTextEncoder",
    "HeunSampler",
    "LatentCodec",
    "LatentTextDataset",
    "MUGDiT",
    "MultistepSampler",
    "Pipeline",
    "PipelineError",
    "RectifiedFlow",
    "TextEncoder",
    "TextEncoderError",
    "__version__",
    "cfg_combine",
    "collate_latents",
    "config_from_reference",
    "default_spec",
    "default_text_encoder_path",
    "dit_config",
    "dit_forward_flops",
    "flow_sigmas",
    "from_reference",
    "load_reference_checkpoint",
    "local_spec",
    "masked_mse",
    "shift_ratio",
    "te_spec",
    "time_shift",
    "to_reference",
    "train_dit",
    "video_to_clips",
]
