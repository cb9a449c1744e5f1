"""The Helm chart (charts/agent-identity-operator), rendered by a real Helm and checked against the
operator's own sources of truth: ``deploy`` for the RBAC, ``admission.webhook_configurations`` for
the webhooks, ``config.parse_args`` for the flags, examples/profiles.yaml and crds/.

Helm comes from scripts/install-helm.sh, which builds a pinned Helm from the Go module proxy once
(about a minute and a half on a cold Go cache) and reuses it from then on.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import ssl
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from agent_identity.admission.configurations import CONFIGURATION_NAME, webhook_configurations
from agent_identity.admission.identity import MUTATE_PATH, VALIDATE_PATH
from agent_identity.admission.pods import POD_GUARD, POD_PATH, WORKLOAD_PATH, pod_guard_policy
from agent_identity.api.durations import MAX_TTL
from agent_identity.api.v1alpha1 import AgentProfile, PolicyRule
from agent_identity.app import operator_rbac
from agent_identity.app.config import parse_args
from agent_identity.engine import trail
from agent_identity.keys import keystore, subjects
from agent_identity.keys.certs import ensure_serving_certificate
from agent_identity.plan.children import LABEL_MANAGED_BY, MANAGED_BY, SECRET_TYPE, child_name, token_secret_name
from support.tools import helm_binary
from unit.factories import identity

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "agent-identity-operator"
RELEASE = operator_rbac.NAME
NAMESPACE = "agent-identity-system"
WATCHED = ["support", "production"]
WEBHOOK_SERVICE = f"{operator_rbac.NAME}-webhook"
WEBHOOK_HOST = f"{WEBHOOK_SERVICE}.{NAMESPACE}.svc"
HTTP_PORT = 8081  # --http-port: /metrics, /healthz, /readyz and the JWKS
DASHBOARD = CHART / "dashboards" / "agent-identity.json"

# Everything off by default switched on: namespaced mode, cert-manager, monitoring.
CUSTOM_VALUES = {
    "watchNamespaces": WATCHED,
    "defaultProfile": "read-only",
    "workers": 4,
    "retainFor": "30m",
    "podSecurity": {"default": "baseline", "checkPeriod": "5m"},
    "webhook": {"certManager": {"enabled": True}, "clientCA": {"configMap": "webhook-client-ca", "key": "apiserver-ca.pem"}},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}, "prometheusRule": {"enabled": True}},
}


# --- helpers ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm() -> str:
    """The pinned Helm binary, built by scripts/install-helm.sh on first use."""
    return helm_binary()


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([helm, *args], check=False, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def values_file(tmp_path_factory: pytest.TempPathFactory, values: dict[str, Any]) -> str:
    path = tmp_path_factory.mktemp("values") / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def render(helm: str, *args: str, chart: Path = CHART) -> list[dict[str, Any]]:
    result = run_helm(helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE, *args)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(objects: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def example_profiles() -> list[dict[str, Any]]:
    docs = yaml.safe_load_all((ROOT / "examples" / "profiles.yaml").read_text())
    return [{"name": d["metadata"]["name"], "spec": d["spec"]} for d in docs if d]


def ceilings(profiles: list[dict[str, Any]]) -> list[PolicyRule]:
    return [PolicyRule.model_validate(rule) for p in profiles for rule in p["spec"]["permissionCeiling"]]


def rbac_view(objects: Iterable[dict[str, Any]]) -> set[str]:
    """The parts of RBAC objects that grant anything, as comparable strings."""
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    return {
        json.dumps(
            {
                "kind": o["kind"],
                "name": o["metadata"]["name"],
                "namespace": o["metadata"].get("namespace"),
                "rules": o.get("rules"),
                "roleRef": o.get("roleRef"),
                "subjects": o.get("subjects"),
            },
            sort_keys=True,
        )
        for o in objects
        if o["kind"] in kinds
    }


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(objects, "Deployment", operator_rbac.NAME)["spec"]["template"]["spec"]
    (operator,) = pod["containers"]
    assert isinstance(operator, dict)
    return operator


@pytest.fixture(scope="module")
def default_objects(helm: str) -> list[dict[str, Any]]:
    return render(helm)


@pytest.fixture(scope="module")
def custom_objects(helm: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(helm, "-f", values_file(tmp_path_factory, CUSTOM_VALUES))


# --- lint, metadata, CRDs --------------------------------------------------------------------------


def test_helm_lint_passes_strict_with_default_and_custom_values(helm: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    for extra in ([], ["-f", values_file(tmp_path_factory, CUSTOM_VALUES)]):
        result = run_helm(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *extra)
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_chart_versions_and_default_image_follow_the_package(default_objects: list[dict[str, Any]]) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert project
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project.group(1) == "0.1.0"
    # Not published in any registry: the local name `make image` builds (loaded with `kind load`, or pushed).
    assert container(default_objects)["image"] == f"agent-identity-operator:{chart['appVersion']}"
    makefile = (ROOT / "Makefile").read_text()
    assert "bash scripts/build-image.sh" in makefile
    assert 'IMAGE="${IMAGE:-agent-identity-operator:$VERSION}"' in (ROOT / "scripts" / "build-image.sh").read_text()


def test_chart_crds_are_byte_for_byte_copies_of_the_generated_ones() -> None:
    generated = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert generated, "crds/ is empty"
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == generated, "run `make chart-crds`"
    for name in generated:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), f"{name} is stale: `make chart-crds`"


# --- RBAC: exactly agent_identity.app.operator_rbac ------------------------------------------------------------


def test_cluster_roles_hold_exactly_the_deploy_rules(default_objects: list[dict[str, Any]]) -> None:
    assert one(default_objects, "ClusterRole", operator_rbac.NAME)["rules"] == operator_rbac.CLUSTER_RULES
    assert one(default_objects, "ClusterRole", f"{operator_rbac.NAME}:namespace")["rules"] == operator_rbac.NAMESPACE_RULES
    expected = [rule.model_dump(by_alias=True, exclude_none=True) for rule in ceilings(example_profiles())]
    assert one(default_objects, "ClusterRole", f"{operator_rbac.NAME}:ceilings")["rules"] == expected
    assert len(by_kind(default_objects, "ClusterRole")) == 3


def test_watched_namespaces_get_the_same_rbac_as_operator_rbac(custom_objects: list[dict[str, Any]]) -> None:
    expected = operator_rbac.operator_rbac(
        operator_namespace=NAMESPACE, served_namespaces=WATCHED, ceilings=ceilings(example_profiles())
    )
    assert rbac_view(custom_objects) == rbac_view(expected)
    bindings = [b for b in by_kind(custom_objects, "RoleBinding") if b["roleRef"]["kind"] == "ClusterRole"]
    assert sorted((b["metadata"]["namespace"], b["roleRef"]["name"]) for b in bindings) == sorted(
        (ns, f"{operator_rbac.NAME}:{role}") for ns in WATCHED for role in ("namespace", "ceilings")
    )
    # Nothing namespaced is granted cluster-wide in this mode.
    assert [b["roleRef"]["name"] for b in by_kind(custom_objects, "ClusterRoleBinding")] == [operator_rbac.NAME]
    rendered = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")): o for o in custom_objects}
    for obj in expected:
        twin = rendered[(obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace"))]
        assert twin["metadata"]["labels"].items() >= obj["metadata"].get("labels", {}).items()


def test_all_namespaces_mode_binds_namespace_rules_and_ceilings_cluster_wide(default_objects: list[dict[str, Any]]) -> None:
    # operator_rbac() with no served namespace, plus the two bindings that make "all namespaces".
    expected = operator_rbac.operator_rbac(
        operator_namespace=NAMESPACE, served_namespaces=[], ceilings=ceilings(example_profiles())
    )
    subjects = [{"kind": "ServiceAccount", "name": operator_rbac.NAME, "namespace": NAMESPACE}]
    for role in ("namespace", "ceilings"):
        expected.append(
            {
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"{operator_rbac.NAME}-{role}"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": f"{operator_rbac.NAME}:{role}",
                },
                "subjects": subjects,
            }
        )
    assert rbac_view(default_objects) == rbac_view(expected)
    # The only namespaced grants are the keys Role in the operator's own namespace and Events in default.
    assert [(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in by_kind(default_objects, "RoleBinding")] == [
        (NAMESPACE, operator_rbac.KEYS_ROLE),
        ("default", operator_rbac.EVENTS_ROLE),
    ]
    assert one(default_objects, "Role", operator_rbac.KEYS_ROLE)["rules"] == operator_rbac.OWN_NAMESPACE_RULES
    assert one(default_objects, "Role", operator_rbac.EVENTS_ROLE)["rules"] == operator_rbac.CLUSTER_EVENTS_RULES
    assert not [arg for arg in container(default_objects)["args"] if arg.startswith(("--namespace", "-n"))]


def test_ceilings_are_the_concatenation_of_the_given_profiles(helm: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    narrow = {
        "riskLevel": "low",
        "maxTTL": "5m",
        "permissionCeiling": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    }
    named = {
        "riskLevel": "medium",
        "maxTTL": "10m",
        "permissionCeiling": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"], "resourceNames": ["web"]}],
    }
    extra = {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list"]}
    values = {
        "profiles": [{"name": "narrow", "spec": narrow}, {"name": "named", "spec": named}],
        "rbac": {"extraCeilingRules": [extra]},
    }
    objects = render(helm, "-f", values_file(tmp_path_factory, values))
    rules = one(objects, "ClusterRole", f"{operator_rbac.NAME}:ceilings")["rules"]
    assert rules == [*narrow["permissionCeiling"], *named["permissionCeiling"], extra]
    assert [p["metadata"]["name"] for p in by_kind(objects, "AgentProfile")] == ["narrow", "named"]

    empty = render(helm, "-f", values_file(tmp_path_factory, {"profiles": []}))
    assert one(empty, "ClusterRole", f"{operator_rbac.NAME}:ceilings")["rules"] == []
    assert by_kind(empty, "AgentProfile") == []


def test_default_profiles_are_the_examples(default_objects: list[dict[str, Any]]) -> None:
    rendered = [{"name": p["metadata"]["name"], "spec": p["spec"]} for p in by_kind(default_objects, "AgentProfile")]
    assert rendered == example_profiles()
    for profile in by_kind(default_objects, "AgentProfile"):
        AgentProfile.model_validate(profile)  # what the operator will parse
    assert all(
        p["apiVersion"] == "agentidentity.dev/v1alpha1" and "namespace" not in p["metadata"]
        for p in by_kind(default_objects, "AgentProfile")
    )


# --- Deployment --------------------------------------------------------------------------------------


def test_deployment_is_pod_security_restricted(default_objects: list[dict[str, Any]]) -> None:
    deployment = one(default_objects, "Deployment", operator_rbac.NAME)
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert pod["serviceAccountName"] == operator_rbac.NAME
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container(default_objects)["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container(default_objects)["resources"]["requests"] and container(default_objects)["resources"]["limits"]["memory"]


def test_deployment_probes_volumes_and_flags(default_objects: list[dict[str, Any]]) -> None:
    operator = container(default_objects)
    pod = one(default_objects, "Deployment", operator_rbac.NAME)["spec"]["template"]["spec"]
    config = parse_args(operator["args"])
    assert config.liveness_endpoint is None  # kopf's own endpoint: replaced by /healthz on --http-port
    assert (config.http_port, config.http_listen) == (HTTP_PORT, "0.0.0.0")
    ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    assert ports == {"webhook": 9443, "http": HTTP_PORT}
    # The operator's ops endpoint (agent_identity.ops.http): workers alive, and API server reachable.
    probes = {probe: operator[probe]["httpGet"] for probe in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert ports[probe["port"]] == config.http_port
    assert config.namespaces == ()
    assert (config.workers, config.retain_for.total_seconds(), config.default_profile) == (8, 3600, None)
    assert (config.webhook_port, config.webhook_listen, config.webhook_host) == (9443, "0.0.0.0", WEBHOOK_HOST)
    assert config.webhook_cert_dir == "/certs"
    mounts = {m["mountPath"]: m for m in operator["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert mounts["/certs"]["readOnly"] is True
    assert volumes[mounts["/certs"]["name"]]["secret"]["secretName"] == f"{operator_rbac.NAME}-webhook-tls"


# --- replicas: leader election, rolling updates, disruption budget, spread -----------------------------


def test_two_replicas_elect_a_leader_in_the_release_namespace(default_objects: list[dict[str, Any]]) -> None:
    config = parse_args(container(default_objects)["args"])
    assert one(default_objects, "Deployment", operator_rbac.NAME)["spec"]["replicas"] == 2
    assert config.leader_election is True
    assert config.leader_election_namespace == NAMESPACE
    assert config.lease_duration.total_seconds() == 8
    assert config.lease_name == "agent-identity-operator"


def test_the_operator_may_keep_its_lease_in_the_release_namespace(default_objects: list[dict[str, Any]]) -> None:
    # Leader election reads the Lease (get), takes it (create, then update): RBAC must allow all three
    # in the release namespace, where the fence allows Leases too.
    config = parse_args(container(default_objects)["args"])
    account = {"kind": "ServiceAccount", "name": operator_rbac.NAME, "namespace": NAMESPACE}
    bound = {
        b["roleRef"]["name"]
        for b in by_kind(default_objects, "RoleBinding")
        if b["metadata"]["namespace"] == NAMESPACE and account in b["subjects"] and b["roleRef"]["kind"] == "Role"
    }
    rules = [r for role in by_kind(default_objects, "Role") if role["metadata"]["name"] in bound for r in role["rules"]]
    allowed = {
        verb
        for rule in rules
        if "coordination.k8s.io" in rule["apiGroups"] and "leases" in rule["resources"]
        for verb in rule["verbs"]
        if verb == "create" or config.lease_name in rule.get("resourceNames", [config.lease_name])
    }
    assert allowed >= {"get", "create", "update"}, f"the operator's Roles in {NAMESPACE} let it {sorted(allowed)} its Lease"
    assert "'leases.coordination.k8s.io'" in fence_text(fence_policy(default_objects))


def test_updates_roll_with_a_ready_replica_at_all_times(default_objects: list[dict[str, Any]]) -> None:
    deployment = one(default_objects, "Deployment", operator_rbac.NAME)
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pod = deployment["spec"]["template"]["spec"]
    # A starting pod is probed for readiness only once its webhook server listens: Ready means serving.
    assert container(default_objects)["startupProbe"]["tcpSocket"] == {"port": "webhook"}
    # A stopping pod keeps serving the webhooks while routes drop it, then drains its connections,
    # then has 30 s to exit.
    assert container(default_objects)["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert parse_args(container(default_objects)["args"]).webhook_drain.total_seconds() == 2
    assert pod["terminationGracePeriodSeconds"] == 5 + 2 + 30


def test_a_disruption_budget_and_anti_affinity_keep_a_replica_up(default_objects: list[dict[str, Any]]) -> None:
    template = one(default_objects, "Deployment", operator_rbac.NAME)["spec"]["template"]
    labels = template["metadata"]["labels"]
    budget = one(default_objects, "PodDisruptionBudget", operator_rbac.NAME)
    assert budget["apiVersion"] == "policy/v1" and budget["metadata"]["namespace"] == NAMESPACE
    assert budget["spec"]["maxUnavailable"] == 1 and "minAvailable" not in budget["spec"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    (preferred,) = template["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["weight"] == 100
    assert preferred["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert preferred["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()


def test_replica_settings_come_from_values(helm: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    def rendered(values: dict[str, Any]) -> list[dict[str, Any]]:
        return render(helm, "-f", values_file(tmp_path_factory, values))

    objects = rendered(
        {"replicaCount": 3, "leaderElection": {"leaseDuration": "30s"}, "podDisruptionBudget": {"maxUnavailable": 2}}
    )
    assert one(objects, "Deployment")["spec"]["replicas"] == 3
    assert parse_args(container(objects)["args"]).lease_duration.total_seconds() == 30
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 2
    # Without leader election: one replica, recreated (never two operators at once).
    single = rendered({"replicaCount": 1, "leaderElection": {"enabled": False}})
    assert one(single, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert parse_args(container(single)["args"]).leader_election is False
    assert by_kind(rendered({"podDisruptionBudget": {"enabled": False}}), "PodDisruptionBudget") == []
    assert "lifecycle" not in container(rendered({"shutdownDelaySeconds": 0}))
    assert parse_args(container(rendered({"webhook": {"drainSeconds": 0}}))["args"]).webhook_drain.total_seconds() == 0
    required = one(rendered({"podAntiAffinity": "required"}), "Deployment")["spec"]["template"]["spec"]["affinity"]
    (term,) = required["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert "affinity" not in one(rendered({"podAntiAffinity": "none"}), "Deployment")["spec"]["template"]["spec"]
    # affinity is kept, and its own podAntiAffinity wins over the chart's.
    nodes = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
    merged = one(rendered({"affinity": nodes}), "Deployment")["spec"]["template"]["spec"]["affinity"]
    assert merged["nodeAffinity"] == nodes["nodeAffinity"] and "podAntiAffinity" in merged
    own = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    assert one(rendered({"affinity": own}), "Deployment")["spec"]["template"]["spec"]["affinity"] == own


def test_custom_values_reach_the_operator_flags(custom_objects: list[dict[str, Any]]) -> None:
    config = parse_args(container(custom_objects)["args"])
    assert config.namespaces == tuple(WATCHED)
    assert (config.workers, config.retain_for.total_seconds(), config.default_profile) == (4, 1800, "read-only")
    assert config.webhook_host == WEBHOOK_HOST
    assert (config.pod_security_default, config.pod_security_check_period.total_seconds()) == ("baseline", 300)
    # The webhooks answer only the API server: its client certificate's CA, mounted from the ConfigMap.
    assert config.webhook_client_ca == "/webhook-client-ca/apiserver-ca.pem"
    (mount,) = [m for m in container(custom_objects)["volumeMounts"] if m["name"] == "webhook-client-ca"]
    volumes = one(custom_objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert (
        mount["mountPath"] == "/webhook-client-ca"
        and {"name": "webhook-client-ca", "configMap": {"name": "webhook-client-ca"}} in volumes
    )


def test_by_default_the_webhooks_take_any_client(default_objects: list[dict[str, Any]]) -> None:
    assert parse_args(container(default_objects)["args"], {}).webhook_client_ca is None  # flags only, no environment


def test_signing_keys_live_in_the_release_namespace_and_the_jwks_is_served(default_objects: list[dict[str, Any]]) -> None:
    config = parse_args(container(default_objects)["args"])
    jwks = one(default_objects, "Service", f"{operator_rbac.NAME}-jwks")
    assert config.signing_namespace == NAMESPACE
    assert config.issuer == f"http://{operator_rbac.NAME}-jwks.{NAMESPACE}.svc"  # verifiers find <issuer>/.well-known/jwks.json
    assert (config.trust_domain, config.key_rotation.total_seconds()) == ("cluster.local", 86400)
    assert (config.http_port, config.http_listen) == (HTTP_PORT, "0.0.0.0")
    (port,) = jwks["spec"]["ports"]
    container_ports = {p["name"]: p["containerPort"] for p in container(default_objects)["ports"]}
    assert port["port"] == 80 and container_ports[port["targetPort"]] == config.http_port


def test_signing_can_be_turned_off_but_the_keys_role_stays_for_the_seal_keys(
    helm: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    objects = render(helm, "-f", values_file(tmp_path_factory, {"signing": {"enabled": False}}))
    config = parse_args(container(objects)["args"])
    assert config.signing_namespace is None
    assert config.http_port == HTTP_PORT  # still serves /metrics and the probes
    # The webhooks seal every creator stamp with keys kept in the operator's namespace.
    assert one(objects, "Role", operator_rbac.KEYS_ROLE)["rules"] == operator_rbac.OWN_NAMESPACE_RULES
    assert [b["roleRef"]["name"] for b in by_kind(objects, "RoleBinding") if b["roleRef"]["kind"] == "Role"] == [
        operator_rbac.KEYS_ROLE,
        operator_rbac.EVENTS_ROLE,
    ]
    assert f"{operator_rbac.NAME}-jwks" not in [s["metadata"]["name"] for s in by_kind(objects, "Service")]
    assert container(objects)["readinessProbe"]["httpGet"]["path"] == "/readyz"
    issuer = render(helm, "-f", values_file(tmp_path_factory, {"signing": {"issuer": "https://agents.example.test"}}))
    assert parse_args(container(issuer)["args"]).issuer == "https://agents.example.test"


# --- webhooks ----------------------------------------------------------------------------------------


def webhooks_by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects if o["kind"].endswith("WebhookConfiguration")}


def expected_webhooks(ca_bundle: bytes) -> dict[str, dict[str, Any]]:
    service = {"name": WEBHOOK_SERVICE, "namespace": NAMESPACE, "port": 443}
    return {c["kind"]: c for c in webhook_configurations(ca_bundle=ca_bundle, service=service, exclude_namespace=NAMESPACE)}


def test_webhooks_mirror_admission_webhook_configurations(default_objects: list[dict[str, Any]]) -> None:
    secret = one(default_objects, "Secret", f"{operator_rbac.NAME}-webhook-tls")
    ca = base64.b64decode(secret["data"]["ca.crt"])
    rendered, expected = webhooks_by_kind(default_objects), expected_webhooks(ca)
    assert set(rendered) == {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
    for kind, configuration in rendered.items():
        assert configuration["metadata"]["name"] == CONFIGURATION_NAME
        assert configuration["webhooks"] == expected[kind]["webhooks"]
    mutate, pods, workloads = rendered["MutatingWebhookConfiguration"]["webhooks"]
    (validate,) = rendered["ValidatingWebhookConfiguration"]["webhooks"]
    assert mutate["clientConfig"]["service"]["path"] == f"/{MUTATE_PATH}" == "/mutate-identity"
    assert validate["clientConfig"]["service"]["path"] == f"/{VALIDATE_PATH}" == "/validate-identity"
    assert pods["clientConfig"]["service"]["path"] == f"/{POD_PATH}" == "/mutate-pod"
    assert workloads["clientConfig"]["service"]["path"] == f"/{WORKLOAD_PATH}" == "/mutate-workload"
    for hook in (mutate, validate, pods, workloads):
        assert (hook["failurePolicy"], hook["timeoutSeconds"], hook["sideEffects"]) == ("Fail", 5, "None")
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["namespaceSelector"]["matchExpressions"] == [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NAMESPACE]}
        ]
    for hook in (mutate, validate):
        assert hook["rules"][0]["resources"] == ["agentidentities"]
        assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    # Only labelled pods and workloads reach the operator: an outage of it blocks no other pod.
    for hook in (pods, workloads):
        assert hook["objectSelector"] == {"matchExpressions": [{"key": "agentidentity.dev/identity", "operator": "Exists"}]}
    assert [(rule["resources"], rule["operations"]) for rule in pods["rules"]] == [
        (["pods"], ["CREATE"]),
        (["pods/ephemeralcontainers"], ["UPDATE"]),
    ]


def test_pod_guard_mirrors_admission_pod_guard_policy(default_objects: list[dict[str, Any]]) -> None:
    expected = {o["kind"]: o for o in pod_guard_policy()}
    for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        rendered = one(default_objects, kind, POD_GUARD)
        assert rendered["spec"] == expected[kind]["spec"]


def test_webhook_service_reaches_the_operator(default_objects: list[dict[str, Any]]) -> None:
    service = one(default_objects, "Service", WEBHOOK_SERVICE)
    pod_labels = one(default_objects, "Deployment", operator_rbac.NAME)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    container_ports = {p["name"]: p["containerPort"] for p in container(default_objects)["ports"]}
    assert port["port"] == 443 and container_ports[port["targetPort"]] == 9443
    metrics = one(default_objects, "Service", f"{operator_rbac.NAME}-metrics")
    assert metrics["spec"]["selector"].items() <= pod_labels.items()
    (metrics_port,) = metrics["spec"]["ports"]
    assert metrics_port["name"] == "metrics"
    assert container_ports[metrics_port["targetPort"]] == parse_args(container(default_objects)["args"]).http_port


def test_generated_certificate_is_what_the_operator_serves_and_the_api_server_trusts(
    default_objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    secret = one(default_objects, "Secret", f"{operator_rbac.NAME}-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    files = {key: base64.b64decode(value) for key, value in secret["data"].items()}
    assert set(files) == {"tls.crt", "tls.key", "ca.crt"}
    ca = x509.load_pem_x509_certificate(files["ca.crt"])
    cert = x509.load_pem_x509_certificate(files["tls.crt"])
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert WEBHOOK_HOST in names  # the name the API server dials (service.namespace.svc)
    assert WEBHOOK_SERVICE in names
    # The operator reuses the mounted files as they are, and they load as a TLS server identity.
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    certfile, keyfile, cafile = ensure_serving_certificate(tmp_path, server_names=[WEBHOOK_HOST])
    assert certfile.read_bytes() == files["tls.crt"] and keyfile.read_bytes() == files["tls.key"]
    assert cafile.read_bytes() == files["ca.crt"]
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    for configuration in webhooks_by_kind(default_objects).values():
        assert base64.b64decode(configuration["webhooks"][0]["clientConfig"]["caBundle"]) == files["ca.crt"]
    assert by_kind(default_objects, "Certificate") == []


def test_cert_manager_mode_injects_the_ca_from_the_serving_certificate(custom_objects: list[dict[str, Any]]) -> None:
    assert by_kind(custom_objects, "Secret") == []  # cert-manager writes it
    certificate = one(custom_objects, "Certificate", f"{operator_rbac.NAME}-webhook")
    pod = one(custom_objects, "Deployment", operator_rbac.NAME)["spec"]["template"]["spec"]
    cert_volume = next(v for v in pod["volumes"] if "secret" in v)
    assert certificate["spec"]["secretName"] == cert_volume["secret"]["secretName"]
    assert WEBHOOK_HOST in certificate["spec"]["dnsNames"]
    issuer = one(custom_objects, "Issuer", certificate["spec"]["issuerRef"]["name"])
    ca_certificate = one(custom_objects, "Certificate", f"{operator_rbac.NAME}-webhook-ca")
    assert issuer["spec"]["ca"]["secretName"] == ca_certificate["spec"]["secretName"]
    assert ca_certificate["spec"]["isCA"] is True
    assert one(custom_objects, "Issuer", ca_certificate["spec"]["issuerRef"]["name"])["spec"] == {"selfSigned": {}}
    expected = expected_webhooks(b"")
    for kind, configuration in webhooks_by_kind(custom_objects).items():
        assert (
            configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
            == f"{NAMESPACE}/{operator_rbac.NAME}-webhook"
        )
        for hook in expected[kind]["webhooks"]:
            del hook["clientConfig"]["caBundle"]  # filled in by cert-manager's CA injector
        assert configuration["webhooks"] == expected[kind]["webhooks"]


def test_cert_manager_mode_can_use_an_existing_issuer(helm: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    values = {"webhook": {"certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}}}
    objects = render(helm, "-f", values_file(tmp_path_factory, values))
    assert by_kind(objects, "Issuer") == []
    (certificate,) = by_kind(objects, "Certificate")
    assert certificate["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}


# --- monitoring --------------------------------------------------------------------------------------


def test_monitoring_is_off_by_default_but_the_dashboard_ships(default_objects: list[dict[str, Any]]) -> None:
    assert by_kind(default_objects, "ServiceMonitor") == []
    assert by_kind(default_objects, "PrometheusRule") == []
    assert [c["metadata"]["name"] for c in by_kind(default_objects, "ConfigMap")] == [f"{operator_rbac.NAME}-dashboard"]


def test_service_monitor_scrapes_the_metrics_service(custom_objects: list[dict[str, Any]]) -> None:
    monitor = one(custom_objects, "ServiceMonitor")
    metrics = one(custom_objects, "Service", f"{operator_rbac.NAME}-metrics")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()
    # ... and only it: the webhook Service lacks the component label.
    webhook = one(custom_objects, "Service", WEBHOOK_SERVICE)
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= webhook["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == metrics["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


ALERTS = {
    "AgentIdentityPastExpiryNotRetired": "agentidentity_overdue_identities",
    "AgentIdentityRetirementSlow": "agentidentity_retirement_lag_seconds_bucket",
    "AgentIdentityReconcileErrors": "agentidentity_reconcile_errors_total",
    "AgentIdentityWebhookUnavailable": "up",
    "AgentIdentityTokenIssuanceFailures": "agentidentity_token_failures_total",
    "AgentIdentityAssertionSigningFailures": "agentidentity_assertion_failures_total",
    "AgentIdentityNamespaceWithoutPodSecurity": "agentidentity_namespaces_without_pod_security",
}


def test_prometheus_rule_alerts_on_the_operator_metrics(custom_objects: list[dict[str, Any]]) -> None:
    # Which metric names exist is tests/chart/test_dashboard.py's job; tests/e2e/test_prometheus.py
    # evaluates every expression on a real Prometheus and runs promtool over the rules.
    rule = one(custom_objects, "PrometheusRule")
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert set(alerts) == set(ALERTS)
    scope = f'job="{operator_rbac.NAME}-metrics", namespace="{NAMESPACE}"'
    for name, alert in alerts.items():
        assert f"{ALERTS[name]}{{{scope}}}" in alert["expr"], f"{name} does not watch this release's {ALERTS[name]}"
        assert alert["expr"].count("(") == alert["expr"].count(")")
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
    assert re.search(r"\) > 0$", alerts["AgentIdentityPastExpiryNotRetired"]["expr"].strip())
    assert alerts["AgentIdentityPastExpiryNotRetired"]["for"] == "1m"
    assert alerts["AgentIdentityRetirementSlow"]["expr"].strip().endswith("> 30")
    webhook = alerts["AgentIdentityWebhookUnavailable"]["expr"]
    assert f"(max(up{{{scope}}}) == 0)" in webhook and f"absent(up{{{scope}}})" in webhook
    # PromQL string ".+\\.agentidentity\\.dev": the regex .+\.agentidentity\.dev (webhook names end so)
    assert (
        r'apiserver_admission_webhook_rejection_count{name=~".+\\.agentidentity\\.dev", error_type="calling_webhook_error"}'
        in webhook
    )
    names = [hook["name"] for c in expected_webhooks(b"").values() for hook in c["webhooks"]]
    assert len(names) == 4 and all(re.fullmatch(r".+\.agentidentity\.dev", name) for name in names), names


def test_prometheus_rule_threshold_is_a_value(helm: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    values = {"metrics": {"prometheusRule": {"enabled": True, "retirementLagSeconds": 7.5}}}
    rule = one(render(helm, "-f", values_file(tmp_path_factory, values)), "PrometheusRule")
    (slow,) = [r for group in rule["spec"]["groups"] for r in group["rules"] if r["alert"] == "AgentIdentityRetirementSlow"]
    assert slow["expr"].strip().endswith("> 7.5")
    assert "(threshold 7.5s)" in slow["annotations"]["description"]


def test_grafana_dashboard_ships_as_a_sidecar_configmap(default_objects: list[dict[str, Any]]) -> None:
    configmap = one(default_objects, "ConfigMap", f"{operator_rbac.NAME}-dashboard")
    assert configmap["metadata"]["namespace"] == NAMESPACE
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert list(configmap["data"]) == ["agent-identity.json"]
    assert configmap["data"]["agent-identity.json"] == DASHBOARD.read_text().rstrip("\n")
    dashboard = json.loads(configmap["data"]["agent-identity.json"])
    assert dashboard["uid"] == "agent-identity-operator" and dashboard["id"] is None
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and all('job=~"$job"' in t["expr"] for t in panel["targets"]), panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        assert panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_grafana_dashboard_placement_and_switch(helm: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    values = {
        "metrics": {
            "grafanaDashboard": {
                "namespace": "monitoring",
                "labels": {"team": "sec"},
                "annotations": {"grafana_folder": "Security"},
            }
        }
    }
    configmap = one(render(helm, "-f", values_file(tmp_path_factory, values)), "ConfigMap", f"{operator_rbac.NAME}-dashboard")
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["team"] == "sec" and configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Security"}
    for off in ({"metrics": {"grafanaDashboard": {"enabled": False}}}, {"metrics": {"enabled": False}}):
        objects = render(helm, "-f", values_file(tmp_path_factory, off))
        assert by_kind(objects, "ConfigMap") == []
    no_metrics = render(helm, "-f", values_file(tmp_path_factory, {"metrics": {"enabled": False}}))
    assert f"{operator_rbac.NAME}-metrics" not in [s["metadata"]["name"] for s in by_kind(no_metrics, "Service")]
    # /metrics and the probes stay: the Service is all metrics.enabled adds.
    assert container(no_metrics)["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_http_port_is_one_value_for_flag_container_port_and_services(helm: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    objects = render(helm, "-f", values_file(tmp_path_factory, {"httpPort": 9100}))
    assert parse_args(container(objects)["args"]).http_port == 9100
    ports = {p["name"]: p["containerPort"] for p in container(objects)["ports"]}
    assert ports["http"] == 9100
    metrics = one(objects, "Service", f"{operator_rbac.NAME}-metrics")["spec"]["ports"][0]
    jwks = one(objects, "Service", f"{operator_rbac.NAME}-jwks")["spec"]["ports"][0]
    assert (metrics["port"], metrics["targetPort"], jwks["port"], jwks["targetPort"]) == (9100, "http", 80, "http")


# --- the operator's own namespace, required profiles --------------------------------------------------


def test_the_operator_learns_its_namespace_from_the_downward_api(default_objects: list[dict[str, Any]]) -> None:
    env = {e["name"]: e for e in container(default_objects)["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # --operator-namespace defaults to POD_NAMESPACE: the seal keys live where the keys Role is.
    assert one(default_objects, "Role", operator_rbac.KEYS_ROLE)["metadata"]["namespace"] == NAMESPACE


def test_profiles_are_required_by_default(
    helm: str, tmp_path_factory: pytest.TempPathFactory, default_objects: list[dict[str, Any]]
) -> None:
    assert parse_args(container(default_objects)["args"]).require_profile is True
    optional = render(helm, "-f", values_file(tmp_path_factory, {"requireProfile": False}))
    assert parse_args(container(optional)["args"]).require_profile is False


def test_the_keys_role_names_every_secret_the_operator_keeps_at_home() -> None:
    named = {name for rule in operator_rbac.OWN_NAMESPACE_RULES for name in rule.get("resourceNames", [])}
    assert named == {
        keystore.SECRET_NAME,
        keystore.SEAL_SECRET_NAME,
        subjects.SECRET_NAME,
        keystore.CONFIGMAP_NAME,
        trail.CONFIGMAP_NAME,
    }


# --- the fence: a ValidatingAdmissionPolicy on the operator's own ServiceAccount --------------------------
# What each rule refuses and admits is proven on a real API server by tests/e2e/test_operator_fence.py;
# here: that it is rendered, bound, aimed at exactly the operator, and built from the operator's names.

FENCE = f"{operator_rbac.NAME}-fence"


def fence_policy(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "ValidatingAdmissionPolicy", FENCE)


def fence_text(policy: dict[str, Any]) -> str:
    """Every CEL expression and message of the policy, as one string."""
    spec = policy["spec"]
    parts = [c["expression"] for c in spec["matchConditions"]] + [v["expression"] for v in spec["variables"]]
    parts += [part for v in spec["validations"] for part in (v["expression"], v["messageExpression"])]
    return "\n".join(parts)


def test_the_fence_is_on_by_default_and_bound_to_deny(default_objects: list[dict[str, Any]]) -> None:
    policy = fence_policy(default_objects)
    binding = one(default_objects, "ValidatingAdmissionPolicyBinding", FENCE)
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["spec"] == {"policyName": FENCE, "validationActions": ["Deny"]}
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    # Every write to everything (subresources included): what the fence does not allow, it refuses.
    assert spec["matchConstraints"]["resourceRules"] == [
        {"apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"], "operations": ["CREATE", "UPDATE", "DELETE", "CONNECT"]}
    ]
    assert "namespaceSelector" not in spec["matchConstraints"] and "objectSelector" not in spec["matchConstraints"]
    assert all(v["reason"] == "Forbidden" and v["messageExpression"] for v in spec["validations"])


def test_the_fence_applies_to_the_operators_service_account_and_nobody_else(helm: str) -> None:
    for namespace, release, account in (
        (NAMESPACE, RELEASE, operator_rbac.NAME),
        ("ops", "aid", "aid-agent-identity-operator"),
    ):
        result = run_helm(helm, "template", release, str(CHART), "--namespace", namespace)
        objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        (policy,) = [o for o in by_kind(objects, "ValidatingAdmissionPolicy") if o["metadata"]["name"] != POD_GUARD]
        pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == account
        (condition,) = policy["spec"]["matchConditions"]
        assert condition["expression"] == f"request.userInfo.username == 'system:serviceaccount:{namespace}:{account}'"
        home = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}["home"]
        assert home == f"variables.ns == '{namespace}'"


def test_the_fence_is_built_from_the_operators_own_names(default_objects: list[dict[str, Any]]) -> None:
    text = fence_text(fence_policy(default_objects))
    prefix = child_name(identity(name="x")).removesuffix("x")
    assert prefix == "aid-" and f"startsWith('{prefix}')" in text
    assert f"'{LABEL_MANAGED_BY}'" in text and f"== '{MANAGED_BY}'" in text
    assert f"'{SECRET_TYPE}'" in text
    assert token_secret_name(identity(name="x")) == "aid-x-token" and "variables.name + '-token'" in text
    # At home, exactly what the keys Role lets it update: the fence and RBAC agree.
    assert f"['{keystore.SECRET_NAME}', '{keystore.SEAL_SECRET_NAME}', '{subjects.SECRET_NAME}']" in text
    assert f"variables.name in ['{keystore.CONFIGMAP_NAME}', '{trail.CONFIGMAP_NAME}']" in text
    assert f"<= {int(MAX_TTL.total_seconds())}" in text  # no agent token outlives the longest identity


def test_the_fence_can_be_turned_off(helm: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    objects = render(helm, "-f", values_file(tmp_path_factory, {"fence": {"enabled": False}}))
    assert [o["metadata"]["name"] for o in objects if o["kind"].startswith("ValidatingAdmissionPolicy")] == [POD_GUARD] * 2


def test_the_chart_needs_the_kubernetes_that_serves_admission_policies_v1() -> None:
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"] == ">=1.30.0-0"


# --- NetworkPolicy -------------------------------------------------------------------------------------


def network_rules(objects: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The NetworkPolicy's ingress rules by port (one port per rule)."""
    policy = one(objects, "NetworkPolicy", operator_rbac.NAME)
    rules: dict[int, dict[str, Any]] = {}
    for rule in policy["spec"]["ingress"]:
        (port,) = rule["ports"]
        assert port["protocol"] == "TCP"
        rules[port["port"]] = rule
    return rules


def test_network_policy_admits_the_api_server_and_the_scrapers_only(default_objects: list[dict[str, Any]]) -> None:
    policy = one(default_objects, "NetworkPolicy", operator_rbac.NAME)
    pod = one(default_objects, "Deployment", operator_rbac.NAME)["spec"]["template"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress: the operator calls the API server
    rules = network_rules(default_objects)
    assert set(rules) == {9443, HTTP_PORT}  # the container's two ports, nothing else
    assert {p["containerPort"] for p in container(default_objects)["ports"]} == set(rules)
    # Default: the webhook port from anywhere (see the chart README), the HTTP port from monitoring.
    assert "from" not in rules[9443]
    assert rules[HTTP_PORT]["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


def test_network_policy_sources_come_from_values(helm: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    scraper = {"namespaceSelector": {"matchLabels": {"team": "obs"}}, "podSelector": {"matchLabels": {"app": "prometheus"}}}
    values = {
        "httpPort": 9100,
        "networkPolicy": {
            "webhook": {
                "allowFromAnywhere": False,
                "cidrs": ["10.0.0.10/32", "fd00::1/128"],
                "namespaceSelectors": [{"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}],
                "podSelectors": [{"matchLabels": {"app": "konnectivity-agent"}}],
            },
            "http": {"namespaceSelectors": [], "peers": [scraper]},
        },
    }
    rules = network_rules(render(helm, "-f", values_file(tmp_path_factory, values)))
    assert rules[9443]["from"] == [
        {"ipBlock": {"cidr": "10.0.0.10/32"}},
        {"ipBlock": {"cidr": "fd00::1/128"}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}},
        {"podSelector": {"matchLabels": {"app": "konnectivity-agent"}}},
    ]
    assert rules[9100]["from"] == [scraper]  # both selectors in one peer: both must match
    anywhere = {"networkPolicy": {"http": {"allowFromAnywhere": True}}}
    assert "from" not in network_rules(render(helm, "-f", values_file(tmp_path_factory, anywhere)))[HTTP_PORT]


def test_a_port_without_sources_admits_nobody(helm: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    # An ingress rule without `from` admits everyone: a port with no source must get no rule at all.
    values = {
        "networkPolicy": {"webhook": {"allowFromAnywhere": False, "cidrs": ["10.0.0.10/32"]}, "http": {"namespaceSelectors": []}}
    }
    objects = render(helm, "-f", values_file(tmp_path_factory, values))
    assert set(network_rules(objects)) == {9443}
    assert all("from" in rule for rule in one(objects, "NetworkPolicy")["spec"]["ingress"])


def test_network_policy_can_be_turned_off(helm: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    objects = render(helm, "-f", values_file(tmp_path_factory, {"networkPolicy": {"enabled": False}}))
    assert by_kind(objects, "NetworkPolicy") == []


# --- values: documented, validated, refused ----------------------------------------------------------

KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][\w.-]*):(?P<rest>.*)$")


def documented_keys(text: str) -> dict[str, bool]:
    """Every key path of values.yaml outside lists, and whether a comment line stands right above it."""
    keys: dict[str, bool] = {}
    stack: list[tuple[int, str]] = []
    list_under: int | None = None  # indentation of the key whose value is a list being skipped
    previous = ""
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if stripped and not stripped.startswith("#") and list_under is not None and indent <= list_under:
            list_under = None
        if list_under is not None or not stripped:
            previous = previous if not stripped else line
            continue
        if stripped.startswith("- "):
            list_under = stack[-1][0] if stack else 0
            continue
        match = KEY_LINE.match(line)
        if match:
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = ".".join([*(k for _, k in stack), match["key"]])
            keys[path] = previous.strip().startswith("#")
            stack.append((indent, match["key"]))
        previous = line
    return keys


def schema_node(schema: dict[str, Any], root: dict[str, Any], path: list[str]) -> dict[str, Any] | None:
    node = schema
    for key in path:
        while "$ref" in node:
            node = root["definitions"][node["$ref"].split("/")[-1]]
        if key in node.get("properties", {}):
            node = node["properties"][key]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return node


def test_every_values_key_is_documented_and_has_a_schema_entry() -> None:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"

    def walk(node: dict[str, Any], prefix: str = "") -> Iterable[str]:
        for key, value in node.items():
            yield f"{prefix}{key}"
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")

    keys = documented_keys(text)
    assert set(keys) == set(walk(values)), "the values.yaml scanner disagrees with PyYAML"
    assert [key for key, documented in keys.items() if not documented] == []
    assert [key for key in keys if schema_node(schema, schema, key.split(".")) is None] == []
    assert set(schema["properties"]) - {"global"} == set(values), "schema keys without a default in values.yaml"
    readme = (CHART / "README.md").read_text()
    table = {key for key in keys if not isinstance(dict_get(values, key), dict) or not dict_get(values, key)}
    assert [key for key in sorted(table) if f"| `{key}` |" not in readme] == [], "values missing from the README's table"


def dict_get(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for key in path.split("."):
        node = node[key]
    return node


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"bogus": 1}, "additional properties 'bogus' not allowed"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"workers": 0}, "/workers"),
        ({"httpPort": 9443}, "/httpPort"),
        ({"metrics": {"grafanaDashboard": {"enabled": "yes"}}}, "/metrics/grafanaDashboard/enabled"),
        ({"retainFor": "one hour"}, "/retainFor"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0"),
        ({"webhook": {"certManager": {"enabled": "yes"}}}, "/webhook/certManager/enabled"),
        ({"profiles": [{"name": "p", "spec": {"riskLevel": "low", "maxTTL": "5m", "permissionCeiling": []}}]}, "/profiles/0"),
        ({"fence": {"enabled": "yes"}}, "/fence/enabled"),
        ({"replicaCount": 0}, "/replicaCount"),
        ({"leaderElection": {"leaseDuration": "15 seconds"}}, "/leaderElection/leaseDuration"),
        ({"podAntiAffinity": "sometimes"}, "/podAntiAffinity"),
        ({"shutdownDelaySeconds": -1}, "/shutdownDelaySeconds"),
        ({"webhook": {"drainSeconds": 60}}, "/webhook/drainSeconds"),
        ({"podDisruptionBudget": {"maxUnavailable": 0}}, "/podDisruptionBudget/maxUnavailable"),
        ({"requireProfile": "yes"}, "/requireProfile"),
        ({"podSecurity": {"default": "strict"}}, "/podSecurity/default"),
        ({"networkPolicy": {"webhook": {"cidrs": ["api-server"]}}}, "/networkPolicy/webhook/cidrs/0"),
        ({"networkPolicy": {"http": {"namespaceSelectors": [{"matchLabel": {}}]}}}, "/networkPolicy/http/namespaceSelectors/0"),
    ],
)
def test_schema_refuses_bad_values(
    helm: str, tmp_path_factory: pytest.TempPathFactory, values: dict[str, Any], error: str
) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), "-f", values_file(tmp_path_factory, values), check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert error in result.stderr


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"watchNamespaces": [NAMESPACE]}, "must not include the release namespace"),
        ({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}}, "need metrics.enabled=true"),
        ({"leaderElection": {"enabled": False}}, "replicaCount=2 needs leaderElection.enabled=true"),
        (
            {"networkPolicy": {"webhook": {"allowFromAnywhere": False}}},
            "networkPolicy.webhook admits nobody: the API server could not call the webhooks",
        ),
    ],
)
def test_configurations_that_cannot_work_are_refused(
    helm: str, tmp_path_factory: pytest.TempPathFactory, values: dict[str, Any], error: str
) -> None:
    result = run_helm(
        helm, "template", RELEASE, str(CHART), "-n", NAMESPACE, "-f", values_file(tmp_path_factory, values), check=False
    )
    assert result.returncode != 0
    assert error in result.stderr


def test_notes_tell_the_user_what_to_do_next(helm: str, tmp_path: Path) -> None:
    # `helm template` skips NOTES.txt and `helm install --dry-run` needs a cluster: render the same
    # text through a throwaway copy of the chart that wraps it in a ConfigMap.
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_notes_probe.tpl").write_text('{{- define "notes.probe" -}}\n' + notes + "{{- end -}}\n")
    (chart / "templates" / "notes_probe.yaml").write_text(
        'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  text: {{ include "notes.probe" . | toJson }}\n'
    )
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"watchNamespaces": WATCHED}))
    (configmap,) = render(helm, "--show-only", "templates/notes_probe.yaml", "-f", str(values), chart=chart)
    text = configmap["data"]["text"]
    assert f"rollout status deployment/{operator_rbac.NAME}" in text
    assert "kubectl get aid" in text
    assert "kubectl apply -f -" in text
    document = text.split("<<YAML\n", 1)[1].split("YAML\n", 1)[0]
    example = yaml.safe_load(re.sub(r"(?m)^ {5}", "", document))
    assert example["kind"] == "AgentIdentity"
    assert example["metadata"]["namespace"] == WATCHED[0]
    assert example["spec"]["profile"] == "read-only"
    assert "support, production" in text
