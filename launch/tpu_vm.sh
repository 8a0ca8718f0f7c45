#!/usr/bin/env bash
# Prompt tuning on a single-host TPU VM (v3-8, v4-8, v5e-8 ...), run on the VM itself.
# Install once on the VM:  pip install -U "jax[tpu]" && pip install -e .
#
#   launch/tpu_vm.sh MODEL_DIR TASK [extra t5x-style flags...]
#
# MODEL_DIR and INITIAL_CHECKPOINT_PATH may be gs:// paths. TFDS data: --tfds_data_dir=gs://...
# Env: MODEL_GIN (default models/t5_1_1_lm100k_xl.gin), METHOD_GIN, MESH_SHAPE (default "(-1, 1)").
set -euo pipefail
MODEL_DIR=${1:?usage: tpu_vm.sh MODEL_DIR TASK [flags...]}
TASK=${2:?usage: tpu_vm.sh MODEL_DIR TASK [flags...]}
shift 2
exec python -m xprompt_jax.train \
  --gin_file="${MODEL_GIN:-models/t5_1_1_lm100k_xl.gin}" \
  --gin_file="${METHOD_GIN:-prompt_tuning.gin}" \
  --gin.MODEL_DIR="'${MODEL_DIR}'" \
  --gin.MIXTURE_OR_TASK_NAME="'${TASK}'" \
  --gin.MESH_SHAPE="${MESH_SHAPE:-(-1, 1)}" \
  --multiprocess=no \
  "$@"
