#!/usr/bin/env bash
# Builds a pinned Helm from the official Go module (helm.sh/helm/v3) into a cache directory keyed
# by version, and reuses it when present. No prebuilt binary is downloaded: the module proxy serves
# Helm's source like any other Go module, and `go build` makes the binary.
#
# Why a wrapper module: `go install pkg@version` would do, but a wrapper module (require + a
# tools.go, `go mod tidy`, `go build -o`) is the same recipe as scripts/build-control-plane.sh,
# lets us read the resolved k8s.io/client-go version for the ldflags Helm's own Makefile sets, and
# would carry upstream `replace` directives if Helm ever had any (a consumer never sees them).
#
# The ldflags match Helm's Makefile: the version string (`helm version`), and the Kubernetes
# version Helm assumes when no cluster is asked (`.Capabilities.KubeVersion` in `helm template`,
# the deprecation checks in `helm lint`), derived from the client-go it is built with.
#
# Override with HELM_VERSION, AIO_CACHE_DIR, or point AIO_HELM at an existing helm binary.
# Prints the helm binary path on stdout (last line); everything else goes to stderr.
set -euo pipefail
TAG=install-helm
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

HELM_VERSION="${HELM_VERSION:-v3.19.0}"
HELM_DIR="$CACHE_ROOT/helm-${HELM_VERSION}"
HELM_BIN="$HELM_DIR/helm"

given_executable AIO_HELM

[[ "$HELM_VERSION" =~ ^v3\.[0-9]+\.[0-9]+$ ]] || die "HELM_VERSION=$HELM_VERSION: expected a Helm 3 release tag such as v3.19.0"

if [[ -x "$HELM_BIN" ]]; then
  log "reusing cached helm ${HELM_VERSION} at $HELM_BIN"
  echo "$HELM_BIN"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "the Go toolchain is missing: building Helm ${HELM_VERSION} needs Go >= 1.24 (e.g. 'apt-get install golang-go' or the official tarball) with 'go' on PATH; or set AIO_HELM to an existing helm binary"
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[[ "$go_minor" =~ ^[0-9]+$ && "$go_minor" -ge 24 ]] || die "Go $(go env GOVERSION) is too old: Helm ${HELM_VERSION} needs Go >= 1.24"

work=$(mktemp -d "${TMPDIR:-/tmp}/aio-helm-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log "resolving helm.sh/helm/v3@${HELM_VERSION}"
helm_gomod=$(cd "$work" && go mod download -json "helm.sh/helm/v3@${HELM_VERSION}" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("GoMod") or ""); sys.exit(1 if d.get("Error") else 0)') \
  || die "could not download helm.sh/helm/v3@${HELM_VERSION} from the Go module proxy (check GOPROXY and network)"

{
  echo "module agentidentity.dev/helmbuild"
  echo
  echo "go 1.24"
  echo
  echo "require helm.sh/helm/v3 ${HELM_VERSION}"
  echo
  # carry upstream replace directives, single-line and block form (none as of v3.19)
  awk '/^replace[[:space:]]*\($/ {inblock=1; print; next} inblock {print; if ($0 ~ /^\)/) inblock=0; next} /^replace[[:space:]]/ {print}' "$helm_gomod"
} > "$work/go.mod"
cat > "$work/tools.go" <<'GO'
//go:build tools

package helmbuild

import _ "helm.sh/helm/v3/cmd/helm"
GO

log "tidying the wrapper module"
(cd "$work" && go mod tidy >&2) || die "go mod tidy failed for helm.sh/helm/v3@${HELM_VERSION}"

client_go=$(cd "$work" && go list -m -f '{{.Version}}' k8s.io/client-go) || die "could not resolve k8s.io/client-go in the wrapper module"
[[ "$client_go" =~ ^v0\.([0-9]+)\.[0-9]+ ]] || die "unexpected k8s.io/client-go version '$client_go'"
k8s_minor="${BASH_REMATCH[1]}"

ldflags="-s -w"
ldflags+=" -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
ldflags+=" -X helm.sh/helm/v3/internal/version.metadata="
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${k8s_minor}"
done

log "building helm ${HELM_VERSION} (client-go ${client_go}; a few minutes on a cold Go build cache)"
mkdir -p "$HELM_DIR"
(cd "$work" && go build -trimpath -ldflags "$ldflags" -o "$HELM_BIN.tmp" helm.sh/helm/v3/cmd/helm) \
  || die "go build of helm ${HELM_VERSION} failed (see the compiler output above)"
mv "$HELM_BIN.tmp" "$HELM_BIN"

built=$("$HELM_BIN" version --template '{{.Version}}') || die "the built helm does not run"
[[ "$built" == "$HELM_VERSION" ]] || die "built helm reports version '$built', expected ${HELM_VERSION}"
log "built helm ${HELM_VERSION} in $(( $(date +%s) - start ))s into $HELM_DIR"
echo "$HELM_BIN"
