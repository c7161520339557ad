#!/usr/bin/env bash
# Start `flaxlm train` in the background (nohup) on every worker of a TPU VM.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: ${SCRIPT_NAME} --name NAME --zone ZONE --config CONFIG.py --workdir gs://BUCKET/DIR
       [--config.KEY=VALUE ...] [options] [-- FLAXLM_TRAIN_ARGS...]

Copy CONFIG.py to ~/${REMOTE_CONFIGS}/ on every worker, then on every worker (--worker=all) run
  nohup flaxlm train --config ~/${REMOTE_CONFIGS}/CONFIG.py --workdir gs://... [overrides]
in the background, appending to ~/${REMOTE_LOG} (pid in ~/${REMOTE_PID}).
Refuses to start on a worker where a previous run is still alive (see stop.sh).

Options:
  --config PATH[:ARG]   local config file (required); ':ARG' is passed on to flaxlm
  --workdir gs://...    checkpoints and metrics; must be a GCS path every host can reach
  --config.KEY=VALUE    config override, passed to flaxlm train unchanged (quoted), also
                        as '--config.KEY VALUE'; repeatable
  --remote-config       PATH is already on the workers, relative to ~/${REMOTE_SRC}
                        (e.g. configs/flare_it_mlm.py from a local-source install.sh): copy nothing
  --env KEY=VALUE       environment variable for the run (e.g. LIBTPU_INIT_ARGS=...);
                        repeatable. Not for secrets: it is visible in the command line, so
                        names containing TOKEN, SECRET, PASSWORD, KEY or CREDENTIAL are refused
  -- ARGS...            further arguments for flaxlm train, unchanged

${COMMON_USAGE}

Example:
  ${SCRIPT_NAME} --name lm-v4 --zone us-central2-b --config configs/flare_it_mlm.py \\
      --workdir gs://my-bucket/runs/flare-v4 --config.train.steps=10000
EOF
}

CONFIG=
WORKDIR=
REMOTE_CONFIG_MODE=0
OVERRIDES=()
ENVS=()
while (($#)); do
  case $1 in
    --config | --config=*)
      take_value "$@"
      CONFIG=$VALUE
      ;;
    --config.*=*)
      OVERRIDES+=("$1")
      SHIFT=1
      ;;
    --config.*)
      # '--config.KEY VALUE'; a bare '--config.KEY' (followed by a flag or nothing) stays bare.
      if (($# >= 2)) && [[ $2 != --* ]]; then
        OVERRIDES+=("$1=$2")
        SHIFT=2
      else
        OVERRIDES+=("$1")
        SHIFT=1
      fi
      ;;
    --workdir | --workdir=*)
      take_value "$@"
      WORKDIR=$VALUE
      ;;
    --remote-config)
      REMOTE_CONFIG_MODE=1
      SHIFT=1
      ;;
    --env | --env=*)
      take_value "$@"
      ENVS+=("$VALUE")
      ;;
    --)
      shift
      OVERRIDES+=("$@")
      break
      ;;
    *) common_flag "$@" || die "unknown argument '$1' (see --help)" ;;
  esac
  shift "$SHIFT"
done

require_target
[[ -n $CONFIG ]] || die "missing --config (a config file such as configs/flare_it_mlm.py)"
[[ -n $WORKDIR ]] || die "missing --workdir (a gs://bucket/path every worker can write)"
[[ $WORKDIR =~ ^gs://[a-z0-9][-a-z0-9_.]*(/.*)?$ ]] ||
  die "--workdir must be a GCS path gs://BUCKET/... (all hosts of a pod must share it)"

config_path=$CONFIG
config_arg=
if [[ $CONFIG =~ ^(.*\.py)(:.*)$ ]]; then
  config_path=${BASH_REMATCH[1]}
  config_arg=${BASH_REMATCH[2]}
fi
[[ $config_path == *.py ]] || die "--config must name a .py file, got '$CONFIG'"
if ((REMOTE_CONFIG_MODE)); then
  if [[ $config_path == /* ]]; then
    remote_config=$config_path
  else
    remote_config=$REMOTE_SRC/$config_path
  fi
else
  [[ -f $config_path ]] || die "config file not found: $config_path"
  remote_config=$REMOTE_CONFIGS/${config_path##*/}
fi

for kv in ${ENVS[@]+"${ENVS[@]}"}; do
  [[ $kv =~ ^([A-Za-z_][A-Za-z0-9_]*)= ]] || die "--env expects KEY=VALUE, got a value without a valid KEY="
  key=$(printf '%s' "${BASH_REMATCH[1]}" | tr '[:lower:]' '[:upper:]')
  case $key in
    *TOKEN* | *SECRET* | *PASSWORD* | *PASSWD* | *KEY* | *CREDENTIAL*)
      die "refusing --env ${BASH_REMATCH[1]}: secrets must not be passed on a command line (they end up in logs); provision them on the workers instead"
      ;;
  esac
done

# `nohup setsid`: survives the ssh session, and gets its own process group (pgid = pid) that
# stop.sh signals as a whole. stdin from /dev/null and both outputs to the log so that ssh does
# not wait for the background job.
train_cmd=(nohup setsid)
if ((${#ENVS[@]})); then
  train_cmd+=(env "${ENVS[@]}")
fi
train_cmd+=("$REMOTE_VENV/bin/flaxlm" train --config "$remote_config$config_arg" --workdir "$WORKDIR")
train_cmd+=(${OVERRIDES[@]+"${OVERRIDES[@]}"})

# shellcheck disable=SC2016  # single-quoted parts are expanded by the remote shell
{
  remote='set -eu; cd "$HOME"; '"$REMOTE_ALIVE_FN"
  remote+="; mkdir -p ${REMOTE_LOG%/*}"
  remote+="; if ! test -x $REMOTE_VENV/bin/flaxlm; then echo \"flaxlm is not installed on \$(hostname); run install.sh first\" >&2; exit 1; fi"
  remote+="; if test -f $REMOTE_PID && alive \"\$(cat $REMOTE_PID)\"; then echo \"flaxlm train is already running on \$(hostname) (pid \$(cat $REMOTE_PID)); run stop.sh first\" >&2; exit 1; fi"
  remote+="; echo \"=== flaxlm train started \$(date -u +%Y-%m-%dT%H:%M:%SZ) ===\" >> $REMOTE_LOG"
  remote+="; $(quote_cmd "${train_cmd[@]}") >> $REMOTE_LOG 2>&1 < /dev/null & echo \$! > $REMOTE_PID"
  remote+="; echo \"flaxlm train started on \$(hostname), pid \$(cat $REMOTE_PID), log ~/$REMOTE_LOG\""
}

if ((!REMOTE_CONFIG_MODE)); then
  run gcloud compute tpus tpu-vm scp "$config_path" "$NAME:$remote_config" "${LOCATION[@]}" --worker=all
fi
ssh_workers all "$remote"
