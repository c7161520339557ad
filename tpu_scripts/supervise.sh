#!/usr/bin/env bash
# Keep a spot / queued-resource TPU training run going: re-create the slice after a preemption
# and relaunch the same `flaxlm train` command on the same gs:// workdir, which resumes it.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
  cat <<EOF
Usage: ${SCRIPT_NAME} --name NAME --zone ZONE --accelerator TYPE [--spot] [--queued]
       --config CONFIG.py --workdir gs://BUCKET/DIR [--config.KEY=VALUE ...] [options]
       [-- FLAXLM_TRAIN_ARGS...]

Creates the slice (create.sh), installs flaxlm (install.sh) and starts training (train.sh),
then checks every --poll seconds:
  * slice READY and flaxlm train alive on worker 0: keep watching;
  * slice preempted, suspended, failed or gone: one log line (stderr and --log), delete it
    (delete.sh), re-create it, install and start the same command again. The run resumes from
    the newest checkpoint in the gs:// workdir (flaxlm checkpoints on SIGTERM, on every worker
    at the same step);
  * slice READY but training stopped by SIGTERM (e.g. a maintenance event): start it again;
  * training finished: exit 0. Training failed for another reason: exit 1 (see logs.sh).
Gives up (exit 1) after --max-preemptions restarts.

Options:
  --accelerator TYPE     as create.sh (env TPU_ACCELERATOR, required)
  --spot, --queued       as create.sh; --queued also makes delete.sh delete the queued resource
  --runtime-version VER  as create.sh
  --config PATH          as train.sh (required)
  --workdir gs://...     as train.sh (required): the same workdir every time
  --config.KEY=VALUE     as train.sh; repeatable
  --env KEY=VALUE        as train.sh; repeatable
  --source SRC           as install.sh
  --max-preemptions N    restarts before giving up (default 10)
  --poll SECONDS         seconds between checks (default 120)
  --log FILE             also append each preemption line to FILE
  -- ARGS...             further arguments for flaxlm train, unchanged

--dry-run prints one round: the commands that create, install and start, then the two that
check the slice and the run; they repeat every --poll seconds, with delete.sh and the first
three again after each preemption.

${COMMON_USAGE}

Example:
  ${SCRIPT_NAME} --name lm-v5e --zone us-west4-a --accelerator v5litepod-16 --spot \\
      --config configs/flare_it_mlm.py --workdir gs://my-bucket/runs/flare --log preemptions.log
EOF
}

ACCELERATOR=${TPU_ACCELERATOR:-}
CREATE_ARGS=()
INSTALL_ARGS=()
TRAIN_ARGS=()
DELETE_ARGS=()
QUEUED=0
MAX_PREEMPTIONS=10
POLL=120
LOG_FILE=
CONFIG=
WORKDIR=
while (($#)); do
  case $1 in
    --accelerator | --accelerator=*)
      take_value "$@"
      ACCELERATOR=$VALUE
      ;;
    --runtime-version | --runtime-version=*)
      take_value "$@"
      CREATE_ARGS+=(--runtime-version "$VALUE")
      ;;
    --spot)
      CREATE_ARGS+=(--spot)
      SHIFT=1
      ;;
    --queued)
      QUEUED=1
      CREATE_ARGS+=(--queued)
      DELETE_ARGS+=(--queued)
      SHIFT=1
      ;;
    --config | --config=*)
      take_value "$@"
      CONFIG=$VALUE
      ;;
    --workdir | --workdir=*)
      take_value "$@"
      WORKDIR=$VALUE
      ;;
    --config.*=*)
      TRAIN_ARGS+=("$1")
      SHIFT=1
      ;;
    --env | --env=*)
      take_value "$@"
      TRAIN_ARGS+=(--env "$VALUE")
      ;;
    --source | --source=*)
      take_value "$@"
      INSTALL_ARGS+=(--source "$VALUE")
      ;;
    --max-preemptions | --max-preemptions=*)
      take_value "$@"
      MAX_PREEMPTIONS=$VALUE
      ;;
    --poll | --poll=*)
      take_value "$@"
      POLL=$VALUE
      ;;
    --log | --log=*)
      take_value "$@"
      LOG_FILE=$VALUE
      ;;
    --)
      shift
      TRAIN_ARGS+=(-- "$@")
      break
      ;;
    *) common_flag "$@" || die "unknown argument '$1' (see --help)" ;;
  esac
  shift "$SHIFT"
done

require_target
[[ -n $ACCELERATOR ]] || die "missing --accelerator (or set TPU_ACCELERATOR), e.g. v5litepod-16"
[[ -n $CONFIG ]] || die "missing --config (a config file such as configs/flare_it_mlm.py)"
[[ -n $WORKDIR ]] || die "missing --workdir (a gs://bucket/path: the run resumes from it)"
[[ $MAX_PREEMPTIONS =~ ^[0-9]+$ ]] || die "--max-preemptions must be a whole number, got '$MAX_PREEMPTIONS'"
[[ $POLL =~ ^[0-9]+$ ]] || die "--poll must be a whole number of seconds, got '$POLL'"

TARGET_ARGS=(--name "$NAME" --zone "$ZONE")
if [[ -n $PROJECT ]]; then
  TARGET_ARGS+=(--project "$PROJECT")
fi
DRY=()
if ((DRY_RUN)); then
  DRY=(--dry-run)
fi

# The other scripts validate their own flags; under --dry-run they print their commands.
sub() {
  local script=$1
  shift
  "$HERE/$script" ${DRY[@]+"${DRY[@]}"} "${TARGET_ARGS[@]}" "$@"
}

# launch: create the slice, wait until it is up, install, start training. Returns 1 (the state
# in LAST_STATE) if the slice fails, is suspended or disappears before it is up.
LAST_STATE=
launch() {
  sub create.sh --accelerator "$ACCELERATOR" ${CREATE_ARGS[@]+"${CREATE_ARGS[@]}"}
  wait_ready || return 1
  sub install.sh ${INSTALL_ARGS[@]+"${INSTALL_ARGS[@]}"}
  start_training
}

# A queued resource is created asynchronously: it is usable once ACTIVE.
wait_ready() {
  local state
  while ((!DRY_RUN)); do
    state=$(slice_state)
    case $state in
      READY | ACTIVE) return 0 ;;
      CREATING | PROVISIONING | WAITING_FOR_RESOURCES | ACCEPTED | STARTING | RESTARTING | REPAIRING) sleep "$POLL" ;;
      *)
        LAST_STATE=${state:-gone}
        return 1
        ;;
    esac
  done
}

start_training() {
  sub train.sh --config "$CONFIG" --workdir "$WORKDIR" ${TRAIN_ARGS[@]+"${TRAIN_ARGS[@]}"}
}

# The slice's state as gcloud reports it; empty when it no longer exists.
slice_state() {
  if ((QUEUED)); then
    run gcloud compute tpus queued-resources describe "$NAME" "${LOCATION[@]}" \
      --format='value(state.state)' 2>/dev/null || true
  else
    run gcloud compute tpus tpu-vm describe "$NAME" "${LOCATION[@]}" \
      --format='value(state)' 2>/dev/null || true
  fi
}

# On worker 0: running, finished, sigterm (stopped by SIGTERM, resumable) or failed, judged
# from the pid file and the log section of the latest start (train.sh's marker line).
# shellcheck disable=SC2016  # expanded by the remote shell, on purpose
STATUS_CMD='cd "$HOME"; '"$REMOTE_ALIVE_FN"'; last() { tac '"$REMOTE_LOG"' 2>/dev/null | sed "/=== flaxlm train started/q"; }; if test -f '"$REMOTE_PID"' && alive "$(cat '"$REMOTE_PID"')"; then echo running; elif last | grep -q "received SIGTERM"; then echo sigterm; elif last | grep -q "flaxlm: done"; then echo finished; else echo failed; fi'

run_status() {
  run gcloud compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker=0 \
    --command="$STATUS_CMD" 2>/dev/null | tail -n 1 || true
}

log_line() {
  local line
  line="$(date -u +%Y-%m-%dT%H:%M:%SZ) ${SCRIPT_NAME}: $*"
  printf '%s\n' "$line" >&2
  if [[ -n $LOG_FILE ]]; then
    printf '%s\n' "$line" >>"$LOG_FILE"
  fi
}

if ((DRY_RUN)); then
  launch
  slice_state
  run_status
  note "dry run: those two checks repeat every ${POLL}s; after a preemption delete.sh, create.sh, install.sh and train.sh run again (at most ${MAX_PREEMPTIONS} times)"
  exit 0
fi

preemptions=0
restart() {
  preemptions=$((preemptions + 1))
  if ((preemptions > MAX_PREEMPTIONS)); then
    log_line "giving up: preemption $preemptions of $NAME ($1) exceeds --max-preemptions $MAX_PREEMPTIONS; checkpoints stay in $WORKDIR, rerun this command to go on"
    exit 1
  fi
  log_line "preemption $preemptions/$MAX_PREEMPTIONS of $NAME ($1); $2"
}

# relaunch: launch until the slice comes up, counting each failure as a preemption.
relaunch() {
  until launch; do
    restart "state $LAST_STATE while starting" "re-creating it"
    if [[ $LAST_STATE != gone ]]; then
      sub delete.sh --yes ${DELETE_ARGS[@]+"${DELETE_ARGS[@]}"}
    fi
  done
}

# A slice left from an earlier supervise.sh (e.g. one that gave up) is reused when up, replaced
# when not.
state=$(slice_state)
case $state in
  "") relaunch ;;
  READY | ACTIVE)
    note "$NAME exists ($state); watching it"
    if [[ $(run_status) != running ]]; then
      start_training
    fi
    ;;
  *)
    sub delete.sh --yes ${DELETE_ARGS[@]+"${DELETE_ARGS[@]}"}
    relaunch
    ;;
esac

while true; do
  sleep "$POLL"
  state=$(slice_state)
  case $state in
    READY | ACTIVE)
      status=$(run_status)
      case $status in
        running) ;;
        finished)
          log_line "flaxlm train finished on $NAME; workdir $WORKDIR"
          exit 0
          ;;
        sigterm)
          restart "state $state, training stopped by SIGTERM" "starting training again"
          start_training
          ;;
        *)
          log_line "flaxlm train stopped on $NAME without finishing (status '${status:-unknown}'); see logs.sh"
          exit 1
          ;;
      esac
      ;;
    CREATING | PROVISIONING | WAITING_FOR_RESOURCES | ACCEPTED | STARTING | RESTARTING | REPAIRING | DELETING) ;;
    *)
      restart "state ${state:-gone}" "re-creating it and resuming from $WORKDIR"
      if [[ -n $state ]]; then
        sub delete.sh --yes ${DELETE_ARGS[@]+"${DELETE_ARGS[@]}"}
      fi
      relaunch
      ;;
  esac
done
