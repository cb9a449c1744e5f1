#!/usr/bin/env bash
# End-to-end check of the offline kind setup: creates a throwaway kind cluster from the node image
# of node-image.sh, checks that every kube-system pod runs, runs a pod from a locally imported
# image (busybox from Debian's busybox-static package, `kind load docker-image`,
# imagePullPolicy: Never) that reads its projected ServiceAccount token, has the API server
# accept that token (TokenReview), resolves the API Service by cluster DNS and reaches it through
# kube-proxy; then deletes the cluster (also on failure).
#
# All probe traffic stays on this machine: the pod only talks to cluster addresses, the DNS name
# is fully qualified inside cluster.local (CoreDNS answers it without forwarding).
#
#   bash scripts/kind/probe.sh            # last stdout line: "ok <cluster create seconds>"
#
# Env: KIND_PROBE_CLUSTER (aio-probe), KIND_NODE_IMAGE (default: built/reused by node-image.sh),
#      KIND_PROBE_KEEP=1 keeps the cluster.
set -euo pipefail
TAG=kind-probe
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLUSTER="${KIND_PROBE_CLUSTER:-aio-probe}"
KIND_VERSION="${KIND_VERSION:-v0.30.0}"
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
KIND="$CACHE_ROOT/kind-$KIND_VERSION/kind"
KUBECTL="$CACHE_ROOT/kind-node/k8s-$K8S_VERSION/bin/kubectl"

image="${KIND_NODE_IMAGE:-$(bash "$HERE/node-image.sh" | tail -n 1)}"
[[ -x "$KIND" && -x "$KUBECTL" ]] || die "kind or kubectl missing from the cache; run node-image.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/aio-kind-probe.XXXXXX")
export KUBECONFIG="$work/kubeconfig"
cleanup() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    log "failed; state of the cluster:"
    "$KUBECTL" get pods -A -o wide >&2 2>/dev/null || true
  fi
  if [[ "${KIND_PROBE_KEEP:-}" != 1 ]]; then "$KIND" delete cluster --name "$CLUSTER" >&2 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# --- a tiny local image: busybox from Debian (apt-get download, no image registry) ---------------
BUSYBOX_IMAGE=agent-identity/busybox:local
if ! docker image inspect "$BUSYBOX_IMAGE" >/dev/null 2>&1; then
  (cd "$work" && apt-get download busybox-static >&2) || die "apt-get download busybox-static failed"
  dpkg-deb -x "$work"/busybox-static_*.deb "$work/bb"
  mkdir -p "$work/img/bin" "$work/img/tmp" "$work/img/etc"
  cp "$work/bb/bin/busybox" "$work/img/bin/busybox"
  for a in sh cat wc head cut nslookup wget sleep echo; do ln -s busybox "$work/img/bin/$a"; done
  echo 'nobody:x:65534:65534:nobody:/:/bin/sh' > "$work/img/etc/passwd"
  tar -C "$work/img" --numeric-owner --owner=0 --group=0 -c . \
    | docker import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' - "$BUSYBOX_IMAGE" >/dev/null
fi

# --- cluster ----------------------------------------------------------------------------------------
log "kind create cluster --name $CLUSTER --image $image"
"$KIND" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
t0=$(date +%s)
"$KIND" create cluster --name "$CLUSTER" --image "$image" --wait 120s --kubeconfig "$KUBECONFIG" >&2
create_s=$(( $(date +%s) - t0 ))
log "cluster up in ${create_s}s"

# kind's --wait covers the node only: wait for CoreDNS and kube-proxy to roll out, then every pod Ready
"$KUBECTL" -n kube-system rollout status deployment/coredns --timeout=120s >&2
"$KUBECTL" -n kube-system rollout status daemonset/kube-proxy --timeout=120s >&2
"$KUBECTL" wait --for=condition=Ready pods --all -n kube-system --timeout=120s >&2
"$KUBECTL" get pods -n kube-system -o wide >&2
for c in etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy coredns; do
  n=$("$KUBECTL" get pods -n kube-system --no-headers | awk -v c="$c" '$1 ~ "^"c"-" && $3 == "Running" && split($2, r, "/") == 2 && r[1] == r[2]' | wc -l)
  [[ "$n" -ge 1 ]] || die "no Running and Ready $c pod in kube-system"
done

t1=$(date +%s)
"$KIND" load docker-image "$BUSYBOX_IMAGE" --name "$CLUSTER" >&2
log "kind load docker-image: $(( $(date +%s) - t1 ))s"

"$KUBECTL" apply -f - >&2 <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: token-reader, namespace: default}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 65534, runAsGroup: 65534}
  containers:
  - name: probe
    image: agent-identity/busybox:local
    imagePullPolicy: Never
    command: [sh, -c]
    args:
    - |
      set -e
      t=/var/run/secrets/kubernetes.io/serviceaccount/token
      echo "token-bytes $(wc -c < $t)"
      echo "token $(cat $t)"
      nslookup -type=a kubernetes.default.svc.cluster.local. 2>&1 | grep '^Address' || true
      wget -q -O - --no-check-certificate https://10.96.0.1/version >/dev/null 2>&1 && echo "service-https ok" || echo "service-https failed"
YAML
"$KUBECTL" wait --for=jsonpath='{.status.phase}'=Succeeded pod/token-reader --timeout=90s >&2 \
  || { "$KUBECTL" describe pod token-reader >&2; "$KUBECTL" logs token-reader >&2 || true; die "the probe pod did not succeed"; }
out=$("$KUBECTL" logs token-reader)
grep -v '^token ' <<<"$out" | sed 's/^/[kind-probe]   pod: /' >&2
token=$(sed -n 's/^token //p' <<<"$out")
[[ -n "$token" ]] || die "the pod printed no token"
authenticated=$("$KUBECTL" create -o jsonpath='{.status.authenticated} {.status.user.username}' -f - <<YAML
apiVersion: authentication.k8s.io/v1
kind: TokenReview
spec: {token: "$token"}
YAML
)
log "TokenReview: $authenticated"
[[ "$authenticated" == "true system:serviceaccount:default:default" ]] || die "the API server did not accept the pod's token"
grep -q 'Address: 10.96.0.1' <<<"$out" || die "cluster DNS did not resolve kubernetes.default"
grep -q 'service-https ok' <<<"$out" || log "warning: the pod could not reach https://10.96.0.1 (busybox wget may lack TLS)"

log "all checks passed"
echo "ok ${create_s}"
