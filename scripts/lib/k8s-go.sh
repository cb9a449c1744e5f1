# shellcheck shell=bash
# Shared by scripts/build-control-plane.sh and scripts/kind/node-image.sh (source it; it defines
# functions only). Builds Kubernetes commands from the official k8s.io/kubernetes Go module.
#
# Why a wrapper module: k8s.io/kubernetes requires its staging modules (k8s.io/api, ...) at v0.0.0
# and replaces them with local paths that a consumer never sees, so we add one
# `replace k8s.io/<staging> => k8s.io/<staging> v0.<minor>.<patch>` per staging module, read from
# k8s.io/kubernetes's own go.mod.
#
# Functions print diagnostics on stderr and return non-zero on failure; callers decide how to die.

# progress messages go through the caller's log() when it has one
_k8s_log() { if declare -F log >/dev/null; then log "$*"; else printf '%s\n' "$*" >&2; fi; }

# k8s_check_go: the Go toolchain is present and new enough (>= 1.24) for Kubernetes 1.34.
k8s_check_go() {
  if ! command -v go >/dev/null 2>&1; then
    echo "the Go toolchain is missing: install Go >= 1.24 (e.g. 'apt-get install golang-go' or the official tarball) and make sure 'go' is on PATH" >&2
    return 1
  fi
  local go_minor
  go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
  if ! [[ "$go_minor" =~ ^[0-9]+$ && "$go_minor" -ge 24 ]]; then
    echo "Go $(go env GOVERSION) is too old: Kubernetes 1.34 needs Go >= 1.24" >&2
    return 1
  fi
}

# k8s_minor VERSION -> 34 for v1.34.4 ; k8s_patch VERSION -> 4
k8s_minor() { echo "$1" | sed -E 's/^v1\.([0-9]+)\.([0-9]+)$/\1/'; }
k8s_patch() { echo "$1" | sed -E 's/^v1\.([0-9]+)\.([0-9]+)$/\2/'; }

# k8s_ldflags VERSION: strip symbols and stamp the version where component-base (kubelet,
# kube-apiserver, ...) and client-go (kubeadm checks it too) read it. kubeadm refuses to run with
# an unparsable version.
k8s_ldflags() {
  local v=$1 minor f=""
  minor=$(k8s_minor "$v")
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X ${pkg}.gitVersion=${v} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"
  done
  echo "-s -w${f}"
}

# k8s_wrapper_module DIR VERSION MODULE_NAME PKG...: writes DIR/go.mod (requiring
# k8s.io/kubernetes@VERSION, with the staging replacements) and DIR/tools.go (importing each PKG),
# then runs `go mod tidy`. Afterwards `go build` of any PKG works inside DIR.
k8s_wrapper_module() {
  local dir=$1 version=$2 module=$3
  shift 3
  local minor patch staging_version k8s_gomod n_replace pkg
  minor=$(k8s_minor "$version")
  patch=$(k8s_patch "$version")
  staging_version="v0.${minor}.${patch}"
  mkdir -p "$dir"
  k8s_gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@${version}" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("GoMod") or ""); sys.exit(1 if d.get("Error") else 0)') || {
    echo "could not download k8s.io/kubernetes@${version} from the Go module proxy (check GOPROXY and network)" >&2
    return 1
  }
  {
    echo "module ${module}"
    echo
    echo "go 1.24"
    echo
    echo "require k8s.io/kubernetes ${version}"
    echo
    # every staging module that upstream replaces with ./staging/src/... gets its published tag
    sed -nE 's#^[[:space:]]*(replace[[:space:]]+)?(k8s\.io/[^[:space:]]+)[[:space:]]+=>[[:space:]]+\./staging/.*#replace \2 => \2 '"${staging_version}"'#p' "$k8s_gomod"
  } > "$dir/go.mod"
  n_replace=$(grep -c '^replace' "$dir/go.mod" || true)
  if [[ "$n_replace" -le 10 ]]; then
    echo "found only ${n_replace} staging replacements in $k8s_gomod; the go.mod format changed?" >&2
    return 1
  fi
  {
    echo "//go:build tools"
    echo
    echo "package $(basename "$module" | tr -c 'a-z0-9\n' '_')"
    echo
    echo "import ("
    for pkg in "$@"; do echo "	_ \"${pkg}\""; done
    echo ")"
  } > "$dir/tools.go"
  _k8s_log "tidying the wrapper module (${n_replace} staging replacements at ${staging_version})"
  (cd "$dir" && go mod tidy >&2) || {
    echo "go mod tidy failed for k8s.io/kubernetes@${version}" >&2
    return 1
  }
}
