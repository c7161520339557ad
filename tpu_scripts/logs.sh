#!/usr/bin/env bash
# Stream the training log of one worker (default worker 0).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: ${SCRIPT_NAME} --name NAME --zone ZONE [--worker N] [--lines N] [--no-follow]

Show ~/${REMOTE_LOG} of one worker and keep following it (tail -F; Ctrl-C to stop,
training keeps running).

Options:
  --worker N     worker index (env TPU_WORKER; default 0); 'all' interleaves every worker
  --lines N      lines of history to show first (default 100)
  --no-follow    print the last N lines and exit

${COMMON_USAGE}

Example:
  ${SCRIPT_NAME} --name lm-v4 --zone us-central2-b --worker 1
EOF
}

WORKER=${TPU_WORKER:-0}
LINES=100
FOLLOW=1
while (($#)); do
  case $1 in
    --worker | --worker=*)
      take_value "$@"
      WORKER=$VALUE
      ;;
    --lines | --lines=*)
      take_value "$@"
      LINES=$VALUE
      ;;
    --no-follow)
      FOLLOW=0
      SHIFT=1
      ;;
    *) common_flag "$@" || die "unknown argument '$1' (see --help)" ;;
  esac
  shift "$SHIFT"
done

require_target
[[ $WORKER =~ ^([0-9]+|all)$ ]] || die "invalid --worker '$WORKER' (a worker index such as 0, or all)"
[[ $LINES =~ ^[0-9]+$ ]] || die "invalid --lines '$LINES' (a number)"

if ((FOLLOW)); then
  ssh_workers "$WORKER" "tail -n $LINES -F $REMOTE_LOG"
else
  ssh_workers "$WORKER" "tail -n $LINES $REMOTE_LOG"
fi
