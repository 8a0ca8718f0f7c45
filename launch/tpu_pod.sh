#!/usr/bin/env bash
# Prompt tuning on a multi-host TPU pod slice: the same command runs on every worker
# (gcloud ... ssh --worker=all); each process calls jax.distributed.initialize() (the
# trainer's --multiprocess=yes) and reads its own data shard (seqio ShardInfo by process
# index). MODEL_DIR, checkpoints and data must be on GCS.
#
#   launch/tpu_pod.sh TPU_NAME ZONE MODEL_DIR TASK [extra t5x-style flags...]
#
# Env: MODEL_GIN (default models/t5_1_1_lm100k_xxl.gin), METHOD_GIN (default prompt_tuning.gin),
#      MESH_SHAPE (default "(-1, 8)": model parallelism 8 for xxl), REPO_DIR (path of this repo
#      on the workers, default ~/xprompt_jax), PROJECT (gcloud project, optional).
#
# The workers' shell runs the command built here, so every value in it is quoted
# (printf %q) and MODEL_DIR, TASK and MESH_SHAPE, which also land inside gin strings, must
# match a strict pattern: nothing in an argument can run on the workers.
set -euo pipefail
TPU_NAME=${1:?usage: tpu_pod.sh TPU_NAME ZONE MODEL_DIR TASK [flags...]}
ZONE=${2:?}
MODEL_DIR=${3:?}
TASK=${4:?}
shift 4
refuse() { echo "tpu_pod.sh: $1" >&2; exit 2; }
case "$MODEL_DIR" in gs://*) ;; *) refuse "MODEL_DIR must be a gs:// path on a pod";; esac
[[ "$MODEL_DIR" =~ ^gs://[A-Za-z0-9][A-Za-z0-9._/-]*$ ]] \
  || refuse "MODEL_DIR $(printf %q "$MODEL_DIR") may hold only letters, digits and . _ / -"
[[ "$TASK" =~ ^[A-Za-z0-9][A-Za-z0-9_.+-]*$ ]] \
  || refuse "TASK $(printf %q "$TASK") may hold only letters, digits and _ . + -"
MESH=${MESH_SHAPE:-(-1, 8)}
[[ "$MESH" =~ ^[-0-9(),\ ]+$ ]] || refuse "MESH_SHAPE $(printf %q "$MESH") is not a tuple of ints"
REPO='~/xprompt_jax'
REPO=${REPO_DIR:-$REPO}
case "$REPO" in  # keep a leading ~/ unquoted: the worker's shell expands it to its home
  "~/"*) REPO_Q="~/$(printf %q "${REPO#"~/"}")";;
  *) REPO_Q=$(printf %q "$REPO");;
esac
q() { printf ' %q' "$@"; }
REMOTE="cd ${REPO_Q} && python -m xprompt_jax.train$(q \
  "--gin_file=${MODEL_GIN:-models/t5_1_1_lm100k_xxl.gin}" \
  "--gin_file=${METHOD_GIN:-prompt_tuning.gin}" \
  "--gin.MODEL_DIR='${MODEL_DIR}'" \
  "--gin.MIXTURE_OR_TASK_NAME='${TASK}'" \
  "--gin.MESH_SHAPE=${MESH}" \
  --multiprocess=yes "$@")"
PROJECT_ARGS=()
if [[ -n "${PROJECT:-}" ]]; then PROJECT_ARGS=("--project=${PROJECT}"); fi
# One-time worker setup (uncomment on first use):
# gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all \
#   --command='pip install -U "jax[tpu]" && git clone <this repo> ~/xprompt_jax && pip install -e ~/xprompt_jax'
exec gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" \
  ${PROJECT_ARGS[@]+"${PROJECT_ARGS[@]}"} --worker=all --command="$REMOTE"
