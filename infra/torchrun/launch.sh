# Sourced by the torchrun recipes, which set APP, ARGS (the app's arguments), NNODES and
# GPUS_PER_NODE. One node: --standalone rendezvous. Several nodes (run the same script on
# each, with NODE_RANK and MASTER_ADDR set): a c10d rendezvous on MASTER_ADDR:MASTER_PORT.
# Extra arguments go to the app (e.g. --set train.checkpoint_every=200).
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
if [[ "$NNODES" -eq 1 ]]; then
  RDZV=(--standalone)
else
  RDZV=(--rdzv-backend c10d --rdzv-endpoint "${MASTER_ADDR:?set MASTER_ADDR}:${MASTER_PORT:-29500}"
        --rdzv-id "${RDZV_ID:-mugv-$APP}" --node-rank "${NODE_RANK:?set NODE_RANK}")
fi
exec torchrun --nnodes "$NNODES" --nproc-per-node "$GPUS_PER_NODE" "${RDZV[@]}" \
  -m mugv.apps.cli "$APP" "${ARGS[@]}" "$@"
