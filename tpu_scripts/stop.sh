#!/usr/bin/env bash
# Stop the flaxlm training run on every worker (or, with --vm, stop the TPU VM itself).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: ${SCRIPT_NAME} --name NAME --zone ZONE [--grace SECONDS] [--vm]

On every worker (--worker=all): send SIGTERM to the process group started by train.sh
(pid in ~/${REMOTE_PID}), wait up to --grace seconds, then SIGKILL. The TPU VM keeps
running (and billing) until delete.sh.

Options:
  --grace SECONDS  how long to wait after SIGTERM before SIGKILL (default 60)
  --vm             instead, stop the TPU VM itself (gcloud compute tpus tpu-vm stop);
                   only single-host TPU VMs created without --queued can be stopped

${COMMON_USAGE}

Example:
  ${SCRIPT_NAME} --name lm-v4 --zone us-central2-b
EOF
}

GRACE=60
VM=0
while (($#)); do
  case $1 in
    --grace | --grace=*)
      take_value "$@"
      GRACE=$VALUE
      ;;
    --vm)
      VM=1
      SHIFT=1
      ;;
    *) common_flag "$@" || die "unknown argument '$1' (see --help)" ;;
  esac
  shift "$SHIFT"
done

require_target
[[ $GRACE =~ ^[0-9]+$ ]] || die "invalid --grace '$GRACE' (seconds)"

if ((VM)); then
  run gcloud compute tpus tpu-vm stop "$NAME" "${LOCATION[@]}"
  exit 0
fi

# shellcheck disable=SC2016  # single-quoted parts are expanded by the remote shell
{
  remote='set -eu; cd "$HOME"; '"$REMOTE_ALIVE_FN"
  remote+="; if ! test -f $REMOTE_PID; then echo \"no flaxlm training started on \$(hostname)\"; exit 0; fi"
  remote+="; pid=\$(cat $REMOTE_PID)"
  remote+='; if alive "$pid"; then kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"; i=0'
  remote+="; while alive \"\$pid\" && test \"\$i\" -lt $GRACE; do sleep 1; i=\$((i + 1)); done"
  remote+='; if alive "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"; fi'
  remote+='; echo "flaxlm train (pid $pid) stopped on $(hostname)"'
  remote+='; else echo "flaxlm train (pid $pid) was not running on $(hostname)"; fi'
  remote+="; rm -f $REMOTE_PID"
}
ssh_workers all "$remote"
