"""mugv.infra: the distributed training runtime on Megatron-Core."""

from mugv.infra._errors import CheckpointError, ConfigError, DistributedError, InfraError, RankError
from mugv.infra._rng import CpuRNGStatesTracker, get_rng_state, manual_seed, set_rng_state
from mugv.infra.parallel import (
    DistInfo,
    ParallelConfig,
    destroy_distributed,
    init_distributed,
    launch_env,
    single_process,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "CpuRNGStatesTracker",
    "DistInfo",
    "DistributedError",
    "InfraError",
    "ParallelConfig",
    "RankError",
    "__version__",
    "destroy_distributed",
    "get_rng_state",
    "init_distributed",
    "launch_env",
    "manual_seed",
    "set_rng_state",
    "single_process",
]
