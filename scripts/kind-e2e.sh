#!/usr/bin/env bash
# `make kind-e2e`: the end-to-end suite on a kind cluster, with the operator installed by its Helm
# chart from an image built here. Needs a running Docker engine and access to the kindest/node
# and python base images; this project's CI has neither, so CI runs the same suite on the local
# control plane instead (make test).
#
# 1. builds kind (pinned) from the Go module proxy into the cache, like Helm and the control plane;
# 2. creates a kind cluster on Kubernetes v1.34 (the last kubelet that runs on cgroup v1);
# 3. builds the operator image and loads it into the cluster;
# 4. installs the chart, serving namespace kind-smoke, and waits for the Deployment to be Ready
#    (its readiness probe: the operator can reach the API server and list identities);
# 5. applies an AgentIdentity in kind-smoke and waits until the in-cluster operator makes it Ready;
# 6. runs tests/e2e against the cluster (AGENT_IDENTITY_KUBECONFIG): those tests start their own
#    out-of-cluster operator per test namespace, which the in-cluster one does not serve.
set -euo pipefail
cd "$(dirname "$0")/.."

KIND_VERSION="${KIND_VERSION:-v0.30.0}"
NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.34.0}"
CLUSTER="${KIND_CLUSTER:-agent-identity}"
IMAGE="agent-identity-operator:e2e"
CACHE="${AIO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agent-identity-operator}"
KIND="$CACHE/kind-$KIND_VERSION/kind"
KUBECONFIG_OUT="$(pwd)/.kind-kubeconfig"

die() { printf '[kind-e2e] ERROR: %s\n' "$*" >&2; exit 1; }
command -v kubectl >/dev/null || die "kubectl is missing: install it (e.g. apt-get install kubectl from the Kubernetes packages)"
command -v docker >/dev/null || die "docker is missing: kind needs a Docker engine (apt-get install docker.io, then start dockerd)"
docker info >/dev/null 2>&1 || die "no Docker engine answers: start it (e.g. 'dockerd &') and retry"

if [[ ! -x "$KIND" ]]; then
  command -v go >/dev/null || die "Go is missing: it builds kind from the Go module proxy"
  mkdir -p "$(dirname "$KIND")"
  GOBIN="$(dirname "$KIND")" CGO_ENABLED=0 go install "sigs.k8s.io/kind@${KIND_VERSION}"
fi

"$KIND" get clusters | grep -qx "$CLUSTER" || "$KIND" create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --wait 120s
"$KIND" get kubeconfig --name "$CLUSTER" > "$KUBECONFIG_OUT"
export KUBECONFIG="$KUBECONFIG_OUT"

docker build -t "$IMAGE" .
"$KIND" load docker-image "$IMAGE" --name "$CLUSTER"

HELM="$(bash scripts/install-helm.sh | tail -n 1)"
kubectl create namespace kind-smoke --dry-run=client -o yaml | kubectl apply -f -
"$HELM" upgrade --install agent-identity-operator charts/agent-identity-operator \
  --namespace agent-identity-system --create-namespace \
  --set image.repository=agent-identity-operator --set image.tag=e2e --set image.pullPolicy=Never \
  --set "watchNamespaces={kind-smoke}" --wait --timeout 180s

kubectl apply -f - <<'YAML'
apiVersion: agentidentity.dev/v1alpha1
kind: AgentIdentity
metadata: {name: smoke, namespace: kind-smoke}
spec:
  task: "kind smoke test"
  ttl: 2m
  profile: read-only
  delegator: {kind: User, name: kubernetes-admin}
  scopes: [{apiGroups: [""], resources: ["configmaps"], verbs: ["get"]}]
YAML
kubectl wait --for=jsonpath='{.status.phase}'=Ready -n kind-smoke agentidentity/smoke --timeout 60s

AGENT_IDENTITY_KUBECONFIG="$KUBECONFIG_OUT" .venv/bin/pytest tests/e2e -q
