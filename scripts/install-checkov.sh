#!/usr/bin/env bash
# Installs a pinned checkov (the infrastructure-as-code scanner; `make chart-scan` and
# tests/chart/test_chart_scan.py run its Kubernetes checks on the rendered chart) from PyPI into a
# dedicated virtualenv, cached under a directory keyed by version and reused when present.
#
# A virtualenv of its own, not the project's: checkov pins dozens of dependencies (boto3,
# pydantic, networkx, ...) that must not constrain or be constrained by the operator's.
#
# Override with CHECKOV_VERSION, PYTHON (the interpreter the virtualenv is made from, >= 3.9),
# AIO_CACHE_DIR, or point AIO_CHECKOV at an existing checkov executable.
# Prints the checkov executable path on stdout (last line); everything else goes to stderr.
set -euo pipefail
TAG=install-checkov
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
PYTHON="${PYTHON:-python3}"
CHECKOV_DIR="$CACHE_ROOT/checkov-${CHECKOV_VERSION}"
CHECKOV_BIN="$CHECKOV_DIR/bin/checkov"
STAMP="$CHECKOV_DIR/.installed"

given_executable AIO_CHECKOV

[[ "$CHECKOV_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "CHECKOV_VERSION=$CHECKOV_VERSION: expected a release such as 3.3.30"

# The stamp is written last: a virtualenv without it is a half-finished install, never reused.
if [[ -f "$STAMP" && -x "$CHECKOV_BIN" ]]; then
  log "reusing cached checkov ${CHECKOV_VERSION} at $CHECKOV_BIN"
  echo "$CHECKOV_BIN"
  exit 0
fi

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON is missing: checkov ${CHECKOV_VERSION} needs Python >= 3.9 (set PYTHON=...)"
"$PYTHON" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 9) else 1)' 2>/dev/null \
  || die "$PYTHON is older than 3.9 or lacks the venv module: checkov ${CHECKOV_VERSION} needs Python >= 3.9 with venv"

mkdir -p "$CACHE_ROOT"
# Two installers at once (parallel test runs) take turns; the second one then finds the stamp.
exec 9>"$CACHE_ROOT/checkov-${CHECKOV_VERSION}.lock"
flock 9
if [[ -f "$STAMP" && -x "$CHECKOV_BIN" ]]; then
  log "reusing cached checkov ${CHECKOV_VERSION} at $CHECKOV_BIN (installed meanwhile)"
  echo "$CHECKOV_BIN"
  exit 0
fi

start=$(date +%s)
rm -rf "$CHECKOV_DIR"
log "installing checkov ${CHECKOV_VERSION} into $CHECKOV_DIR (a minute or two: it has many dependencies)"
"$PYTHON" -m venv "$CHECKOV_DIR" || die "could not create a virtualenv with $PYTHON"
"$CHECKOV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2 \
  || die "could not upgrade pip in $CHECKOV_DIR (check network access to the package index)"
"$CHECKOV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==${CHECKOV_VERSION}" >&2 \
  || die "pip could not install checkov==${CHECKOV_VERSION} (see pip's output above)"

installed=$("$CHECKOV_BIN" --version 2>/dev/null | tail -n 1) || die "the installed checkov does not run"
[[ "$installed" == "$CHECKOV_VERSION" ]] || die "installed checkov reports version '$installed', expected ${CHECKOV_VERSION}"
touch "$STAMP"
log "installed checkov ${CHECKOV_VERSION} in $(( $(date +%s) - start ))s"
echo "$CHECKOV_BIN"
