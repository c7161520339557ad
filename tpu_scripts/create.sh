#!/usr/bin/env bash
# Create a Cloud TPU VM (single host or pod slice) for flaxlm.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: ${SCRIPT_NAME} --name NAME --zone ZONE --accelerator TYPE [options] [-- GCLOUD_FLAGS...]

Create a TPU VM with \`gcloud compute tpus tpu-vm create\`, or with --queued a queued
resource (\`gcloud compute tpus queued-resources create\`, node id = NAME) that is
provisioned when capacity is available.

Options:
  --accelerator TYPE       v4-8, v4-32, v5litepod-16 (v5e), v5p-8, v6e-8, ...
                           (env TPU_ACCELERATOR, required)
  --runtime-version VER    TPU software version (env TPU_RUNTIME_VERSION); default per
                           generation: v4 tpu-ubuntu2204-base, v5e v2-alpha-tpuv5-lite,
                           v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e
  --spot                   Spot capacity (cheaper, can be preempted at any time)
  --queued                 create a queued resource instead of a TPU VM directly
  -- GCLOUD_FLAGS...       extra flags passed to gcloud unchanged (e.g. --network=NET)

${COMMON_USAGE}

Examples:
  ${SCRIPT_NAME} --name lm-v4 --zone us-central2-b --accelerator v4-8
  ${SCRIPT_NAME} --name lm-v5e --zone us-west4-a --accelerator v5litepod-16 --queued --spot
EOF
}

ACCELERATOR=${TPU_ACCELERATOR:-}
RUNTIME_VERSION=${TPU_RUNTIME_VERSION:-}
SPOT=0
QUEUED=0
EXTRA=()
while (($#)); do
  case $1 in
    --accelerator | --accelerator=*)
      take_value "$@"
      ACCELERATOR=$VALUE
      ;;
    --runtime-version | --runtime-version=*)
      take_value "$@"
      RUNTIME_VERSION=$VALUE
      ;;
    --spot)
      SPOT=1
      SHIFT=1
      ;;
    --queued)
      QUEUED=1
      SHIFT=1
      ;;
    --)
      shift
      EXTRA=("$@")
      break
      ;;
    *) common_flag "$@" || die "unknown argument '$1' (see --help)" ;;
  esac
  shift "$SHIFT"
done

require_target
[[ -n $ACCELERATOR ]] || die "missing --accelerator (or set TPU_ACCELERATOR), e.g. v4-8"
if [[ -z $RUNTIME_VERSION ]]; then
  RUNTIME_VERSION=$(runtime_version_for "$ACCELERATOR") ||
    die "unknown accelerator '$ACCELERATOR' (expected v4-N, v5litepod-N, v5p-N or v6e-N; or pass --runtime-version)"
fi
[[ $ACCELERATOR =~ ^v[0-9][a-z0-9]*-[0-9]+$ ]] || die "invalid --accelerator '$ACCELERATOR'"
[[ $RUNTIME_VERSION =~ ^[a-z0-9][-a-z0-9.]*$ ]] || die "invalid --runtime-version '$RUNTIME_VERSION'"

flags=()
if ((SPOT)); then
  flags+=(--spot)
fi

if ((QUEUED)); then
  run gcloud compute tpus queued-resources create "$NAME" "${LOCATION[@]}" \
    --node-id="$NAME" --accelerator-type="$ACCELERATOR" --runtime-version="$RUNTIME_VERSION" \
    ${flags[@]+"${flags[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
  ((DRY_RUN)) || note "queued; watch it with: gcloud compute tpus queued-resources describe $(quote_cmd "$NAME" "${LOCATION[@]}")"
else
  run gcloud compute tpus tpu-vm create "$NAME" "${LOCATION[@]}" \
    --accelerator-type="$ACCELERATOR" --version="$RUNTIME_VERSION" \
    ${flags[@]+"${flags[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
fi
