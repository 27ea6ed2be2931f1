"""mugv.dit: MUGDiT, the MUG-V diffusion transformer."""

from mugv.dit.config import NAMED_CONFIGS, DiTConfig, DiTError, dit_config
from mugv.dit.convert import (
    config_from_reference,
    from_reference,
    load_reference_checkpoint,
    to_reference,
)
from mugv.dit.enhance import (
    DEGRADATIONS,
    EnhanceConfig,
    EnhancePairs,
    Enhancer,
    EnhanceStep,
    degrade,
    psnr,
    train_enhancer,
)
from mugv.dit.flops import dit_forward_flops
from mugv.dit.guidance import cfg_combine
from mugv.dit.lora import (
    LoRAConfig,
    LoRAError,
    LoRALinear,
    adapters_disabled,
    apply_lora,
    load_adapters,
    lora_state_dict,
    merge_lora,
    save_adapters,
)
from mugv.dit.model import MUGDiT
from mugv.dit.pipeline import (
    GenerationConfig,
    LatentCodec,
    Pipeline,
    PipelineError,
    video_to_clips,
)
from mugv.dit.preference import (
    DPOStep,
    PreferenceConfig,
    PreferenceLatents,
    dpo_loss,
    generate_pairs,
    train_preference,
    unlikelihood_loss,
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
    "DEGRADATIONS",
    "NAMED_CONFIGS",
    "SAMPLERS",
    "TASKS",
    "DPOStep",
    "DiTConfig",
    "DiTError",
    "DiTStep",
    "EnhanceConfig",
    "EnhancePairs",
    "EnhanceStep",
    "Enhancer",
    "EulerSampler",
    "FlowConfig",
    "FlowError",
    "FlowSampler",
    "GenerationConfig",
    "HFTextEncoder",
    "HeunSampler",
    "LatentCodec",
    "LatentTextDataset",
    "LoRAConfig",
    "LoRAError",
    "LoRALinear",
    "MUGDiT",
    "MultistepSampler",
    "Pipeline",
    "PipelineError",
    "PreferenceConfig",
    "PreferenceLatents",
    "RectifiedFlow",
    "TextEncoder",
    "TextEncoderError",
    "__version__",
    "adapters_disabled",
    "apply_lora",
    "cfg_combine",
    "collate_latents",
    "config_from_reference",
    "default_spec",
    "default_text_encoder_path",
    "degrade",
    "dit_config",
    "dit_forward_flops",
    "dpo_loss",
    "flow_sigmas",
    "from_reference",
    "generate_pairs",
    "load_adapters",
    "load_reference_checkpoint",
    "local_spec",
    "lora_state_dict",
    "masked_mse",
    "merge_lora",
    "psnr",
    "save_adapters",
    "shift_ratio",
    "te_spec",
    "time_shift",
    "to_reference",
    "train_dit",
    "train_enhancer",
    "train_preference",
    "unlikelihood_loss",
    "video_to_clips",
]
