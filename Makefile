# agent-identity-operator: every set-up step lives here; `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/operator

.DEFAULT_GOAL := help

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) is missing; install Python >= 3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

venv: $(STAMP) ## Create the virtualenv with the operator and dev tools

control-plane: ## Build (or reuse the cached) etcd, kube-apiserver and kube-controller-manager
	bash scripts/build-control-plane.sh

crds: $(STAMP) ## Regenerate crds/ from the pydantic models
	$(BIN)/python -m agent_identity.api.crd crds

lint: $(STAMP) ## ruff, mypy --strict and the import-linter layer contracts
	$(BIN)/ruff check operator tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

test-unit: $(STAMP) ## Unit tests of pure code (no server, no tools: seconds)
	$(BIN)/pytest tests/unit -q

test-chart: $(STAMP) ## The Helm chart rendered by the pinned Helm and scanned by checkov, its dashboard and alerts (no server; builds/installs the tools once)
	$(BIN)/pytest tests/chart -q

test-e2e: $(STAMP) control-plane prometheus ## End-to-end tests on a real API server (local control plane, or KUBECONFIG=... via AGENT_IDENTITY_KUBECONFIG)
	$(BIN)/pytest tests/e2e -q

# tests/kind needs the chart installed on a kind cluster (make kind-e2e): left out unless given one.
KIND_TESTS := $(if $(AGENT_IDENTITY_KIND_KUBECONFIG),,--ignore=tests/kind)

test: $(STAMP) control-plane prometheus lint ## Everything: lint, unit, chart, end-to-end and short chaos tests
	$(BIN)/pytest tests -q $(KIND_TESTS)

demo: $(STAMP) control-plane ## Start the local control plane and the operator, apply examples/, watch identities live
	$(BIN)/python scripts/demo.py

HELM_VERSION ?= v3.19.0
CHART := charts/agent-identity-operator
HELM = $$(HELM_VERSION=$(HELM_VERSION) bash scripts/install-helm.sh | tail -n 1)

helm: ## Build (or reuse the cached) pinned Helm from the Go module proxy; prints its path
	@HELM_VERSION=$(HELM_VERSION) bash scripts/install-helm.sh

docs: $(STAMP) ## Regenerate docs/reference/ (CRD fields, flags, metrics) from the code
	$(BIN)/python scripts/docs_reference.py

chart-crds: crds ## Refresh the Helm chart's crds/ from the generated crds/
	rm -f $(CHART)/crds/*.yaml
	cp crds/*.yaml $(CHART)/crds/
	$(BIN)/python scripts/chart_pod_guard.py $(CHART)/templates/podguard.yaml

chart-lint: ## helm lint --strict the chart, then render it with default values
	@helm=$(HELM) && $$helm lint --strict $(CHART) && $$helm template agent-identity-operator $(CHART) --namespace agent-identity-system >/dev/null && echo "chart renders"

CHECKOV = $$(bash scripts/install-checkov.sh | tail -n 1)

checkov: ## Install (or reuse) the pinned checkov from PyPI in its own cached virtualenv; prints its path
	@bash scripts/install-checkov.sh

chart-scan: ## checkov's Kubernetes checks on the chart rendered with default values, skipping only the checks its README justifies
	@helm=$(HELM) && checkov=$(CHECKOV) && tmp=$$(mktemp -d) \
	  && $$helm template agent-identity-operator $(CHART) -n agent-identity-system > $$tmp/chart.yaml \
	  && skip=$$(sed -n '/^### Chart scan (checkov)/,$$p' $(CHART)/README.md | grep -oE '^\| `CKV2?_K8S_[0-9]+`' | tr -d '|` ' | paste -sd, -) \
	  && echo "checks justified in $(CHART)/README.md: $$skip" \
	  && $$checkov --file $$tmp/chart.yaml --framework kubernetes --quiet --compact --skip-download --skip-check "$$skip"; \
	  rc=$$?; rm -rf $$tmp; exit $$rc

kind-e2e: $(STAMP) ## tests/e2e on a fresh kind cluster, then the chart-installed operator there: tests/kind (offline; engine, node and base images built once)
	bash scripts/kind-e2e.sh

image: ## Build the operator image agent-identity-operator:<version> (local Debian base when no registry answers; PYTHON_IMAGE, IMAGE)
	bash scripts/build-image.sh

.PHONY: help venv control-plane crds lint test-unit test-chart test-e2e test demo bench bench-retire bench-admission bench-audit-verify helm chart-crds chart-lint image kind-e2e chaos prometheus test-monitoring rules-check

prometheus: ## Install (or reuse) Prometheus and promtool (Debian's package) for the monitoring tests; prints their paths
	@bash scripts/install-prometheus.sh

test-monitoring: $(STAMP) control-plane prometheus ## Dashboard and alert queries checked against the exported metrics, then evaluated on a real Prometheus
	$(BIN)/pytest tests/chart/test_dashboard.py tests/e2e/test_prometheus.py -q

rules-check: prometheus ## promtool check rules on the chart's rendered PrometheusRule
	@helm=$(HELM) && tmp=$$(mktemp -d) && $$helm template agent-identity-operator $(CHART) -n agent-identity-system --set metrics.prometheusRule.enabled=true --show-only templates/prometheusrule.yaml | $(BIN)/python -c 'import sys,yaml; yaml.safe_dump(yaml.safe_load(sys.stdin)["spec"], sys.stdout)' > $$tmp/rules.yml && promtool check rules $$tmp/rules.yml; rc=$$?; rm -rf $$tmp; exit $$rc

chaos: $(STAMP) control-plane ## The full chaos scenarios (make test runs the short ones)
	CHAOS_SCALE=full $(BIN)/pytest tests/chaos -q -s

bench: $(STAMP) control-plane ## Benchmarks against the local control plane (figures, no assertions; sizes via BENCH_* env)
	$(BIN)/python scripts/bench.py
	$(BIN)/python scripts/bench_admission.py

bench-retire: $(STAMP) control-plane ## Retirement lag p50/p99 per cause: ttl (BENCH_EXPIRING), self, task_completed, revoked, delegator (BENCH_CAUSES each)
	BENCH_PARTS=expiry,causes $(BIN)/python scripts/bench.py

bench-listing: $(STAMP) control-plane ## A full listing of BENCH_LISTING_COUNT identities by page size: wall and API server CPU
	$(BIN)/python scripts/bench_listing.py

bench-audit-verify: $(STAMP) ## Audit trail: write and offline-verify speed for BENCH_AUDIT_RECORDS (1,000,000) records
	$(BIN)/python scripts/bench_audit_verify.py

bench-admission: $(STAMP) control-plane ## Admission webhook latency for the largest allowed spec (BENCH_ADMISSION_COUNT creates)
	$(BIN)/python scripts/bench_admission.py
