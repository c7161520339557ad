#!/usr/bin/env bash
# shellcheck shell=bash
# Variables set here are used by the scripts that source this file:
# shellcheck disable=SC2034
# Shared helpers for tpu_scripts/*.sh. Source it, do not run it.
#
# Provides:
#   * shared flags / environment: --name/TPU_NAME, --zone/TPU_ZONE, --project/TPU_PROJECT,
#     --dry-run, -h/--help (each script defines usage());
#   * run CMD ARGS...: prints CMD shell-quoted with printf '%q ' (stdout, one line, nothing
#     else) under --dry-run; otherwise echoes it to stderr prefixed with "+ " and runs it;
#   * validation (die prints exactly one line to stderr and exits 2);
#   * the layout of a worker's home directory shared by install/train/logs/stop.
#
# Security: nothing here reads, prints or stores credentials. Commands are only built from
# flags the user passed; never pass secrets as flags (they would show up in dry-run output,
# in `ps` on the workers and in the training log).
#
# Written for bash >= 3.2 (macOS's /bin/bash) as well as current Linux bash: no associative
# arrays, no mapfile, and empty arrays are expanded as ${a[@]+"${a[@]}"}.
set -euo pipefail

SCRIPT_NAME=${0##*/}

# Shared settings; flags override the environment.
NAME=${TPU_NAME:-}
ZONE=${TPU_ZONE:-}
PROJECT=${TPU_PROJECT:-}
DRY_RUN=0

# Layout on every worker, relative to the remote user's $HOME (gcloud ssh starts there).
REMOTE_ROOT=flaxlm
REMOTE_VENV=$REMOTE_ROOT/venv
REMOTE_SRC=$REMOTE_ROOT/src
REMOTE_CONFIGS=$REMOTE_ROOT/configs
REMOTE_LOG=$REMOTE_ROOT/logs/train.log
REMOTE_PID=$REMOTE_ROOT/train.pid
REMOTE_ARCHIVE=flaxlm-src.tar.gz

# Printable single-character names make these safe to embed unquoted in remote commands;
# assert it so that an edit above cannot silently break the quoting of remote commands.
for _path in "$REMOTE_ROOT" "$REMOTE_VENV" "$REMOTE_SRC" "$REMOTE_CONFIGS" "$REMOTE_LOG" \
  "$REMOTE_PID" "$REMOTE_ARCHIVE"; do
  [[ $_path =~ ^[A-Za-z0-9._/-]+$ ]] || { echo "common.sh: bad remote path $_path" >&2; exit 2; }
done
unset _path

die() {
  printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 2
}

note() {
  printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

# quote_cmd ARGS...: the arguments as one shell-quoted line (printf '%q '), no trailing space.
quote_cmd() {
  local line
  line=$(printf '%q ' "$@")
  printf '%s' "${line% }"
}

# run CMD ARGS...: print (dry run) or echo-and-execute a command.
run() {
  if ((DRY_RUN)); then
    printf '%s\n' "$(quote_cmd "$@")"
    return 0
  fi
  printf '+ %s\n' "$(quote_cmd "$@")" >&2
  "$@"
}

# take_value "$@": read the value of "--flag=value" or "--flag value" into VALUE, and the
# number of arguments consumed into SHIFT.
VALUE=
SHIFT=1
take_value() {
  case $1 in
    --*=*)
      VALUE=${1#*=}
      SHIFT=1
      ;;
    *)
      (($# >= 2)) || die "$1 needs a value"
      VALUE=$2
      SHIFT=2
      ;;
  esac
}

# common_flag "$@": handle a shared flag; returns 1 (consuming nothing) for any other flag.
common_flag() {
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --dry-run)
      DRY_RUN=1
      SHIFT=1
      ;;
    --name | --name=*)
      take_value "$@"
      NAME=$VALUE
      ;;
    --zone | --zone=*)
      take_value "$@"
      ZONE=$VALUE
      ;;
    --project | --project=*)
      take_value "$@"
      PROJECT=$VALUE
      ;;
    *) return 1 ;;
  esac
  return 0
}

# Text for usage(): the shared flags.
COMMON_USAGE="Shared flags (flags override the environment):
  --name NAME        TPU VM / node name                 (env TPU_NAME, required)
  --zone ZONE        e.g. us-central2-b                  (env TPU_ZONE, required)
  --project PROJECT  Google Cloud project               (env TPU_PROJECT; default: gcloud's)
  --dry-run          print the commands, one per line, instead of running them
  -h, --help         show this help"

NAME_RE='^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$'
ZONE_RE='^[a-z]+-[a-z]+[0-9]+-[a-z]$'
PROJECT_RE='^[a-z0-9][-a-z0-9.:]{2,80}[a-z0-9]$'

# require_target: validate name/zone/project and set LOCATION (the gcloud location flags).
LOCATION=()
require_target() {
  [[ -n $NAME ]] || die "missing --name (or set TPU_NAME)"
  [[ $NAME =~ $NAME_RE ]] || die "invalid --name '$NAME' (lowercase letters, digits and '-', starting with a letter)"
  [[ -n $ZONE ]] || die "missing --zone (or set TPU_ZONE)"
  [[ $ZONE =~ $ZONE_RE ]] || die "invalid --zone '$ZONE' (expected e.g. us-central2-b)"
  LOCATION=(--zone="$ZONE")
  if [[ -n $PROJECT ]]; then
    [[ $PROJECT =~ $PROJECT_RE ]] || die "invalid --project '$PROJECT'"
    LOCATION+=(--project="$PROJECT")
  fi
  if ((!DRY_RUN)) && ! command -v gcloud >/dev/null 2>&1; then
    die "gcloud not found on PATH (install the Google Cloud CLI, or use --dry-run)"
  fi
}

# runtime_version_for ACCELERATOR: the TPU VM software version for that generation.
runtime_version_for() {
  case $1 in
    v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) return 1 ;;
  esac
}

# ssh_workers WORKER REMOTE_COMMAND: run a command on one worker (0, 1, ...) or on all.
ssh_workers() {
  run gcloud compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker="$1" --command="$2"
}

# Remote shell snippet defining alive PID: true while PID is a live (not zombie) process
# whose command line mentions flaxlm, so that a stale pid file can never make stop.sh
# signal an unrelated process that reused the pid.
# shellcheck disable=SC2016  # expanded by the remote shell, on purpose
REMOTE_ALIVE_FN='alive() { kill -0 "$1" 2>/dev/null && grep -q flaxlm "/proc/$1/cmdline" 2>/dev/null && test "$(sed "s/.*) //" "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z; }'
