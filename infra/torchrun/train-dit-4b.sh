#!/usr/bin/env bash
# MUGDiT-4B on one 8-GPU node: TP=2 + SP, DP=4.
# Usage (repository root): bash infra/torchrun/train-dit-4b.sh [--set SECTION.FIELD=VALUE ...]
# Rerun the same command to resume; the curriculum and the layout are in the config.
APP=train-dit
CONFIG=${CONFIG:-infra/configs/train-dit-4b.yaml}
ARGS=("$CONFIG" -o "${OUT:-runs/dit-4b}")
NNODES=1
GPUS_PER_NODE=8
source "$(dirname "${BASH_SOURCE[0]}")/launch.sh"
