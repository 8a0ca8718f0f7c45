#!/usr/bin/env bash
# Two processes on this machine forming one mesh (the multi-host path of a TPU pod, on CPU):
# each process has NUM_CPU_DEVICES emulated CPU devices (default 4, so 8 in all), they meet
# at a coordinator on 127.0.0.1 (jax.distributed + gloo collectives; --coordinator_address,
# --process_count, --process_index as t5x/train.py names them), each reads its own data
# shard, and only process 0 writes logs and numpy exports (orbax writes one checkpoint).
#
#   launch/local_2proc.sh MODEL_DIR [extra t5x-style flags...]
#   launch/local_2proc.sh /tmp/w2 --gin.TRAIN_STEPS=20 --gin.EVAL_PERIOD=None
#
# Env: MODEL_GIN (default models/world_tiny.gin: the embedded world model), METHOD_GIN
#      (default prompt_tuning.gin), RUN_GIN (default world/run.gin), MODULE (default
#      xprompt_jax.train; also xprompt_jax.xprompt or xprompt_jax.evaluate), PORT (default: a
#      free port), NUM_PROCESSES (default 2), NUM_CPU_DEVICES (per process, default 4),
#      PYTHON (default python: the interpreter with xprompt_jax installed).
#      Logs of process i: MODEL_DIR/process_<i>.log.
set -euo pipefail
MODEL_DIR=${1:?usage: local_2proc.sh MODEL_DIR [flags...]}
shift 1
N=${NUM_PROCESSES:-2}
PYTHON=${PYTHON:-python}
PORT=${PORT:-$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
mkdir -p "$MODEL_DIR"
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${NUM_CPU_DEVICES:-4}"
export JAX_PLATFORMS=cpu
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
for ((i = 0; i < N; i++)); do
  "$PYTHON" -m "${MODULE:-xprompt_jax.train}" \
    --gin_file="${MODEL_GIN:-models/world_tiny.gin}" \
    --gin_file="${METHOD_GIN:-prompt_tuning.gin}" \
    --gin_file="${RUN_GIN:-world/run.gin}" \
    --gin.MODEL_DIR="'${MODEL_DIR}'" \
    --coordinator_address="127.0.0.1:${PORT}" --process_count="$N" --process_index="$i" \
    "$@" >"${MODEL_DIR}/process_${i}.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
[ "$status" -eq 0 ] || echo "a process failed (status $status); see ${MODEL_DIR}/process_*.log" >&2
exit "$status"
