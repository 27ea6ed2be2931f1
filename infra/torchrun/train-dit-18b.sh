#!/usr/bin/env bash
# MUGDiT-18B on one 8-GPU node: TP=8 + SP, DP=1; the config's CP=2 needs 16 ranks, so one node runs CP=1.
# Usage (repository root): bash infra/torchrun/train-dit-18b.sh [--set SECTION.FIELD=VALUE ...]
# Rerun the same command to resume; the curriculum and the layout are in the config.
APP=train-dit
CONFIG=${CONFIG:-infra/configs/train-dit-18b.yaml}
ARGS=("$CONFIG" -o "${OUT:-runs/dit-18b}" --set parallel.context=1)
NNODES=1
GPUS_PER_NODE=8
source "$(dirname "${BASH_SOURCE[0]}")/launch.sh"
