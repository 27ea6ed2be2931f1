#!/usr/bin/env bash
# The reference video VAE on one 8-GPU node, data parallel (DP=8).
# Usage (repository root): bash infra/torchrun/train-vae.sh [--set SECTION.FIELD=VALUE ...]
APP=train-vae
CONFIG=${CONFIG:-infra/configs/train-vae.yaml}
ARGS=("$CONFIG" -o "${OUT:-runs/vae}")
NNODES=1
GPUS_PER_NODE=8
source "$(dirname "${BASH_SOURCE[0]}")/launch.sh"
