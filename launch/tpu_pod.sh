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
set -euo pipefail
TPU_NAME=${1:?usage: tpu_pod.sh TPU_NAME ZONE MODEL_DIR TASK [flags...]}
ZONE=${2:?}
MODEL_DIR=${3:?}
TASK=${4:?}
shift 4
case "$MODEL_DIR" in gs://*) ;; *) echo "MODEL_DIR must be a gs:// path on a pod" >&2; exit 2;; esac
EXTRA=$(printf " %q" "$@")
PROJECT_FLAG=${PROJECT:+--project=${PROJECT}}
REMOTE="cd ${REPO_DIR:-~/xprompt_jax} && python -m xprompt_jax.train \
  --gin_file=${MODEL_GIN:-models/t5_1_1_lm100k_xxl.gin} \
  --gin_file=${METHOD_GIN:-prompt_tuning.gin} \
  --gin.MODEL_DIR=\"'${MODEL_DIR}'\" \
  --gin.MIXTURE_OR_TASK_NAME=\"'${TASK}'\" \
  --gin.MESH_SHAPE=\"${MESH_SHAPE:-(-1, 8)}\" \
  --multiprocess=yes${EXTRA}"
# One-time worker setup (uncomment on first use):
# gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --worker=all \
#   --command='pip install -U "jax[tpu]" && git clone <this repo> ~/xprompt_jax && pip install -e ~/xprompt_jax'
exec gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --worker=all \
  --command="$REMOTE"
