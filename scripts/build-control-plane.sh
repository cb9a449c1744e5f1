#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kube-controller-manager from the official Go modules into a
# cache directory keyed by version, and reuses them when present.
#
# Why a wrapper module: k8s.io/kubernetes requires its staging modules (k8s.io/api, ...) at v0.0.0
# and replaces them with local paths that a consumer never sees, so we add one
# `replace k8s.io/<staging> => k8s.io/<staging> v0.<minor>.<patch>` per staging module, read from
# k8s.io/kubernetes's own go.mod. The etcd binary is the root package of go.etcd.io/etcd/server/v3.
#
# Prints the bin directory on stdout (last line); everything else goes to stderr.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE_ROOT="${AIO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agent-identity-operator}"
BIN_DIR="$CACHE_ROOT/control-plane/k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}/bin"
BINARIES=(etcd kube-apiserver kube-controller-manager)

log() { printf '[build-control-plane] %s\n' "$*" >&2; }
die() { printf '[build-control-plane] ERROR: %s\n' "$*" >&2; exit 1; }

have_all() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
}

if have_all; then
  log "reusing cached binaries in $BIN_DIR"
  echo "$BIN_DIR"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "the Go toolchain is missing: install Go >= 1.24 (e.g. 'apt-get install golang-go' or the official tarball) and make sure 'go' is on PATH"
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[[ "$go_minor" =~ ^[0-9]+$ && "$go_minor" -ge 24 ]] || die "Go $(go env GOVERSION) is too old: Kubernetes ${K8S_VERSION} needs Go >= 1.24"

minor=$(echo "$K8S_VERSION" | sed -E 's/^v1\.([0-9]+)\.([0-9]+)$/\1/')
patch=$(echo "$K8S_VERSION" | sed -E 's/^v1\.([0-9]+)\.([0-9]+)$/\2/')
staging_version="v0.${minor}.${patch}"

work=$(mktemp -d "${TMPDIR:-/tmp}/aio-cp-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# --- kube-apiserver and kube-controller-manager -------------------------------------------------
log "resolving k8s.io/kubernetes@${K8S_VERSION}"
k8s_gomod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("GoMod") or ""); sys.exit(1 if d.get("Error") else 0)') \
  || die "could not download k8s.io/kubernetes@${K8S_VERSION} from the Go module proxy (check GOPROXY and network)"

mkdir -p "$work/k8s" "$BIN_DIR"
{
  echo "module agentidentity.dev/controlplane"
  echo
  echo "go 1.24"
  echo
  echo "require k8s.io/kubernetes ${K8S_VERSION}"
  echo
  # every staging module that upstream replaces with ./staging/src/... gets its published tag
  sed -nE 's#^[[:space:]]*(replace[[:space:]]+)?(k8s\.io/[^[:space:]]+)[[:space:]]+=>[[:space:]]+\./staging/.*#replace \2 => \2 '"${staging_version}"'#p' "$k8s_gomod"
} > "$work/k8s/go.mod"
n_replace=$(grep -c '^replace' "$work/k8s/go.mod" || true)
[[ "$n_replace" -gt 10 ]] || die "found only ${n_replace} staging replacements in $k8s_gomod; the go.mod format changed?"
cat > "$work/k8s/tools.go" <<'GO'
//go:build tools

package controlplane

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
log "tidying the wrapper module (${n_replace} staging replacements at ${staging_version})"
(cd "$work/k8s" && go mod tidy >&2) || die "go mod tidy failed for k8s.io/kubernetes@${K8S_VERSION}"

ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${K8S_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor} -X k8s.io/component-base/version.gitTreeState=clean"
for cmd in kube-apiserver kube-controller-manager; do
  log "building ${cmd} ${K8S_VERSION} (several minutes on a cold cache)"
  (cd "$work/k8s" && go build -trimpath -ldflags "$ldflags" -o "$BIN_DIR/${cmd}.tmp" "k8s.io/kubernetes/cmd/${cmd}") \
    || die "go build of ${cmd} failed (see the compiler output above)"
  mv "$BIN_DIR/${cmd}.tmp" "$BIN_DIR/${cmd}"
done

# --- etcd -----------------------------------------------------------------------------------------
mkdir -p "$work/etcd"
cat > "$work/etcd/go.mod" <<GOMOD
module agentidentity.dev/etcdbuild

go 1.24

require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}
GOMOD
cat > "$work/etcd/tools.go" <<'GO'
//go:build tools

package etcdbuild

import _ "go.etcd.io/etcd/server/v3"
GO
log "building etcd ${ETCD_VERSION}"
(cd "$work/etcd" && go mod tidy >&2 && go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd.tmp" go.etcd.io/etcd/server/v3) \
  || die "go build of etcd ${ETCD_VERSION} failed (see the output above)"
mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"

have_all || die "build finished but binaries are missing from $BIN_DIR"
log "built ${BINARIES[*]} in $(( $(date +%s) - start ))s into $BIN_DIR"
echo "$BIN_DIR"
