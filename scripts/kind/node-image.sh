#!/usr/bin/env bash
# Assembles a kind node image for Kubernetes ${K8S_VERSION} without any container image registry,
# and prints its name (agent-identity/kind-node:<version>-<input hash>) as the last stdout line.
#
# Why: the machines this project runs on reach package registries (Go module proxy, Debian
# mirrors, ...) but no image registry, so kindest/node and the registry.k8s.io images kubeadm
# wants cannot be pulled. Everything here comes from Go modules and Debian packages:
#
#   binaries   kubelet, kubeadm, kubectl, kube-scheduler, kube-proxy: the k8s.io/kubernetes module
#              with the wrapper-module technique of scripts/build-control-plane.sh (shared in
#              scripts/lib/k8s-go.sh); kube-apiserver, kube-controller-manager and etcd come from
#              build-control-plane.sh itself; crictl from sigs.k8s.io/cri-tools; CoreDNS from a
#              small main that links only the plugins kubeadm's Corefile uses; pause from the
#              pause.c shipped in the k8s.io/kubernetes module (gcc -static); kind itself with
#              `go install sigs.k8s.io/kind@${KIND_VERSION}`, whose module also carries the
#              node base-image files (images/base/files) we reuse. All cached under the cache root.
#   rootfs     debootstrap (minbase) of Debian bookworm + the packages of kind's base image
#              (systemd, containerd, runc, CNI plugins from Debian), kind's files and systemd
#              tweaks; imported once with `docker import` and cached as a docker image.
#   images     one image per component, made with `docker import` from a directory (kube-proxy on
#              a minimal Debian rootfs with iptables), tagged with the names
#              `kubeadm config images list` prints, and pre-loaded into the node's containerd the
#              way `kind build node-image` does (pinned, not unpacked).
#   node       containerd's config gets restrict_oom_score_adj = true (these hosts lack
#              CAP_SYS_RESOURCE, so a pod sandbox may not lower its oom_score_adj); a static
#              ptp + host-local CNI conflist replaces kindnetd (single-node clusters only: every
#              node would get the same pod subnet); /kind/manifests/default-cni.yaml is a harmless
#              ConfigMap; STOPSIGNAL SIGRTMIN+3 for systemd.
#
# Nothing is ever pulled: the image tag depends on this script, scripts/lib/k8s-go.sh and the
# versions below, and a second run with the same inputs is a cache hit (`docker image inspect`).
#
#   bash scripts/kind/docker-engine.sh                      # an engine with the capability wrapper
#   image=$(bash scripts/kind/node-image.sh | tail -n 1)
#   "$AIO_CACHE_DIR/kind-v0.30.0/kind" create cluster --image "$image" --wait 120s
#
# Env: K8S_VERSION (v1.34.4), KIND_VERSION (v0.30.0), CRICTL_VERSION (v1.34.0),
#      COREDNS_VERSION (v1.12.1), AIO_CACHE_DIR, NODE_IMAGE_REPO (agent-identity/kind-node),
#      DEBIAN_MIRROR (default: the host's Debian mirror if the host is bookworm, else debootstrap's).
set -euo pipefail
TAG=node-image
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
KIND_VERSION="${KIND_VERSION:-v0.30.0}"
CRICTL_VERSION="${CRICTL_VERSION:-v1.34.0}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.12.1}"
SUITE=bookworm
NODE_IMAGE_REPO="${NODE_IMAGE_REPO:-agent-identity/kind-node}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_SCRIPTS="$(dirname "$HERE")"

KIND_BIN="$CACHE_ROOT/kind-$KIND_VERSION/kind"              # the same path scripts/kind-e2e.sh uses
NODE_BIN_DIR="$CACHE_ROOT/kind-node/k8s-$K8S_VERSION/bin"    # kubelet kubeadm kubectl kube-scheduler kube-proxy
CRICTL_BIN="$CACHE_ROOT/kind-node/crictl-$CRICTL_VERSION/crictl"
COREDNS_BIN="$CACHE_ROOT/kind-node/coredns-$COREDNS_VERSION/coredns"
NODE_CMDS=(kubelet kubeadm kubectl kube-scheduler kube-proxy)

# Packages of kind's base image (images/base/Dockerfile), plus what kind builds from source there
# (containerd, runc, CNI plugins) taken from Debian instead, and dbus/socat/ebtables for systemd
# and kubelet. The kube-proxy image gets only IPTABLES_PACKAGES (installed first, then snapshotted).
IPTABLES_PACKAGES=(iptables conntrack ca-certificates)
NODE_PACKAGES=(systemd dbus
  conntrack iptables nftables iproute2 ethtool util-linux mount kmod
  libseccomp2 pigz fuse-overlayfs
  nfs-common open-iscsi
  bash ca-certificates curl jq procps
  containerd runc containernetworking-plugins socat ebtables)
ROOTFS_REV=1   # bump when the rootfs recipe below changes in a way the package lists don't show

stage_start() { STAGE_NAME=$1; STAGE_T0=$(date +%s); log "== $1"; }
stage_end() { log "== $STAGE_NAME done in $(( $(date +%s) - STAGE_T0 ))s"; TIMINGS+=("$STAGE_NAME=$(( $(date +%s) - STAGE_T0 ))s"); }
TIMINGS=()
T0=$(date +%s)

docker info >/dev/null 2>&1 || die "no Docker engine answers: run scripts/kind/docker-engine.sh first"

# --- the image name: a hash of every input ----------------------------------------------------------
input_hash=$( {
  cat "${BASH_SOURCE[0]}" "$REPO_SCRIPTS/lib/k8s-go.sh" "$REPO_SCRIPTS/lib/debian-rootfs.sh"
  echo "$K8S_VERSION $KIND_VERSION $CRICTL_VERSION $COREDNS_VERSION $SUITE"
} | sha256sum | cut -c1-12)
NODE_IMAGE="$NODE_IMAGE_REPO:$K8S_VERSION-$input_hash"
if docker image inspect "$NODE_IMAGE" >/dev/null 2>&1; then
  log "reusing $NODE_IMAGE (cache hit)"
  echo "$NODE_IMAGE"
  exit 0
fi
log "building $NODE_IMAGE"

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot)"
command -v debootstrap >/dev/null || die "debootstrap is missing: run scripts/kind/docker-engine.sh (installs it) or apt-get install debootstrap"
command -v gcc >/dev/null || die "gcc is missing (it compiles the pause binary): apt-get install gcc libc6-dev"
command -v jq >/dev/null || die "jq is missing: apt-get install jq"
# shellcheck source=SCRIPTDIR/../lib/k8s-go.sh
source "$REPO_SCRIPTS/lib/k8s-go.sh"
# shellcheck source=SCRIPTDIR/../lib/debian-rootfs.sh
source "$REPO_SCRIPTS/lib/debian-rootfs.sh"
k8s_check_go || die "no usable Go toolchain (see above)"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
GOMODCACHE="$(go env GOMODCACHE)"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/aio-node-image.XXXXXX")
BUILD_CONTAINER=""
COMPONENT_TAGS=()   # upstream-named tags this run created in the host engine; removed on exit
cleanup() {
  local m
  [[ -n "$BUILD_CONTAINER" ]] && docker rm -f "$BUILD_CONTAINER" >/dev/null 2>&1
  ((${#COMPONENT_TAGS[@]})) && docker rmi "${COMPONENT_TAGS[@]}" >/dev/null 2>&1
  # anything debootstrap or we mounted inside the work dir, deepest first, before removing it
  for m in $(findmnt -rn -o TARGET | grep -F "$work/" | sort -r); do umount -l "$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# --- binaries ----------------------------------------------------------------------------------------
stage_start "control-plane binaries (scripts/build-control-plane.sh)"
CP_BIN_DIR=$(K8S_VERSION="$K8S_VERSION" bash "$REPO_SCRIPTS/build-control-plane.sh" | tail -n 1)
[[ -x "$CP_BIN_DIR/kube-apiserver" && -x "$CP_BIN_DIR/kube-controller-manager" && -x "$CP_BIN_DIR/etcd" ]] \
  || die "build-control-plane.sh did not leave kube-apiserver, kube-controller-manager and etcd in '$CP_BIN_DIR'"
stage_end

stage_start "kind $KIND_VERSION"
if [[ ! -x "$KIND_BIN" ]]; then
  mkdir -p "$(dirname "$KIND_BIN")"
  (cd "$work" && GOBIN="$(dirname "$KIND_BIN")" go install "sigs.k8s.io/kind@${KIND_VERSION}" >&2) || die "go install sigs.k8s.io/kind@${KIND_VERSION} failed"
fi
KIND_MOD="$GOMODCACHE/sigs.k8s.io/kind@$KIND_VERSION"
if [[ ! -d "$KIND_MOD/images/base/files" ]]; then
  (cd "$work" && go mod download "sigs.k8s.io/kind@${KIND_VERSION}") || die "could not download the kind module"
fi
KIND_FILES="$KIND_MOD/images/base/files"
[[ -f "$KIND_FILES/etc/containerd/config.toml" ]] || die "kind's base-image files are not in $KIND_FILES"
stage_end

stage_start "node binaries ${NODE_CMDS[*]} $K8S_VERSION"
have_node_bins() { local b; for b in "${NODE_CMDS[@]}"; do [[ -x "$NODE_BIN_DIR/$b" ]] || return 1; done; }
if ! have_node_bins; then
  pkgs=(); for b in "${NODE_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  k8s_wrapper_module "$work/k8s" "$K8S_VERSION" agentidentity.dev/kindnode "${pkgs[@]}" \
    || die "could not prepare the wrapper module for k8s.io/kubernetes@${K8S_VERSION} (see above)"
  mkdir -p "$work/k8s/out" "$NODE_BIN_DIR"
  log "building ${NODE_CMDS[*]} (several minutes on a cold cache)"
  (cd "$work/k8s" && go build -trimpath -ldflags "$(k8s_ldflags "$K8S_VERSION")" -o "$work/k8s/out/" "${pkgs[@]}") \
    || die "go build of ${NODE_CMDS[*]} failed (see the compiler output above)"
  for b in "${NODE_CMDS[@]}"; do mv -f "$work/k8s/out/$b" "$NODE_BIN_DIR/$b"; done
fi
have_node_bins || die "node binaries missing from $NODE_BIN_DIR"
"$NODE_BIN_DIR/kubeadm" version -o short | grep -qx "$K8S_VERSION" || die "kubeadm does not report $K8S_VERSION"
stage_end

stage_start "crictl $CRICTL_VERSION"
if [[ ! -x "$CRICTL_BIN" ]]; then
  mkdir -p "$(dirname "$CRICTL_BIN")"
  (cd "$work" && GOBIN="$work/crictl-bin" go install -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION#v}" \
      "sigs.k8s.io/cri-tools/cmd/crictl@${CRICTL_VERSION}" >&2) || die "go install of crictl ${CRICTL_VERSION} failed"
  mv -f "$work/crictl-bin/crictl" "$CRICTL_BIN"
fi
stage_end

stage_start "CoreDNS $COREDNS_VERSION"
if [[ ! -x "$COREDNS_BIN" ]]; then
  mkdir -p "$work/coredns" "$(dirname "$COREDNS_BIN")"
  cat > "$work/coredns/go.mod" <<GOMOD
module agentidentity.dev/coredns

go 1.24

require github.com/coredns/coredns ${COREDNS_VERSION}
GOMOD
  # Only the plugins of kubeadm's Corefile (prometheus is the metrics package), plus log and hosts.
  cat > "$work/coredns/main.go" <<'GO'
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() { coremain.Run() }
GO
  log "building CoreDNS (about 2.5 min on a cold cache)"
  (cd "$work/coredns" && go mod tidy >&2 && go build -trimpath -ldflags "-s -w" -o "$COREDNS_BIN.tmp" .) \
    || die "go build of CoreDNS ${COREDNS_VERSION} failed"
  mv -f "$COREDNS_BIN.tmp" "$COREDNS_BIN"
fi
"$COREDNS_BIN" -version | grep -q "CoreDNS-${COREDNS_VERSION#v}" || die "CoreDNS binary does not report ${COREDNS_VERSION}"
stage_end

stage_start "pause"
PAUSE_C="$GOMODCACHE/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c"
[[ -f "$PAUSE_C" ]] || (cd "$work" && go mod download "k8s.io/kubernetes@$K8S_VERSION") || true
[[ -f "$PAUSE_C" ]] || die "pause.c not found at $PAUSE_C"
PAUSE_TAG=$(sed -nE 's/^TAG \?= *([0-9.]+).*/\1/p' "$(dirname "$(dirname "$PAUSE_C")")/Makefile")
[[ -n "$PAUSE_TAG" ]] || die "could not read the pause version from build/pause/Makefile"
PAUSE_BIN="$CACHE_ROOT/kind-node/pause-$PAUSE_TAG/pause"
if [[ ! -x "$PAUSE_BIN" ]]; then
  mkdir -p "$(dirname "$PAUSE_BIN")"
  gcc -Os -Wall -Werror -static -DVERSION="v${PAUSE_TAG}-${K8S_VERSION}" -o "$PAUSE_BIN.tmp" "$PAUSE_C" \
    || die "gcc -static pause.c failed (is libc6-dev installed?)"
  strip "$PAUSE_BIN.tmp" 2>/dev/null || true
  mv -f "$PAUSE_BIN.tmp" "$PAUSE_BIN"
fi
stage_end

# --- rootfs images (cached as docker images) ---------------------------------------------------------
rootfs_hash=$(echo "$ROOTFS_REV $SUITE $KIND_VERSION ${IPTABLES_PACKAGES[*]} / ${NODE_PACKAGES[*]}" | sha256sum | cut -c1-12)
ROOTFS_IMAGE="agent-identity/kind-rootfs:$SUITE-$rootfs_hash"      # the node, before Kubernetes
IPTABLES_IMAGE="agent-identity/iptables-base:$SUITE-$rootfs_hash"  # minbase + iptables, for kube-proxy

chroot_run() { debian_chroot "$root" "$@"; }

build_rootfs() {
  root="$work/rootfs"
  debian_rootfs "$root" "$work/debootstrap.log" "${IPTABLES_PACKAGES[@]}"

  log "importing $IPTABLES_IMAGE (minbase + ${IPTABLES_PACKAGES[*]})"
  tar -C "$root" --numeric-owner \
      --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* --exclude=./usr/sbin/policy-rc.d \
      --exclude=./var/lib/apt/lists/* --exclude=./var/cache/apt/* --exclude=./var/cache/debconf/*-old \
      --exclude=./usr/share/doc/* --exclude=./usr/share/man/* --exclude=./usr/share/info/* \
      --exclude=./usr/share/locale/* --exclude=./var/log/* -c . \
    | docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$IPTABLES_IMAGE" >/dev/null \
    || die "docker import of $IPTABLES_IMAGE failed"

  log "installing the node packages in the chroot: ${NODE_PACKAGES[*]}"
  chroot_run apt-get install -y -qq --no-install-recommends "${NODE_PACKAGES[@]}" >&2 || die "apt-get install in the chroot failed"

  # kind's base image: its files, with the permissions its Dockerfile gives them
  log "applying kind $KIND_VERSION base-image files and systemd tweaks"
  install -m 0755 "$KIND_FILES"/usr/local/bin/* "$root/usr/local/bin/"
  mkdir -p "$root/kind" "$root/LICENSES"
  cp -r "$KIND_FILES/kind/." "$root/kind/"
  find "$root/kind" -type d -exec chmod 0755 {} +
  find "$root/kind" -type f -exec chmod 0644 {} +
  chmod 0755 "$root/kind/bin" "$root"/kind/bin/*
  install -m 0644 "$KIND_FILES"/LICENSES/* "$root/LICENSES/"
  install -m 0644 "$KIND_FILES/etc/crictl.yaml" "$root/etc/"
  install -D -m 0644 "$KIND_FILES/etc/containerd/config.toml" "$root/etc/containerd/config.toml"
  install -m 0644 "$KIND_FILES"/etc/default/* "$root/etc/default/"
  install -m 0644 "$KIND_FILES"/etc/sysctl.d/* "$root/etc/sysctl.d/"
  install -m 0644 "$KIND_FILES"/etc/systemd/system/*.service "$KIND_FILES"/etc/systemd/system/*.slice "$root/etc/systemd/system/"
  install -D -m 0644 -t "$root/etc/systemd/system/kubelet.service.d" "$KIND_FILES"/etc/systemd/system/kubelet.service.d/*

  find "$root/lib/systemd/system/sysinit.target.wants/" -name "systemd-tmpfiles-setup.service" -delete
  local f
  for f in "$root"/lib/systemd/system/multi-user.target.wants/* "$root"/etc/systemd/system/*.wants/* \
           "$root"/lib/systemd/system/local-fs.target.wants/* "$root"/lib/systemd/system/sockets.target.wants/*udev* \
           "$root"/lib/systemd/system/sockets.target.wants/*initctl* "$root"/lib/systemd/system/basic.target.wants/*; do
    if [[ -L "$f" || -f "$f" ]]; then rm -f "$f"; fi
  done
  echo "ReadKMsg=no" >> "$root/etc/systemd/journald.conf"
  ln -sf /lib/systemd/systemd "$root/sbin/init"
  chroot_run systemctl enable kubelet.service containerd.service undo-mount-hacks.service >&2
  chroot_run systemctl mask systemd-binfmt.service >&2
  mkdir -p "$root/etc/kubernetes/manifests"

  # containerd, runc and the CNI plugins from Debian, where kind's files expect them
  ln -sf /usr/bin/containerd "$root/usr/local/bin/containerd"
  mkdir -p "$root/opt/cni/bin"
  local p
  for p in host-local loopback ptp portmap; do
    [[ -x "$root/usr/lib/cni/$p" ]] || die "CNI plugin $p missing from containernetworking-plugins"
    ln -sf "/usr/lib/cni/$p" "$root/opt/cni/bin/$p"
  done
  chroot_run ctr oci spec \
    | jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
    | jq 'del(.process.rlimits)' > "$root/etc/containerd/cri-base.json"
  jq -e '.hooks.createContainer' "$root/etc/containerd/cri-base.json" >/dev/null || die "could not generate cri-base.json with ctr oci spec"
  # a pod sandbox may not lower its oom_score_adj without CAP_SYS_RESOURCE (what kind does rootless)
  sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$root/etc/containerd/config.toml"
  grep -q 'restrict_oom_score_adj = true' "$root/etc/containerd/config.toml" || die "could not set restrict_oom_score_adj in containerd's config"

  # pod network: one bridge-less ptp interface per pod, addresses from the node's pod subnet
  # (kind's default podSubnet 10.244.0.0/16; kubeadm gives the first node 10.244.0.0/24)
  mkdir -p "$root/etc/cni/net.d"
  cat > "$root/etc/cni/net.d/10-aio-ptp.conflist" <<'JSON'
{
  "cniVersion": "0.4.0",
  "name": "aio-ptp",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": true,
      "mtu": 1500,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "10.244.0.0/24"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON

  # clean up like kind's clean-install, and leave no host state behind
  chroot_run apt-get clean -y >&2
  umount "$root/proc"
  rm -f "$root/usr/sbin/policy-rc.d"
  : > "$root/etc/resolv.conf"
  : > "$root/etc/machine-id"
  rm -rf "$root"/var/cache/debconf/*-old "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/* \
         "$root"/usr/share/doc/* "$root"/usr/share/doc-base/* "$root"/usr/share/man/* "$root"/usr/share/info/*

  log "importing $ROOTFS_IMAGE"
  tar -C "$root" --numeric-owner --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* -c . \
    | docker import \
        --change 'ENV container=docker' \
        --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' \
        - "$ROOTFS_IMAGE" >/dev/null \
    || die "docker import of $ROOTFS_IMAGE failed"
  rm -rf --one-file-system "$root"
}

stage_start "Debian $SUITE rootfs images"
if docker image inspect "$ROOTFS_IMAGE" >/dev/null 2>&1 && docker image inspect "$IPTABLES_IMAGE" >/dev/null 2>&1; then
  log "reusing $ROOTFS_IMAGE and $IPTABLES_IMAGE"
else
  build_rootfs
fi
stage_end

# --- component images ---------------------------------------------------------------------------------
stage_start "component images"
mapfile -t KUBEADM_IMAGES < <("$NODE_BIN_DIR/kubeadm" config images list --kubernetes-version "$K8S_VERSION")
# the sandbox image named in kind's containerd config (pause 3.10), besides kubeadm's pause 3.10.1
SANDBOX_IMAGE=$(sed -nE 's/^[[:space:]]*sandbox_image[[:space:]]*=[[:space:]]*"([^"]+)".*/\1/p' "$KIND_FILES/etc/containerd/config.toml")
[[ ${#KUBEADM_IMAGES[@]} -ge 7 && -n "$SANDBOX_IMAGE" ]] || die "unexpected image list: ${KUBEADM_IMAGES[*]} / sandbox '$SANDBOX_IMAGE'"
ALL_IMAGES=("${KUBEADM_IMAGES[@]}")
printf '%s\n' "${ALL_IMAGES[@]}" | grep -qxF "$SANDBOX_IMAGE" || ALL_IMAGES+=("$SANDBOX_IMAGE")
log "images: ${ALL_IMAGES[*]}"

# import_static REF BIN PATH_IN_IMAGE [extra docker import --change ...]: a one-binary image
import_static() {
  local ref=$1 bin=$2 dest=$3; shift 3
  local d
  d="$work/img/$(echo "$ref" | tr '/:' '__')"
  mkdir -p "$d$(dirname "$dest")" "$d/tmp" "$d/etc"
  chmod 1777 "$d/tmp"
  install -m 0755 "$bin" "$d$dest"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' > "$d/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$d/etc/group"
  tar -C "$d" --numeric-owner --owner=0 --group=0 -c . \
    | docker import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' --change "ENTRYPOINT [\"$dest\"]" "$@" - "$ref" >/dev/null \
    || die "docker import of $ref failed"
}
for ref in "${ALL_IMAGES[@]}"; do
  COMPONENT_TAGS+=("$ref")
  name=${ref##*/}; name=${name%%:*}
  case "$name" in
    kube-apiserver|kube-controller-manager) import_static "$ref" "$CP_BIN_DIR/$name" "/usr/local/bin/$name" ;;
    kube-scheduler) import_static "$ref" "$NODE_BIN_DIR/$name" "/usr/local/bin/$name" ;;
    etcd) import_static "$ref" "$CP_BIN_DIR/etcd" /usr/local/bin/etcd \
            --change "LABEL agentidentity.dev/etcd-version=$("$CP_BIN_DIR/etcd" --version | sed -nE 's/^etcd Version: //p')" ;;
    coredns) import_static "$ref" "$COREDNS_BIN" /coredns ;;
    pause) import_static "$ref" "$PAUSE_BIN" /pause --change 'USER 65535:65535' ;;
    kube-proxy)
      mkdir -p "$work/img/kube-proxy"
      install -m 0755 "$NODE_BIN_DIR/kube-proxy" "$work/img/kube-proxy/kube-proxy"
      printf 'FROM %s\nCOPY kube-proxy /usr/local/bin/kube-proxy\n' "$IPTABLES_IMAGE" > "$work/img/kube-proxy/Dockerfile"
      docker build -q -t "$ref" "$work/img/kube-proxy" >/dev/null || die "docker build of $ref failed" ;;
    *) die "kubeadm wants an image this script does not know how to make: $ref" ;;
  esac
done
docker save -o "$work/images.tar" "${ALL_IMAGES[@]}" || die "docker save of the component images failed"
log "component images: $(du -h "$work/images.tar" | cut -f1) archive"
stage_end

# --- the node image -------------------------------------------------------------------------------------
stage_start "node image (binaries, preload, commit)"
BUILD_CONTAINER="aio-kind-node-build-$$"
docker run -d --name "$BUILD_CONTAINER" --entrypoint=sleep --security-opt seccomp=unconfined "$ROOTFS_IMAGE" infinity >/dev/null \
  || die "could not start the build container from $ROOTFS_IMAGE"
for b in kubelet kubeadm kubectl; do docker cp "$NODE_BIN_DIR/$b" "$BUILD_CONTAINER:/usr/bin/$b"; done
docker cp "$CRICTL_BIN" "$BUILD_CONTAINER:/usr/local/bin/crictl"
docker exec -i "$BUILD_CONTAINER" bash -euo pipefail -s "$K8S_VERSION" <<'SH' || die "could not prepare the build container"
chown root:root /usr/bin/kubelet /usr/bin/kubeadm /usr/bin/kubectl /usr/local/bin/crictl
chmod 0755 /usr/bin/kubelet /usr/bin/kubeadm /usr/bin/kubectl /usr/local/bin/crictl
printf '%s' "$1" > /kind/version
mkdir -p /kind/manifests
# kind applies this file when the cluster config does not disable the default CNI; the pod network
# here is the static ptp conflist in /etc/cni/net.d, so the "CNI manifest" is only a note.
cat > /kind/manifests/default-cni.yaml <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata:
  name: aio-offline-cni
  namespace: kube-system
data:
  note: "Pod network: static ptp + host-local CNI conflist in /etc/cni/net.d of the node (single node, 10.244.0.0/24); no kindnetd."
YAML
nohup containerd > /var/log/containerd-preload.log 2>&1 &
echo $! > /run/containerd-preload.pid
for i in $(seq 1 50); do [[ -S /run/containerd/containerd.sock ]] && break; sleep 0.2; done
ctr version >/dev/null
SH

docker exec -i "$BUILD_CONTAINER" ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned \
    --all-platforms --no-unpack --digests - < "$work/images.tar" >&2 \
  || die "ctr images import failed"
loaded=$(docker exec "$BUILD_CONTAINER" ctr --namespace=k8s.io images list -q)
for ref in "${ALL_IMAGES[@]}"; do
  grep -qxF "$ref" <<<"$loaded" || die "$ref is missing from the node's containerd after the import"
done
# (PID 1 of the build container is sleep, which reaps nobody: an exited containerd stays a zombie)
docker exec "$BUILD_CONTAINER" bash -c 'p=$(cat /run/containerd-preload.pid); kill "$p"
  for i in $(seq 1 100); do
    case "$(awk "/^State:/{print \$2}" "/proc/$p/status" 2>/dev/null)" in ""|Z) exit 0 ;; esac; sleep 0.2
  done; exit 1' \
  || die "containerd in the build container did not stop"
docker exec "$BUILD_CONTAINER" rm -f /var/log/containerd-preload.log /run/containerd-preload.pid
docker commit \
    --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' \
    --change 'ENV container=docker HTTP_PROXY="" HTTPS_PROXY="" NO_PROXY=""' \
    "$BUILD_CONTAINER" "$NODE_IMAGE-partial" >/dev/null || die "docker commit failed"
docker rm -f "$BUILD_CONTAINER" >/dev/null; BUILD_CONTAINER=""
# docker commit/import cannot set STOPSIGNAL; a one-line local build can (systemd stops on SIGRTMIN+3)
printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\n' "$NODE_IMAGE-partial" | docker build -q -t "$NODE_IMAGE" - >/dev/null \
  || die "docker build (STOPSIGNAL) failed"
docker rmi "$NODE_IMAGE-partial" >/dev/null
# the component images live in the node now; cleanup() drops their upstream-named tags from the
# host engine (they would shadow real ones; nothing else needs them)
stage_end

log "timings: ${TIMINGS[*]} total=$(( $(date +%s) - T0 ))s"
log "node image $NODE_IMAGE: $(docker image inspect -f '{{.Size}}' "$NODE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
echo "$NODE_IMAGE"
