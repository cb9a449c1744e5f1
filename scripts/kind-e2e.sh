#!/usr/bin/env bash
# `make kind-e2e`: the operator as users run it. A kind cluster, the operator image built from the
# Dockerfile and loaded into it, the Helm chart installed (two replicas with leader election, the
# webhooks through their Service, the certificates the chart generates) in a namespace enforcing
# Pod Security `restricted`, then tests/kind against it (pytest -m kind): Pods and probes, leader
# handover, helm upgrade and rollback under load, a smoke identity and its token, a pod flooding the
# webhooks with crafted reviews. The API server shows admission webhooks a client certificate of an
# authority made for the cluster ($KIND_E2E_DIR/webhook-client), and every operator, the suite's and
# the chart's (webhook.clientCA), answers only it.
#
# Before the chart, on the fresh cluster: the end-to-end suite of the local control plane
# (tests/e2e) against kind's API server, with a real kubelet, scheduler and controllers. Its
# operators run on this machine and serve their webhooks at the gateway of the docker network
# `kind` (AGENT_IDENTITY_WEBHOOK_HOST), where the API server in the node container reaches them.
# It uses the chart's cluster-wide names (webhook configurations, the pod guard, CRDs), so it runs
# first, a release of an earlier run on a reused cluster is uninstalled before it, and what it
# leaves is removed after it. Its log: $KIND_E2E_DIR/e2e.log.
#
# Works without any image registry (this project's CI machines reach package registries only):
#   engine      a Docker engine answers, or scripts/kind/docker-engine.sh starts one;
#   node image  scripts/kind/node-image.sh builds Kubernetes v1.34.4's node image from Go modules
#               and Debian packages (about 8 min cold, cached by input hash afterwards), unless
#               KIND_NODE_IMAGE names one (with internet: KIND_NODE_IMAGE=kindest/node:v1.34.0);
#   operator    scripts/build-image.sh on the local Debian Python base (offline, --network none),
#               or on PYTHON_IMAGE when given; tagged by content, loaded with `kind load`;
#   agent       scripts/kind/agent-image.sh, the small agent the pod tests run, loaded likewise.
#
# Env: KIND_CLUSTER (agent-identity), KIND_NODE_IMAGE, PYTHON_IMAGE, KIND_KEEP=1 (keep the cluster
# at the end; it is deleted otherwise), KIND_FRESH=1 (delete a cluster left from an earlier run
# instead of reusing it), KIND_E2E_DIR (.kind-e2e: kubeconfig, logs, figures), PYTEST_ARGS (added to
# tests/kind's pytest), KIND_E2E_SUITE=0 (skip the tests/e2e phase), KIND_E2E_SUITE_ARGS (added to
# its pytest, e.g. "-x" or "-k lifecycle").
# Everything it prints goes to stderr except pytest's output; the last lines are the timings.
set -euo pipefail
TAG=kind-e2e
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$(dirname "$0")/.."
REPO=$(pwd)

KIND_VERSION="${KIND_VERSION:-v0.30.0}"
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
CLUSTER="${KIND_CLUSTER:-agent-identity}"
RELEASE=agent-identity-operator
RELEASE_NS=agent-identity-system
SERVED_NS=kind-e2e
CHART=charts/agent-identity-operator
KIND="$CACHE_ROOT/kind-$KIND_VERSION/kind"
OUT="${KIND_E2E_DIR:-$REPO/.kind-e2e}"
[[ "$OUT" == /* ]] || OUT="$REPO/$OUT"  # absolute: the node mounts its audit/ directory
export KUBECONFIG="$OUT/kubeconfig"


T0=$(date +%s)
TIMINGS=()
phase() { PHASE=$1; PHASE_T0=$(date +%s); log "== $PHASE"; }
phase_done() {
  local took=$(( $(date +%s) - PHASE_T0 ))
  TIMINGS+=("$(printf '%-28s %4ss' "$PHASE" "$took")")
  log "== $PHASE: ${took}s"
}

# On failure: what the cluster looked like, and the operator's logs (also kept in $OUT).
diagnose() {
  [[ -s "$KUBECONFIG" && -n "${KUBECTL:-}" ]] || return 0
  log "state of the cluster at the failure (also in $OUT/diagnostics.txt):"
  {
    "$KUBECTL" get nodes,pods -A -o wide
    "$KUBECTL" -n "$RELEASE_NS" get deployment,replicaset,pdb,lease,endpointslices -o wide
    "$KUBECTL" -n "$RELEASE_NS" describe pods
    "$KUBECTL" get events -A --sort-by=.lastTimestamp | tail -n 60
    for pod in $("$KUBECTL" -n "$RELEASE_NS" get pods -o name); do
      echo "--- logs of $pod"
      "$KUBECTL" -n "$RELEASE_NS" logs "$pod" --tail=200 || true
      "$KUBECTL" -n "$RELEASE_NS" logs "$pod" --previous --tail=100 2>/dev/null || true
    done
  } > "$OUT/diagnostics.txt" 2>&1 || true
  tail -n 150 "$OUT/diagnostics.txt" >&2
}

summary() {
  local rc=$1
  log "timings:"
  local line
  for line in "${TIMINGS[@]}"; do log "  $line"; done
  log "  $(printf '%-28s %4ss' total $(( $(date +%s) - T0 )))"
  if [[ -s "$OUT/figures.json" ]]; then log "figures ($OUT/figures.json):"; sed 's/^/[kind-e2e]   /' "$OUT/figures.json" >&2; fi
  if [[ $rc -eq 0 ]]; then log "PASSED"; else log "FAILED (exit $rc) in phase '$FAILED_PHASE'; see above and $OUT/"; fi
}

cleanup() {
  local rc=$?
  FAILED_PHASE=${PHASE:-start}
  [[ $rc -ne 0 ]] && diagnose
  if [[ -x "$KIND" ]] && "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    if [[ "${KIND_KEEP:-}" == 1 ]]; then
      log "keeping cluster $CLUSTER (KIND_KEEP=1): KUBECONFIG=$KUBECONFIG; delete it with: $KIND delete cluster --name $CLUSTER"
    else
      phase "delete cluster"
      "$KIND" delete cluster --name "$CLUSTER" >&2 2>&1 || log "warning: kind delete cluster failed"
      phase_done
    fi
  fi
  summary "$rc"
  exit "$rc"
}
trap cleanup EXIT
mkdir -p "$OUT"
rm -f "$OUT/figures.json" "$OUT/diagnostics.txt" "$OUT/e2e.log"

# --- tools and images ---------------------------------------------------------------------------------
phase "docker engine"
docker info >/dev/null 2>&1 || bash scripts/kind/docker-engine.sh >/dev/null || die "no Docker engine answers and scripts/kind/docker-engine.sh could not start one"
phase_done

phase "node image"
if [[ -n "${KIND_NODE_IMAGE:-}" ]]; then
  NODE_IMAGE=$KIND_NODE_IMAGE
  log "node image: KIND_NODE_IMAGE=$NODE_IMAGE"
else
  NODE_IMAGE=$(bash scripts/kind/node-image.sh | tail -n 1) || die "scripts/kind/node-image.sh failed (see above)"
fi
if [[ ! -x "$KIND" ]]; then  # node-image.sh builds kind; with KIND_NODE_IMAGE we may have to
  command -v go >/dev/null || die "kind is missing and Go (which builds it) too"
  mkdir -p "$(dirname "$KIND")"
  GOBIN="$(dirname "$KIND")" CGO_ENABLED=0 go install "sigs.k8s.io/kind@$KIND_VERSION" || die "go install sigs.k8s.io/kind@$KIND_VERSION failed"
fi
KUBECTL="$CACHE_ROOT/kind-node/k8s-$K8S_VERSION/bin/kubectl"  # built with the node image
[[ -x "$KUBECTL" ]] || KUBECTL=$(command -v kubectl) || die "kubectl is missing: run scripts/kind/node-image.sh (builds it) or install it"
phase_done

phase "helm"
HELM=$(bash scripts/install-helm.sh | tail -n 1) || die "scripts/install-helm.sh failed"
phase_done

phase "operator image"
# Offline unless the caller chose otherwise: with a registry-free node image there is no registry.
local_base=1
[[ -n "${PYTHON_IMAGE:-}" || -n "${KIND_NODE_IMAGE:-}" ]] && local_base=0
built=$(AIO_LOCAL_BASE=$local_base IMAGE=agent-identity-operator:kind bash scripts/build-image.sh | tail -n 1) \
  || die "scripts/build-image.sh failed (see above)"
# A tag per content: a changed operator rolls the Deployment of a reused cluster, an unchanged one does not.
IMAGE_TAG="kind-$(docker image inspect -f '{{.Id}}' "$built" | cut -d: -f2 | cut -c1-12)"
docker tag "$built" "agent-identity-operator:$IMAGE_TAG"
docker images agent-identity-operator --format '{{.Tag}}' | grep '^kind-' | grep -vxF "$IMAGE_TAG" \
  | sed 's/^/agent-identity-operator:/' | xargs -r docker rmi >/dev/null 2>&1 || true
log "operator image: agent-identity-operator:$IMAGE_TAG"
phase_done

phase "agent image"
# The small agent tests/kind runs in pods (reads its projected token, calls the API every second).
AGENT_IMAGE=$(bash scripts/kind/agent-image.sh | tail -n 1) || die "scripts/kind/agent-image.sh failed"
phase_done

# --- cluster ------------------------------------------------------------------------------------------
phase "cluster"
if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  why=""
  if [[ "${KIND_FRESH:-}" == 1 ]]; then
    why="KIND_FRESH=1"
  elif [[ "$(docker inspect -f '{{.Config.Image}}' "$CLUSTER-control-plane" 2>/dev/null)" != "$NODE_IMAGE" ]]; then
    why="its node image is not $NODE_IMAGE"
  elif ! "$KIND" get kubeconfig --name "$CLUSTER" > "$KUBECONFIG" 2>/dev/null \
       || ! "$KUBECTL" get --raw /readyz >/dev/null 2>&1; then
    why="its API server does not answer"
  fi
  if [[ -n "$why" ]]; then
    log "deleting the existing cluster $CLUSTER ($why)"
    "$KIND" delete cluster --name "$CLUSTER" >&2
  else
    log "reusing the running cluster $CLUSTER"
  fi
fi
if ! "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  # The API server writes an audit log of every write request (the local control plane's policy,
  # which tests/e2e reads the same way) into $OUT/audit, the node's /var/log/kubernetes/audit.
  rm -rf "$OUT/audit" && mkdir -p "$OUT/audit" "$OUT/audit-policy"
  .venv/bin/python -c 'import sys, yaml; from agent_identity.local.controlplane import AUDIT_POLICY; yaml.safe_dump(AUDIT_POLICY, sys.stdout)' \
    > "$OUT/audit-policy/policy.yaml"
  # The API server shows every admission webhook a client certificate from an authority of its own
  # (its AdmissionConfiguration), as the local control plane's does: the suite's operators and the
  # chart's (webhook.clientCA) then answer it and no pod.
  rm -rf "$OUT/webhook-client"
  .venv/bin/python -c 'import sys; from pathlib import Path; from agent_identity.local.controlplane import write_webhook_client; write_webhook_client(Path(sys.argv[1]), mounted_at=Path("/etc/kubernetes/webhook-client"))' \
    "$OUT/webhook-client" >/dev/null
  cat > "$OUT/kind-config.yaml" <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    extraMounts:
      - {hostPath: "$OUT/audit-policy", containerPath: /etc/kubernetes/audit-policy, readOnly: true}
      - {hostPath: "$OUT/audit", containerPath: /var/log/kubernetes/audit}
      - {hostPath: "$OUT/webhook-client", containerPath: /etc/kubernetes/webhook-client, readOnly: true}
    kubeadmConfigPatches:
      - |
        kind: ClusterConfiguration
        apiServer:
          extraArgs:
            audit-policy-file: /etc/kubernetes/audit-policy/policy.yaml
            audit-log-path: /var/log/kubernetes/audit/audit.log
            audit-log-format: json
            audit-log-maxsize: "100"
            audit-log-maxbackup: "1"
            admission-control-config-file: /etc/kubernetes/webhook-client/admission.yaml
          extraVolumes:
            - {name: webhook-client, hostPath: /etc/kubernetes/webhook-client, mountPath: /etc/kubernetes/webhook-client, readOnly: true, pathType: Directory}
            - {name: audit-policy, hostPath: /etc/kubernetes/audit-policy, mountPath: /etc/kubernetes/audit-policy, readOnly: true, pathType: Directory}
            - {name: audit-log, hostPath: /var/log/kubernetes/audit, mountPath: /var/log/kubernetes/audit, pathType: DirectoryOrCreate}
EOF
  "$KIND" create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --config "$OUT/kind-config.yaml" --wait 120s \
    --kubeconfig "$KUBECONFIG" >&2 || die "kind create cluster failed"
fi
"$KIND" get kubeconfig --name "$CLUSTER" > "$KUBECONFIG"
# The authority of the API server's webhook client certificate, unless a reused cluster was created
# without one (by an earlier version of this script): its webhooks then answer any client.
WEBHOOK_CLIENT_CA=""
if docker exec "$CLUSTER-control-plane" test -s /etc/kubernetes/webhook-client/ca.crt 2>/dev/null \
   && cmp -s <(docker exec "$CLUSTER-control-plane" cat /etc/kubernetes/webhook-client/ca.crt) "$OUT/webhook-client/ca.crt"; then
  WEBHOOK_CLIENT_CA="$OUT/webhook-client/ca.crt"
else
  log "warning: this cluster's API server shows webhooks no client certificate of $OUT/webhook-client (KIND_FRESH=1 re-creates it): the webhooks answer any client"
fi
# kind's --wait covers the node only: the operator needs cluster DNS and the Service routes too.
"$KUBECTL" -n kube-system rollout status deployment/coredns --timeout=120s >&2
"$KUBECTL" -n kube-system rollout status daemonset/kube-proxy --timeout=120s >&2
phase_done

# --- tests/e2e on the fresh cluster -------------------------------------------------------------------
# Whatever tests/e2e leaves that the chart also names (its webhook configurations, the pod guard, the
# fence, cluster roles, profiles), the operator keys its operators kept in agent-identity-system, and
# its test namespaces (t-*, which kind's kubelet would keep running pods in).
remove_e2e_leftovers() {
  "$HELM" template "$RELEASE" "$CHART" --namespace "$RELEASE_NS" \
    | "$KUBECTL" delete --ignore-not-found --wait=true -f - >&2
  "$KUBECTL" delete namespace "$RELEASE_NS" --ignore-not-found --wait=true --timeout=120s >&2
  "$KUBECTL" get namespaces -o name | grep '^namespace/t-' \
    | xargs -r "$KUBECTL" delete --wait=false >&2 || true
}

if [[ "${KIND_E2E_SUITE:-1}" != 0 ]]; then
  phase "tests/e2e on kind"
  # The host as the node container reaches it: the IPv4 gateway of the docker network kind.
  WEBHOOK_HOST=$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' | tr ' ' '\n' | grep -m1 -F . || true)
  [[ -n "$WEBHOOK_HOST" ]] || die "no IPv4 gateway on the docker network kind (docker network inspect kind)"
  log "webhooks of the suite's operators served at $WEBHOOK_HOST; log: $OUT/e2e.log"
  if "$HELM" status "$RELEASE" --namespace "$RELEASE_NS" >/dev/null 2>&1; then
    log "uninstalling the release of an earlier run (the suite registers webhooks of the same names)"
    "$HELM" uninstall "$RELEASE" --namespace "$RELEASE_NS" --wait --timeout 300s >&2
  fi
  # The CRDs first: the suite installs crds/ (the chart's, see make chart-crds) and the clean-up deletes AgentProfiles.
  "$KUBECTL" apply --server-side --force-conflicts -f "$CHART/crds/" >&2
  "$KUBECTL" wait --for condition=established --timeout=60s -f "$CHART/crds/" >&2
  remove_e2e_leftovers
  set +e
  # The audit log only if this cluster writes it here (one reused from before, or with another
  # KIND_E2E_DIR, may not): the tests that read it are skipped otherwise.
  audit=""
  [[ -s "$OUT/audit/audit.log" ]] && audit="$OUT/audit/audit.log"
  # shellcheck disable=SC2086  # KIND_E2E_SUITE_ARGS is a list of words on purpose
  AGENT_IDENTITY_KUBECONFIG="$KUBECONFIG" AGENT_IDENTITY_WEBHOOK_HOST="$WEBHOOK_HOST" AGENT_IDENTITY_AUDIT_LOG="$audit" \
  AGENT_IDENTITY_WEBHOOK_CLIENT_CA="$WEBHOOK_CLIENT_CA" \
    .venv/bin/pytest tests/e2e -q -rs --durations=10 -p no:cacheprovider ${KIND_E2E_SUITE_ARGS:-} 2>&1 | tee "$OUT/e2e.log"
  rc=${PIPESTATUS[0]}
  set -e
  [[ $rc -eq 0 ]] || die "tests/e2e failed on kind (exit $rc): $OUT/e2e.log"
  remove_e2e_leftovers
  phase_done
fi

phase "kind load docker-image"
"$KIND" load docker-image "agent-identity-operator:$IMAGE_TAG" "$AGENT_IMAGE" --name "$CLUSTER" >&2 || die "kind load docker-image failed"
phase_done

# --- the chart ----------------------------------------------------------------------------------------
phase "helm install"
"$KUBECTL" create namespace "$RELEASE_NS" --dry-run=client -o yaml | "$KUBECTL" apply -f - >&2
# The operator must run under the strictest Pod Security level: refused at admission otherwise.
"$KUBECTL" label namespace "$RELEASE_NS" --overwrite \
  pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/warn=restricted >&2
"$KUBECTL" create namespace "$SERVED_NS" --dry-run=client -o yaml | "$KUBECTL" apply -f - >&2
client_ca=()
if [[ -n "$WEBHOOK_CLIENT_CA" ]]; then
  "$KUBECTL" -n "$RELEASE_NS" create configmap webhook-client-ca --from-file=ca.crt="$WEBHOOK_CLIENT_CA" \
    --dry-run=client -o yaml | "$KUBECTL" apply -f - >&2
  client_ca=(--set webhook.clientCA.configMap=webhook-client-ca --set webhook.clientCA.key=ca.crt)
fi
# Helm installs crds/ only when it installs a release: a reused cluster gets changed CRDs here.
"$KUBECTL" apply --server-side --force-conflicts -f "$CHART/crds/" >&2
"$HELM" upgrade --install "$RELEASE" "$CHART" --namespace "$RELEASE_NS" \
  --set image.repository=agent-identity-operator --set "image.tag=$IMAGE_TAG" --set image.pullPolicy=Never \
  --set "watchNamespaces={$SERVED_NS}" "${client_ca[@]}" \
  --wait --timeout 300s >&2 || die "helm upgrade --install failed"
"$KUBECTL" -n "$RELEASE_NS" rollout status "deployment/$RELEASE" --timeout=300s >&2
"$KUBECTL" -n "$RELEASE_NS" get pods -o wide >&2
phase_done

# --- the tests ----------------------------------------------------------------------------------------
phase "tests/kind"
# shellcheck disable=SC2086  # PYTEST_ARGS is a list of words on purpose
AGENT_IDENTITY_KIND_KUBECONFIG="$KUBECONFIG" \
AGENT_IDENTITY_KIND_RELEASE="$RELEASE" \
AGENT_IDENTITY_KIND_RELEASE_NAMESPACE="$RELEASE_NS" \
AGENT_IDENTITY_KIND_NAMESPACE="$SERVED_NS" \
AGENT_IDENTITY_KIND_FIGURES="$OUT/figures.json" \
AGENT_IDENTITY_KIND_AGENT_IMAGE="$AGENT_IMAGE" \
AGENT_IDENTITY_KIND_CLIENT_AUTH="$([[ -n "$WEBHOOK_CLIENT_CA" ]] && echo 1 || echo 0)" \
  .venv/bin/pytest tests/kind -v -s -p no:cacheprovider ${PYTEST_ARGS:-}
phase_done
