"""mugv.infra: the distributed training runtime on Megatron-Core."""

from mugv.infra._errors import (
    CheckpointError,
    ConfigError,
    DistributedError,
    InfraError,
    RankError,
)
from mugv.infra._rng import (
    CpuRNGStatesTracker,
    fork_data_parallel_rng,
    get_rng_state,
    manual_seed,
    set_rng_state,
)
from mugv.infra.checkpoint import (
    CheckpointManager,
    complete_checkpoints,
    export_safetensors,
    latest_checkpoint,
)
from mugv.infra.data import ShuffledBatches
from mugv.infra.data_parallel import TorchDataParallel, make_data_parallel
from mugv.infra.ema import EMA
from mugv.infra.megatron_data_parallel import MegatronDataParallel
from mugv.infra.meter import PEAK_BF16_FLOPS, ThroughputMeter, fast_bf16, peak_flops
from mugv.infra.parallel import (
    DistInfo,
    ParallelConfig,
    destroy_distributed,
    dist_info,
    init_distributed,
    launch_env,
    single_process,
)
from mugv.infra.pipeline import PipelineSchedule, global_names
from mugv.infra.schedule import lr_at
from mugv.infra.trainer import StepOutput, Trainer, TrainerConfig

__version__ = "0.1.0"

__all__ = [
    "EMA",
    "PEAK_BF16_FLOPS",
    "CheckpointError",
    "CheckpointManager",
    "ConfigError",
    "CpuRNGStatesTracker",
    "DistInfo",
    "DistributedError",
    "InfraError",
    "MegatronDataParallel",
    "ParallelConfig",
    "PipelineSchedule",
    "RankError",
    "ShuffledBatches",
    "StepOutput",
    "ThroughputMeter",
    "TorchDataParallel",
    "Trainer",
    "TrainerConfig",
    "__version__",
    "complete_checkpoints",
    "destroy_distributed",
    "dist_info",
    "export_safetensors",
    "fast_bf16",
    "fork_data_parallel_rng",
    "get_rng_state",
    "global_names",
    "init_distributed",
    "latest_checkpoint",
    "launch_env",
    "lr_at",
    "make_data_parallel",
    "manual_seed",
    "peak_flops",
    "set_rng_state",
    "single_process",
]
