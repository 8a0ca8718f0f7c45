#!/usr/bin/env bash
# Prompt tuning on one GPU host (all local GPUs form the 'data' axis of the mesh).
# Install JAX with CUDA first:  pip install -U "jax[cuda12]"  (same jax version as setup.py).
#
#   launch/gpu.sh MODEL_DIR TASK [extra t5x-style flags...]
#
# Env: MODEL_GIN (default models/t5_1_1_lm100k_base.gin), METHOD_GIN (default prompt_tuning.gin),
#      MESH_SHAPE (default "(-1, 1)"; e.g. "(2, 4)" for 8 GPUs with model parallelism 4).
set -euo pipefail
MODEL_DIR=${1:?usage: gpu.sh MODEL_DIR TASK [flags...]}
TASK=${2:?usage: gpu.sh MODEL_DIR TASK [flags...]}
shift 2
# Let XLA use most GPU memory for the frozen model; no TF GPU use (tf.data runs on CPU).
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
export TF_FORCE_GPU_ALLOW_GROWTH=true
export CUDA_MODULE_LOADING=LAZY
exec python -m xprompt_jax.train \
  --gin_file="${MODEL_GIN:-models/t5_1_1_lm100k_base.gin}" \
  --gin_file="${METHOD_GIN:-prompt_tuning.gin}" \
  --gin.MODEL_DIR="'${MODEL_DIR}'" \
  --gin.MIXTURE_OR_TASK_NAME="'${TASK}'" \
  --gin.MESH_SHAPE="${MESH_SHAPE:-(-1, 1)}" \
  "$@"
