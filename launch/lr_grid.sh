#!/usr/bin/env bash
# Learning-rate grid: one training run per learning rate (the EPT paper sweeps the rate for
# each method), each in MODEL_DIR/lr_<rate>, with --gin.LEARNING_RATE=<rate>. Runs one
# after the other; rerunning the script resumes each run from its own checkpoints
# (finished runs stop at once). Prints each run's best eval at the end.
#
#   launch/lr_grid.sh MODEL_DIR TASK [extra t5x-style flags...]
#   METHOD_GIN=ept.gin LRS="0.3 0.1 0.03" launch/lr_grid.sh /tmp/ept_rte \
#       xprompt_super_glue_rte_local --gin.INITIAL_CHECKPOINT_PATH="'/ckpt'"
#
# Env: METHOD_GIN (default ept.gin), MODEL_GIN (default models/t5_1_1_lm100k_base.gin),
#      LRS (space-separated rates; default xprompt_jax.training.schedules.DEFAULT_LR_GRID),
#      TRAIN (the command that trains; default "python -m xprompt_jax.train"),
#      DRY_RUN=1 (print the commands instead of running them).
set -euo pipefail
MODEL_DIR=${1:?usage: lr_grid.sh MODEL_DIR TASK [flags...]}
TASK=${2:?usage: lr_grid.sh MODEL_DIR TASK [flags...]}
shift 2
PYTHON=${PYTHON:-python}
if [[ -z "${LRS:-}" ]]; then
  LRS=$("${PYTHON}" -c 'from xprompt_jax.training import schedules as s
print(" ".join(repr(v) for v in s.learning_rate_grid(s.DEFAULT_LR_GRID)))')
fi
read -r -a TRAIN_CMD <<< "${TRAIN:-${PYTHON} -m xprompt_jax.train}"
for LR in ${LRS}; do
  RUN_DIR="${MODEL_DIR%/}/lr_${LR}"
  CMD=("${TRAIN_CMD[@]}"
       --gin_file="${MODEL_GIN:-models/t5_1_1_lm100k_base.gin}"
       --gin_file="${METHOD_GIN:-ept.gin}"
       --gin.MODEL_DIR="'${RUN_DIR}'"
       --gin.MIXTURE_OR_TASK_NAME="'${TASK}'"
       --gin.LEARNING_RATE="${LR}"
       "$@")
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "${CMD[@]}"; echo
  else
    echo "=== learning rate ${LR}: ${RUN_DIR}"
    "${CMD[@]}"
  fi
done
if [[ "${DRY_RUN:-0}" != 1 ]]; then
  for LR in ${LRS}; do
    SUMMARY="${MODEL_DIR%/}/lr_${LR}/train_summary.json"
    if [[ -f "${SUMMARY}" ]]; then
      "${PYTHON}" - "${LR}" "${SUMMARY}" <<'PY'
import json, sys
lr, path = sys.argv[1], sys.argv[2]
best = json.load(open(path)).get("best_eval") or {}
print(f"lr {lr}: best step {best.get('step')}, main metric {best.get('main_metric')}")
PY
    fi
  done
fi
