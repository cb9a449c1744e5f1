#!/usr/bin/env bash
# `make image`: builds the operator image from the repository's Dockerfile and prints its name as
# the last stdout line (everything else goes to stderr).
#
#   bash scripts/build-image.sh                                   # agent-identity-operator:<version>
#   IMAGE=registry.example.com/aio/agent-identity-operator:0.1.0 bash scripts/build-image.sh
#   PYTHON_IMAGE=python:3.11-slim bash scripts/build-image.sh     # this base, pulled as usual
#
# The Python base, in this order:
#   1. PYTHON_IMAGE when given (and BUILDER_IMAGE, if given, for the builder stage);
#   2. python:3.11-slim when the engine already has it, or can pull it (one attempt, 30 s);
#   3. otherwise (no image registry reachable, as on this project's CI machines) the local Debian
#      base of scripts/kind/python-base-image.sh: its wheelhouse image is the builder stage, its
#      clean base the final stage, and the build runs with --network none, so nothing is fetched.
#      AIO_LOCAL_BASE=1 goes straight there (make kind-e2e does: it never tries a registry).
#
# Env: IMAGE, PYTHON_IMAGE, BUILDER_IMAGE, AIO_LOCAL_BASE.
set -euo pipefail
TAG=build-image
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$(dirname "$0")/.."

VERSION=$(sed -nE 's/^version = "(.*)"/\1/p' pyproject.toml)
IMAGE="${IMAGE:-agent-identity-operator:$VERSION}"
PUBLIC_BASE=python:3.11-slim

# No engine: start one where we can (root on Debian, like CI); docker-engine.sh says why not otherwise.
if ! docker info >/dev/null 2>&1; then
  bash scripts/kind/docker-engine.sh >/dev/null || die "no Docker engine answers and none could be started"
fi

build_args=()
network=()
if [[ -n "${PYTHON_IMAGE:-}" ]]; then
  log "base: PYTHON_IMAGE=$PYTHON_IMAGE"
  build_args+=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")
  [[ -n "${BUILDER_IMAGE:-}" ]] && build_args+=(--build-arg "BUILDER_IMAGE=$BUILDER_IMAGE")
elif [[ "${AIO_LOCAL_BASE:-}" != 1 ]] && { docker image inspect "$PUBLIC_BASE" >/dev/null 2>&1 \
      || timeout 30 docker pull -q "$PUBLIC_BASE" >/dev/null 2>&1; }; then
  log "base: $PUBLIC_BASE"
else
  [[ "${AIO_LOCAL_BASE:-}" == 1 ]] || log "$PUBLIC_BASE cannot be pulled (no image registry reachable): using the local Debian base"
  wheelhouse=$(bash scripts/kind/python-base-image.sh | tail -n 1) || die "scripts/kind/python-base-image.sh failed"
  base=$(docker image inspect -f '{{ index .Config.Labels "agentidentity.dev/python-base" }}' "$wheelhouse")
  [[ -n "$base" ]] || die "$wheelhouse names no clean base (label agentidentity.dev/python-base)"
  log "base: $base (builder stage: $wheelhouse), offline build"
  build_args+=(--build-arg "PYTHON_IMAGE=$base" --build-arg "BUILDER_IMAGE=$wheelhouse")
  network=(--network none)  # the wheelhouse has every wheel: prove that nothing is fetched
fi

t0=$(date +%s)
docker build "${network[@]}" "${build_args[@]}" -t "$IMAGE" . >&2 || die "docker build of $IMAGE failed"
log "built $IMAGE in $(( $(date +%s) - t0 ))s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "$IMAGE"
