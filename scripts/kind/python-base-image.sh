#!/usr/bin/env bash
# Builds, without any image registry, a Python 3.11 base image for this repo's Dockerfile:
#
#   image=$(bash scripts/kind/python-base-image.sh | tail -n 1)
#   docker build --build-arg PYTHON_IMAGE="$image" -t agent-identity-operator:e2e .
#
# Why: python:3.11-slim cannot be pulled here. Debian bookworm's python3 is 3.11 (the project
# needs >= 3.11), so the base is a debootstrapped bookworm (minbase) with python3, python3-venv,
# python3-pip and python-is-python3 (the Dockerfile calls `python`), imported with `docker import`.
#
# Two images, both printed on stderr, the second also as the last stdout line:
#   agent-identity/python:3.11-bookworm-<hash>            the clean base (what python:3.11-slim is)
#   agent-identity/python-wheelhouse:3.11-bookworm-<hash> the base plus /opt/wheels and an
#       /etc/pip.conf with `no-index` + `find-links = /opt/wheels`: the wheels of the project's
#       build requirements and dependencies (read from pyproject.toml), downloaded on this host by
#       the host's pip (which already knows how to reach the package index). The unchanged
#       Dockerfile then builds with no network access from inside containers at all.
# The wheelhouse image carries the clean base's name in the label agentidentity.dev/python-base,
# so a build can use the wheelhouse for the Dockerfile's builder stage only and keep the wheels
# out of the operator image (scripts/build-image.sh does):
#   docker build --network none --build-arg BUILDER_IMAGE=<wheelhouse> --build-arg PYTHON_IMAGE=<base> .
#
# The wheelhouse image's tag hashes the dependency lists, so a changed pyproject.toml rebuilds
# only that layer; the clean base is reused.
#
# Env: AIO_PYPROJECT (default: pyproject.toml of this repo), DEBIAN_MIRROR (default: the host's
# Debian mirror if the host runs bookworm, else debootstrap's default).
set -euo pipefail
TAG=python-base-image
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

SUITE=bookworm
PY_PACKAGES=(python3 python3-venv python3-pip python-is-python3 ca-certificates)
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYPROJECT="${AIO_PYPROJECT:-$(dirname "$(dirname "$HERE")")/pyproject.toml}"

# shellcheck source=SCRIPTDIR/../lib/debian-rootfs.sh
source "$(dirname "$HERE")/lib/debian-rootfs.sh"
T0=$(date +%s)

docker info >/dev/null 2>&1 || die "no Docker engine answers: run scripts/kind/docker-engine.sh first"
[[ -f "$PYPROJECT" ]] || die "no pyproject.toml at $PYPROJECT"

base_hash=$( { sed -n '/^# --- base image/,/^# --- end base image/p' "${BASH_SOURCE[0]}"; cat "$(dirname "$HERE")/lib/debian-rootfs.sh"; echo "$SUITE ${PY_PACKAGES[*]}"; } | sha256sum | cut -c1-12)
BASE_IMAGE="agent-identity/python:3.11-$SUITE-$base_hash"

# The requirement strings pip must be able to satisfy offline: the build backend (the Dockerfile's
# `pip wheel .` uses build isolation), wheel for older setuptools, and the runtime dependencies.
requirements=$(python3 - "$PYPROJECT" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    data = tomllib.load(f)
reqs = list(data.get("build-system", {}).get("requires", [])) + ["wheel"]
reqs += data.get("project", {}).get("dependencies", [])
print("\n".join(sorted(set(reqs))))
PY
) || die "could not read the requirements from $PYPROJECT"
wheel_hash=$( { echo "$BASE_IMAGE"; echo "$requirements"; sed -n '/^# --- wheelhouse/,$p' "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-12)
WHEEL_IMAGE="agent-identity/python-wheelhouse:3.11-$SUITE-$wheel_hash"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/aio-python-base.XXXXXX")
cleanup() {
  local m
  for m in $(findmnt -rn -o TARGET | grep -F "$work/" | sort -r); do umount -l "$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# --- base image ---------------------------------------------------------------------------------------
build_base() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot)"
  command -v debootstrap >/dev/null || die "debootstrap is missing: run scripts/kind/docker-engine.sh (installs it)"
  local root="$work/rootfs"
  debian_rootfs "$root" "$work/debootstrap.log" "${PY_PACKAGES[@]}"
  debian_chroot "$root" apt-get clean >&2
  umount "$root/proc"
  # like python:3.11-slim: pip may install into the system interpreter (PEP 668 marker removed)
  rm -f "$root"/usr/lib/python3.*/EXTERNALLY-MANAGED "$root/usr/sbin/policy-rc.d"
  : > "$root/etc/resolv.conf"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/* \
         "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
  find "$root/usr/lib/python3" "$root"/usr/lib/python3.* -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
  log "importing $BASE_IMAGE"
  tar -C "$root" --numeric-owner --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* -c . \
    | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
        --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null \
    || die "docker import of $BASE_IMAGE failed"
  rm -rf --one-file-system "$root"
}
# --- end base image

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "reusing $BASE_IMAGE"
else
  build_base
  log "base image built in $(( $(date +%s) - T0 ))s"
fi
py_version=$(docker run --rm --network none "$BASE_IMAGE" python --version 2>&1)
[[ "$py_version" == "Python 3.11."* ]] || die "$BASE_IMAGE has '$py_version', expected Python 3.11"

# --- wheelhouse ---------------------------------------------------------------------------------------
if docker image inspect "$WHEEL_IMAGE" >/dev/null 2>&1; then
  log "reusing $WHEEL_IMAGE"
else
  t1=$(date +%s)
  mkdir -p "$work/ctx/wheels"
  mapfile -t reqs <<<"$requirements"
  log "downloading wheels for CPython 3.11 manylinux x86_64 on the host: ${reqs[*]}"
  # binary wheels only, for the image's interpreter (not necessarily the host's): CPython 3.11 on
  # glibc 2.36 accepts every manylinux tag up to 2_36 (pip does not expand a --platform downwards)
  plats=()
  for v in $(seq 36 -1 17); do plats+=(--platform "manylinux_2_${v}_x86_64"); done
  plats+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 --platform any)
  python3 -m pip download --quiet --disable-pip-version-check --no-cache-dir \
      --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none "${plats[@]}" \
      --dest "$work/ctx/wheels" "${reqs[@]}" >&2 \
    || die "pip download of the project's requirements failed"
  printf '[global]\nno-index = true\nfind-links = /opt/wheels\n' > "$work/ctx/pip.conf"
  cat > "$work/ctx/Dockerfile" <<DOCKERFILE
FROM $BASE_IMAGE
LABEL agentidentity.dev/python-base=$BASE_IMAGE
COPY wheels /opt/wheels
COPY pip.conf /etc/pip.conf
DOCKERFILE
  docker build -q --network none -t "$WHEEL_IMAGE" "$work/ctx" >/dev/null || die "docker build of $WHEEL_IMAGE failed"
  log "wheelhouse ($(ls "$work/ctx/wheels" | wc -l) wheels, $(du -sh "$work/ctx/wheels" | cut -f1)) built in $(( $(date +%s) - t1 ))s"
fi

size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1/1e6}'; }
log "clean base:  $BASE_IMAGE ($(size "$BASE_IMAGE"), $py_version)"
log "wheelhouse:  $WHEEL_IMAGE ($(size "$WHEEL_IMAGE")) <- use as PYTHON_IMAGE with the unchanged Dockerfile"
log "done in $(( $(date +%s) - T0 ))s"
echo "$WHEEL_IMAGE"
