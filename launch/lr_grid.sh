#!/usr/bin/env bash
# Learning-rate grid: one training run per learning rate (the EPT paper sweeps
# {3e-3, 1e-2, 3e-2, 1e-1, 3e-1} for each method, App. B.2), each in MODEL_DIR/lr_<rate>,
# with --gin.LEARNING_RATE=<rate>. Runs one
# after the other; rerunning the script resumes each run from its own checkpoints
# (finished runs stop at once). Prints each run's best eval at the end.
#
#   launch/lr_grid.sh MODEL_DIR TASK [extra t5x-style flags...]
#   launch/lr_grid.sh /tmp/ept_rte lester_glue_rte_v200_heldout \
#       --gin.INITIAL_CHECKPOINT_PATH="'/ckpt'"
#   METHOD_GIN=ept.gin MODEL_GIN=models/t5_1_1_lm100k_base.gin LRS="0.3 0.1" ...
#
# Env: METHOD_GIN (default recipes/ept_paper.gin: T5 v1.0 base, EPT's protocol),
#      MODEL_GIN (a models/*.gin file put *before* METHOD_GIN, for method files that
#      include no model; default none), SIZE_GIN (put *after* METHOD_GIN, e.g.
#      models/t5_1_0_large.gin with a recipe; default none),
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
       ${MODEL_GIN:+--gin_file="${MODEL_GIN}"}
       --gin_file="${METHOD_GIN:-recipes/ept_paper.gin}"
       ${SIZE_GIN:+--gin_file="${SIZE_GIN}"}
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
