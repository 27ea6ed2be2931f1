#!/usr/bin/env bash
# Clip shards -> latent shards (+ T5 caption embeddings) on one 8-GPU node, shards dealt to ranks.
# Usage (repository root): bash infra/torchrun/encode.sh [--set encode.out=data/latents-360p ...]
APP=encode
CONFIG=${CONFIG:-infra/configs/encode.yaml}
ARGS=(-c "$CONFIG")
NNODES=1
GPUS_PER_NODE=8
source "$(dirname "${BASH_SOURCE[0]}")/launch.sh"
