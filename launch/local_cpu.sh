#!/usr/bin/env bash
# Prompt tuning on the local CPU with 8 emulated devices (a (8, 1) ('data', 'model') mesh by
# default), e.g. to check a configuration before a TPU run.
#
#   launch/local_cpu.sh MODEL_DIR TASK [extra t5x-style flags...]
#   launch/local_cpu.sh /tmp/pt xprompt_super_glue_rte_local --gin.INITIAL_CHECKPOINT_PATH="'/ckpt'"
#
# Env: MODEL_GIN (default models/t5_1_1_small.gin), METHOD_GIN (default prompt_tuning.gin),
#      NUM_CPU_DEVICES (default 8).
set -euo pipefail
MODEL_DIR=${1:?usage: local_cpu.sh MODEL_DIR TASK [flags...]}
TASK=${2:?usage: local_cpu.sh MODEL_DIR TASK [flags...]}
shift 2
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${NUM_CPU_DEVICES:-8}"
export JAX_PLATFORMS=cpu
exec python -m xprompt_jax.train \
  --gin_file="${MODEL_GIN:-models/t5_1_1_small.gin}" \
  --gin_file="${METHOD_GIN:-prompt_tuning.gin}" \
  --gin.ACTIVATION_DTYPE="'float32'" \
  --gin.MODEL_DIR="'${MODEL_DIR}'" \
  --gin.MIXTURE_OR_TASK_NAME="'${TASK}'" \
  "$@"
