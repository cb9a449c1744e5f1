#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kube-controller-manager from the official Go modules into a
# cache directory keyed by version, and reuses them when present.
#
# Why a wrapper module: k8s.io/kubernetes requires its staging modules (k8s.io/api, ...) at v0.0.0
# and replaces them with local paths that a consumer never sees, so we add one
# `replace k8s.io/<staging> => k8s.io/<staging> v0.<minor>.<patch>` per staging module, read from
# k8s.io/kubernetes's own go.mod (scripts/lib/k8s-go.sh, shared with scripts/kind/node-image.sh).
# The etcd binary is the root package of go.etcd.io/etcd/server/v3.
#
# Prints the bin directory on stdout (last line); everything else goes to stderr.
set -euo pipefail
TAG=build-control-plane
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
BIN_DIR="$CACHE_ROOT/control-plane/k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}/bin"
BINARIES=(etcd kube-apiserver kube-controller-manager)

have_all() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
}

if have_all; then
  log "reusing cached binaries in $BIN_DIR"
  echo "$BIN_DIR"
  exit 0
fi

# shellcheck source=SCRIPTDIR/lib/k8s-go.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/k8s-go.sh"
k8s_check_go || die "no usable Go toolchain (see above)"

work=$(mktemp -d "${TMPDIR:-/tmp}/aio-cp-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# --- kube-apiserver and kube-controller-manager -------------------------------------------------
log "resolving k8s.io/kubernetes@${K8S_VERSION}"
mkdir -p "$BIN_DIR"
k8s_wrapper_module "$work/k8s" "$K8S_VERSION" agentidentity.dev/controlplane \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  || die "could not prepare the wrapper module for k8s.io/kubernetes@${K8S_VERSION} (see above)"

ldflags=$(k8s_ldflags "$K8S_VERSION")
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
