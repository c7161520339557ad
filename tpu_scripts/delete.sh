#!/usr/bin/env bash
# Delete a TPU VM or a queued resource (and its node). Requires --yes.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: ${SCRIPT_NAME} --name NAME --zone ZONE [--queued] --yes

Delete the TPU VM NAME (gcloud compute tpus tpu-vm delete), or with --queued the queued
resource NAME together with its node (gcloud compute tpus queued-resources delete --force).
Everything on the workers' disks is lost; checkpoints in the gs:// workdir are kept.

Options:
  --queued   the TPU was created with create.sh --queued
  --yes      really delete (also skips gcloud's confirmation prompt); without it the
             script refuses, except with --dry-run, which only prints the command

${COMMON_USAGE}

Example:
  ${SCRIPT_NAME} --name lm-v4 --zone us-central2-b --yes
EOF
}

QUEUED=0
YES=0
while (($#)); do
  case $1 in
    --queued)
      QUEUED=1
      SHIFT=1
      ;;
    --yes)
      YES=1
      SHIFT=1
      ;;
    *) common_flag "$@" || die "unknown argument '$1' (see --help)" ;;
  esac
  shift "$SHIFT"
done

require_target
if ((!YES)); then
  ((DRY_RUN)) || die "refusing to delete $NAME without --yes"
  note "dry run without --yes: the command below runs only with --yes"
fi

if ((QUEUED)); then
  run gcloud compute tpus queued-resources delete "$NAME" "${LOCATION[@]}" --force --quiet
else
  run gcloud compute tpus tpu-vm delete "$NAME" "${LOCATION[@]}" --quiet
fi
