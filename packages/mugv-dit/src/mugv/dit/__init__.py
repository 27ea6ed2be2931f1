"""mugv.dit: MUGDiT, the MUG-V diffusion transformer."""

from mugv.dit.config import NAMED_CONFIGS, DiTConfig, DiTError, dit_config
from mugv.dit.convert import (
    config_from_reference,
    from_reference,
    load_reference_checkpoint,
    to_reference,
)
from mugv.dit.flops import dit_forward_flops
from mugv.dit.model import MUGDiT
from mugv.dit.specs import default_spec, local_spec, te_spec

__version__ = "0.1.0"

__all__ = [
    "NAMED_CONFIGS",
    "DiTConfig",
    "DiTError",
    "MUGDiT",
    "__version__",
    "config_from_reference",
    "default_spec",
    "dit_config",
    "dit_forward_flops",
    "from_reference",
    "load_reference_checkpoint",
    "local_spec",
    "te_spec",
    "to_reference",
]
