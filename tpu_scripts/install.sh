#!/usr/bin/env bash
# Install flaxlm[tpu] into a virtualenv on every worker of a TPU VM.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DEFAULT_SOURCE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  cat <<EOF
Usage: ${SCRIPT_NAME} --name NAME --zone ZONE [options]

On every worker (--worker=all): create the virtualenv ~/${REMOTE_VENV} and run
  pip install 'flaxlm[tpu] @ SOURCE'

Options:
  --source SRC       what to install (env FLAXLM_SOURCE). Either a local directory (default:
                     this checkout, ${DEFAULT_SOURCE}), which is packed with tar (without
                     .git, ./.venv, ./venv, ./runs, ./build, ./dist, caches, .env and *.pem
                     files), copied with
                     \`gcloud compute tpus tpu-vm scp --worker=all\` and unpacked into
                     ~/${REMOTE_SRC}; or a URL pip understands, e.g.
                     git+https://github.com/ORG/flaxlm.git@v0.1.0 or git+ssh://git@... .
                     URLs with credentials in them (https://user:token@...) are refused.
  --python PY        interpreter for the virtualenv (env TPU_PYTHON; default python3.11,
                     flaxlm's JAX needs >= 3.11); installed with apt-get (PY and PY-venv)
                     when missing.
  --torch-cpu VER    first install torch==VER from the PyTorch CPU index so pip does not pull
                     the CUDA build onto the TPU VM (env TPU_TORCH_CPU); 'none' to skip.
                     Default: the torch== pin in SOURCE/setup.cfg for a local source,
                     none for a URL.

${COMMON_USAGE}

Example:
  ${SCRIPT_NAME} --name lm-v4 --zone us-central2-b
  ${SCRIPT_NAME} --name lm-v4 --zone us-central2-b --source git+https://github.com/ORG/flaxlm.git@main
EOF
}

SOURCE=${FLAXLM_SOURCE:-$DEFAULT_SOURCE}
PYTHON=${TPU_PYTHON:-python3.11}
TORCH_CPU=${TPU_TORCH_CPU:-auto}
while (($#)); do
  case $1 in
    --source | --source=*)
      take_value "$@"
      SOURCE=$VALUE
      ;;
    --python | --python=*)
      take_value "$@"
      PYTHON=$VALUE
      ;;
    --torch-cpu | --torch-cpu=*)
      take_value "$@"
      TORCH_CPU=$VALUE
      ;;
    *) common_flag "$@" || die "unknown argument '$1' (see --help)" ;;
  esac
  shift "$SHIFT"
done

require_target
[[ -n $SOURCE ]] || die "empty --source"
[[ $PYTHON =~ ^python3(\.[0-9]+)?$ ]] || die "invalid --python '$PYTHON' (expected e.g. python3.11)"

if [[ -d $SOURCE ]]; then
  LOCAL=1
  [[ -f $SOURCE/setup.py || -f $SOURCE/pyproject.toml ]] ||
    die "--source $SOURCE has no setup.py or pyproject.toml"
  if [[ $TORCH_CPU == auto ]]; then
    TORCH_CPU=none
    if [[ -f $SOURCE/setup.cfg ]]; then
      pin=$(sed -n 's/^[[:space:]]*torch[[:space:]]*==[[:space:]]*\([0-9][0-9.]*\)[[:space:]]*$/\1/p' "$SOURCE/setup.cfg")
      if [[ -n $pin ]]; then
        TORCH_CPU=${pin%%$'\n'*}
      fi
    fi
  fi
else
  LOCAL=0
  # Checked before anything else about the URL, and without echoing it: it may hold a token.
  if [[ $SOURCE =~ ^[a-z+]+://[^/@]*:[^/@]*@ ]] ||
    [[ $SOURCE =~ ^[a-z+]+://[^/]*@ && ! $SOURCE =~ ^git\+ssh:// ]]; then
    die "refusing --source with credentials in the URL; use a public URL, git+ssh:// with an SSH key, or a local directory"
  fi
  if [[ $SOURCE == *'?'* ]]; then
    die "refusing --source with a query string (signed URLs and tokens would end up in logs)"
  fi
  [[ $SOURCE =~ ^(git\+https|git\+ssh|https):// ]] ||
    die "--source must be an existing directory or a git+https://, git+ssh:// or https:// URL"
  if [[ $TORCH_CPU == auto ]]; then
    TORCH_CPU=none
  fi
fi
[[ $TORCH_CPU == none || $TORCH_CPU =~ ^[0-9]+(\.[0-9]+)*$ ]] ||
  die "invalid --torch-cpu '$TORCH_CPU' (a version such as 2.13.0, or none)"

# The script each worker runs. Single-quoted parts are expanded by the remote shell; every
# local value goes through printf %q.
# shellcheck disable=SC2016
{
  py=$(printf %q "$PYTHON")
  pip="$REMOTE_VENV/bin/python -m pip"
  apt='sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600'
  remote='set -eu; cd "$HOME"'
  remote+="; mkdir -p $REMOTE_CONFIGS ${REMOTE_LOG%/*}"
  remote+="; if ! $py -m venv $REMOTE_VENV >/dev/null 2>&1; then $apt update -qq; $apt install -y -qq $py $py-venv; $py -m venv --clear $REMOTE_VENV; fi"
  remote+="; $pip install -q --upgrade pip"
  if [[ $TORCH_CPU != none ]]; then
    remote+="; $pip install -q --index-url https://download.pytorch.org/whl/cpu torch==$TORCH_CPU"
  fi
  if ((LOCAL)); then
    remote+="; rm -rf $REMOTE_SRC; mkdir -p $REMOTE_SRC; tar -xzf $REMOTE_ARCHIVE -C $REMOTE_SRC; rm -f $REMOTE_ARCHIVE"
    requirement="\"flaxlm[tpu] @ file://\$HOME/$REMOTE_SRC\""
  else
    requirement=$(printf %q "flaxlm[tpu] @ $SOURCE")
  fi
  remote+="; $pip uninstall -qq -y flaxlm; $pip install -q $requirement"
  remote+="; $REMOTE_VENV/bin/python -c 'import socket, jax, flaxlm; print(socket.gethostname(), \"flaxlm\", flaxlm.__version__, \"jax\", jax.__version__)'"
}

if ((LOCAL)); then
  tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/flaxlm-install.XXXXXX")
  trap 'rm -rf "$tmpdir"' EXIT
  archive=$tmpdir/$REMOTE_ARCHIVE
  run env COPYFILE_DISABLE=1 tar -czf "$archive" \
    --exclude=./.venv --exclude=./venv --exclude=./runs --exclude=./build --exclude=./dist \
    --exclude=.git --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache \
    --exclude=.hypothesis --exclude=.env --exclude='*.pem' \
    -C "$SOURCE" .
  run gcloud compute tpus tpu-vm scp "$archive" "$NAME:$REMOTE_ARCHIVE" "${LOCATION[@]}" --worker=all
fi
ssh_workers all "$remote"
