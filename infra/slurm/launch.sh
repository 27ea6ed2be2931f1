# Sourced by the sbatch scripts (from the directory `sbatch` ran in, the repository root),
# which set APP, ARGS (the app's arguments) and GPUS_PER_NODE. One torchrun per node
# (`--ntasks-per-node=1`), all meeting at a c10d rendezvous on the first node; torchrun
# exports RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR to the ranks it starts.
# `--signal=TERM@300` in the scripts asks the run to checkpoint and stop before the time
# limit; submitting the same script again resumes it.
set -euo pipefail
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)  # reads all lines: no SIGPIPE under pipefail
MASTER_PORT=${MASTER_PORT:-29500}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
export TORCH_NCCL_ASYNC_ERROR_HANDLING=1
srun --kill-on-bad-exit=1 torchrun \
  --nnodes "$SLURM_JOB_NUM_NODES" --nproc-per-node "$GPUS_PER_NODE" \
  --rdzv-backend c10d --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv-id "$SLURM_JOB_ID" \
  -m mugv.apps.cli "$APP" "${ARGS[@]}" "$@"
