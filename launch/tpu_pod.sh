#!/usr/bin/env bash
# Train on a Cloud TPU pod slice (TPU VMs): create it, install, run on every worker, tail, delete.
#
#   export TPU_NAME=ns2-pod ZONE=us-east5-a ACCELERATOR_TYPE=v5p-32 PROJECT=my-project
#   export WORKDIR=gs://my-bucket/runs/ns2_paper          # checkpoints, metrics, samples
#   export CONFIG=configs/diffusion.py:paper                # any config[:preset]
#   export EXTRA="--config.data.dataset_dir=gs://my-bucket/data/libritts_codes/1.0.0"
#   launch/tpu_pod.sh create      # the slice (add SPOT=1 for spot capacity)
#   launch/tpu_pod.sh setup       # copy this checkout to every worker, pip install (jax[tpu])
#   launch/tpu_pod.sh compile     # --compile_only on the pod: per-chip memory and FLOPs, no data
#   launch/tpu_pod.sh run         # start training on every worker (in the background, nohup)
#   launch/tpu_pod.sh tail        # follow worker 0's log (only process 0 writes metrics)
#   launch/tpu_pod.sh stop        # SIGTERM: every worker saves a checkpoint and exits
#   launch/tpu_pod.sh delete      # delete the slice (the gs:// work directory stays)
#
# One Python process per TPU VM worker; jax.distributed.initialize() finds the pod by itself
# (NS2_DISTRIBUTED=1). The global batch (config.batch_size) is split over all chips; each host
# reads its own shard of every batch (grain) and process 0 alone writes metrics and samples,
# while Orbax writes the sharded checkpoint from all hosts (async) into $WORKDIR/checkpoints.
# Running `run` again resumes from the last checkpoint, also on a slice of another size.
set -euo pipefail

die() { echo "launch/tpu_pod.sh: $*" >&2; exit 1; }
need() { [[ -n "${!1:-}" ]] || die "\$$1 is not set; export it (see the header of launch/tpu_pod.sh)."; }

ACTION="${1:-}"
need TPU_NAME
need ZONE
RUNTIME_VERSION="${RUNTIME_VERSION:-v2-alpha-tpuv5}"  # v4: tpu-ubuntu2204-base; v5e: v2-alpha-tpuv5-lite
REMOTE_DIR="${REMOTE_DIR:-naturalspeech2_jax}"
LOG="${LOG:-\$HOME/ns2_train.log}"
JAX_VERSION="${JAX_VERSION:-0.10.2}"
GCLOUD=(gcloud compute tpus tpu-vm)
PROJECT_FLAG=()
[[ -n "${PROJECT:-}" ]] && PROJECT_FLAG=(--project="$PROJECT")

on_all() { "${GCLOUD[@]}" ssh "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" --worker=all --command="$1"; }

train_cmd() {  # the same command on every worker; $1 = extra flags
  need CONFIG
  need WORKDIR
  echo "cd $REMOTE_DIR && NS2_DISTRIBUTED=1 python3 launch/train.py --config=$CONFIG" \
       "--workdir=$WORKDIR ${EXTRA:-} $1"
}

case "$ACTION" in
  create)
    need ACCELERATOR_TYPE
    spot=()
    [[ "${SPOT:-0}" == 1 ]] && spot=(--spot)
    "${GCLOUD[@]}" create "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" \
      --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "${spot[@]}"
    ;;
  setup)
    root="$(cd "$(dirname "$0")/.." && pwd)"
    tarball="$(mktemp -d)/ns2.tar.gz"
    tar -C "$root" --exclude=.git --exclude='runs' --exclude='work' -czf "$tarball" .
    "${GCLOUD[@]}" scp "$tarball" "$TPU_NAME:ns2.tar.gz" --zone="$ZONE" "${PROJECT_FLAG[@]}" \
      --worker=all
    on_all "mkdir -p $REMOTE_DIR && tar -xzf ns2.tar.gz -C $REMOTE_DIR && cd $REMOTE_DIR && \
      pip install -q -e '.[gcs]' && pip install -q -U 'jax[tpu]==$JAX_VERSION' \
      -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
    ;;
  compile)
    on_all "$(train_cmd --compile_only)"
    ;;
  run)
    on_all "($(train_cmd "")) > $LOG 2>&1 < /dev/null & echo \$! > \$HOME/ns2_train.pid"
    echo "started on every worker of $TPU_NAME; follow it with: launch/tpu_pod.sh tail"
    ;;
  tail)
    "${GCLOUD[@]}" ssh "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" --worker=0 \
      --command="tail -n 100 -F $LOG"
    ;;
  stop)
    on_all "kill -TERM \$(cat \$HOME/ns2_train.pid)"
    ;;
  delete)
    "${GCLOUD[@]}" delete "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" --quiet
    ;;
  *)
    die "unknown action '${ACTION}'; use one of create, setup, compile, run, tail, stop, delete."
    ;;
esac
