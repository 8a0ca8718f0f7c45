#!/usr/bin/env bash
# EPT hidden-size sweep (EPT Figure 5: h in {1, 5, 10, 50, 100, 500, 1000}): one training
# run per hidden size of EPT's projection, each in MODEL_DIR/hidden_<h>, with
# --gin.EPT_HIDDEN=<h>, under EPT's recipe (recipes/ept_paper.gin: T5 v1.0 base, AdamW,
# batch 16, 30k steps, held-out test). Runs one after the other; rerunning resumes each
# run. Prints each run's selection and held-out metric at the end.
#
#   launch/ept_hidden_sweep.sh MODEL_DIR TASK [extra t5x-style flags...]
#   HIDDENS="1 10 100" launch/ept_hidden_sweep.sh /tmp/ept_h lester_glue_rte_v200_heldout \
#       --gin.INITIAL_CHECKPOINT_PATH="'/ckpt'"
#
# Env: HIDDENS (default "1 5 10 50 100 500 1000"), METHOD_GIN (default
#      recipes/ept_paper.gin; recipes/ept_star_paper.gin for EPT*), SIZE_GIN (a
#      models/t5_1_0_<size>.gin after the recipe), TRAIN (default
#      "python -m xprompt_jax.train"), DRY_RUN=1 (print the commands only).
set -euo pipefail
MODEL_DIR=${1:?usage: ept_hidden_sweep.sh MODEL_DIR TASK [flags...]}
TASK=${2:?usage: ept_hidden_sweep.sh MODEL_DIR TASK [flags...]}
shift 2
PYTHON=${PYTHON:-python}
HIDDENS=${HIDDENS:-1 5 10 50 100 500 1000}
read -r -a TRAIN_CMD <<< "${TRAIN:-${PYTHON} -m xprompt_jax.train}"
for H in ${HIDDENS}; do
  RUN_DIR="${MODEL_DIR%/}/hidden_${H}"
  CMD=("${TRAIN_CMD[@]}"
       --gin_file="${METHOD_GIN:-recipes/ept_paper.gin}"
       ${SIZE_GIN:+--gin_file="${SIZE_GIN}"}
       --gin.MODEL_DIR="'${RUN_DIR}'"
       --gin.MIXTURE_OR_TASK_NAME="'${TASK}'"
       --gin.EPT_HIDDEN="${H}"
       "$@")
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "${CMD[@]}"; echo
  else
    echo "=== EPT hidden size ${H}: ${RUN_DIR}"
    "${CMD[@]}"
  fi
done
if [[ "${DRY_RUN:-0}" != 1 ]]; then
  for H in ${HIDDENS}; do
    SUMMARY="${MODEL_DIR%/}/hidden_${H}/train_summary.json"
    if [[ -f "${SUMMARY}" ]]; then
      "${PYTHON}" - "${H}" "${SUMMARY}" <<'PY'
import json, sys
h, path = sys.argv[1], sys.argv[2]
best = json.load(open(path)).get("best_eval") or {}
held = best.get("heldout") or {}
print(f"hidden {h}: best step {best.get('step')}, selection {best.get('main_metric')}, "
      f"held-out {held.get('split')} {held.get('main_metric')}")
PY
    fi
  done
fi
