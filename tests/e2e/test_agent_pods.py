"""Agent pods on a real API server, the webhooks and the pod guard really called: who may start a
pod as an agent (directly, and through a Deployment, whose pods the controllers create), what the
pod becomes, and that a pod never outlives its identity.

The local control plane has no kubelet, so pods stay Pending: the tokens a kubelet would project
are requested here exactly as the kubelet requests them (a TokenRequest bound to the pod), and the
kind suite (tests/kind) runs a real agent pod.

alice and mallory hold the same namespace rights: the built-in ``edit`` role (pods with patch,
Secrets, every workload and its scale, impersonation of ServiceAccounts) and identities; alice
creates the agent, mallory tries to run as it.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, utils
from kubernetes.client.rest import ApiException

from support.cluster import GROUP, PLURAL, Cluster, impersonated, impersonating, make_identity, wait_for
from support.operator_process import OperatorProcess
from support.webhooks import operator_with_webhooks, wait_listening

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LABEL = "agentidentity.dev/identity"
MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
CM_READ = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}
RIGHTS = [
    CM_READ,
    {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["create", "get", "list", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "list", "delete"]},
    {"apiGroups": [""], "resources": ["pods/ephemeralcontainers"], "verbs": ["patch", "update"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "replicasets"], "verbs": ["create", "get", "patch", "update"]},
]


@dataclass
class Pods:
    cluster: Cluster
    namespace: str
    unserved: str  # covered by the webhooks, but no operator reconciles there
    operator: OperatorProcess
    port: int

    def identity(self, user: str, name: str, *, namespace: str | None = None, **spec: Any) -> None:
        manifest = make_identity(name, namespace or self.namespace, scopes=[CM_READ], **spec)
        impersonating(self.cluster, user).create_namespaced_custom_object(
            GROUP, "v1alpha1", manifest["metadata"]["namespace"], PLURAL, manifest
        )

    def ready(self, user: str, name: str, **spec: Any) -> dict[str, Any]:
        self.identity(user, name, **spec)
        return self.cluster.wait_phase(self.namespace, name, "Ready")

    def core(self, user: str) -> client.CoreV1Api:
        return client.CoreV1Api(impersonated(self.cluster, user))

    def apps(self, user: str) -> client.AppsV1Api:
        return client.AppsV1Api(impersonated(self.cluster, user))

    def pod(self, user: str, name: str, *, labels: dict[str, str], namespace: str | None = None, **spec: Any) -> Any:
        body = {
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "agent", "image": "agent:local"}], **spec},
        }
        return self.core(user).create_namespaced_pod(namespace or self.namespace, body)

    def refusal(self, call: Callable[[], object], statuses: tuple[int, ...] = (400, 403, 422)) -> str:
        with pytest.raises(ApiException) as refused:
            call()
        assert refused.value.status in statuses, refused.value.body
        return str(json.loads(refused.value.body)["message"])

    def agent_pods(self, account: str) -> list[Any]:
        return list(
            self.cluster.core.list_namespaced_pod(self.namespace, field_selector=f"spec.serviceAccountName={account}").items
        )


def deployment(name: str, identity: str | None, *, template_identity: str | None) -> dict[str, Any]:
    template_labels = {"app": name} | ({LABEL: template_identity} if template_identity else {})
    return {
        "metadata": {"name": name, "labels": {LABEL: identity} if identity else {}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": template_labels},
                "spec": {"containers": [{"name": "agent", "image": "agent:local"}]},
            },
        },
    }


@pytest.fixture(scope="module")
def pods(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    suffix = uuid.uuid4().hex[:5]
    namespace, unserved = cluster.create_test_namespace(f"pods-{suffix}"), cluster.create_test_namespace(f"pods-idle-{suffix}")
    own = cluster.create_test_namespace(f"pods-op-{suffix}")
    for ns in (namespace, unserved):
        for user in ("alice", "mallory"):
            cluster.grant(ns, user, RIGHTS)
            cluster.bind_cluster_role(ns, user, "edit")
    args = ["--operator-namespace", own]
    with operator_with_webhooks(
        cluster, namespace, tmp_path_factory.mktemp("pods"), extra_args=args, exclude_namespace=own
    ) as process:
        port = int(process.extra_args[process.extra_args.index("--webhook-port") + 1])
        yield Pods(cluster, namespace, unserved, process, port)
    for ns in (namespace, unserved, own):
        cluster.delete_namespace(ns)


def test_the_creator_starts_a_pod_that_runs_as_the_agent_with_a_projected_token(pods: Pods) -> None:
    pods.ready("alice", "reader")
    pod = pods.pod("alice", "reader-pod", labels={LABEL: "reader"})
    spec = pod.spec
    assert (spec.service_account_name, spec.automount_service_account_token) == ("aid-reader", False)
    (volume,) = spec.volumes  # the default account's kube-api-access volume is gone
    sources = volume.projected.sources
    assert sources[0].service_account_token.path == "token" and sources[0].service_account_token.audience is None
    assert {s.config_map.name for s in sources if s.config_map} == {"kube-root-ca.crt"}
    (mount,) = spec.containers[0].volume_mounts
    assert (mount.name, mount.mount_path, mount.read_only) == (volume.name, MOUNT, True)
    # What the kubelet does for this volume: a token for the pod's account, bound to the pod.
    request = {
        "spec": {
            "audiences": [],
            "expirationSeconds": 600,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": pod.metadata.uid},
        }
    }
    token = pods.cluster.core.create_namespaced_service_account_token("aid-reader", pods.namespace, request).status.token
    agent = pods.cluster.as_token(token)
    assert pods.cluster.call_status(lambda: agent.list_namespaced_config_map(pods.namespace)) == 200  # in scope
    assert pods.cluster.call_status(lambda: agent.list_namespaced_secret(pods.namespace)) == 403  # out of scope
    pods.cluster.core.delete_namespaced_pod(pod.metadata.name, pods.namespace)
    wait_for("the pod-bound token to die with its pod", lambda: not pods.cluster.token_review(token)["authenticated"] or None)


def test_nobody_else_may_start_a_pod_as_someone_elses_agent(pods: Pods) -> None:
    """Attack: mallory may create pods in the namespace, so Kubernetes alone would let her run as
    any ServiceAccount there: by the label, or by naming the account outright."""
    pods.ready("alice", "guarded")
    message = pods.refusal(lambda: pods.pod("mallory", "stolen", labels={LABEL: "guarded"}))
    assert "agent pod refused: pod-runs-as-agent: mallory may not start pods as AgentIdentity" in message, message
    assert "alice" not in message, f"the refusal tells mallory who created the identity: {message}"
    message = pods.refusal(lambda: pods.pod("mallory", "named", labels={}, serviceAccountName="aid-guarded"))
    assert "only through its AgentIdentity: label it agentidentity.dev/identity=guarded" in message, message
    # The label naming one agent cannot smuggle in another's account either.
    pods.ready("mallory", "mine", delegator={"kind": "User", "name": "mallory"})
    pod = pods.pod("mallory", "mine-pod", labels={LABEL: "mine"}, serviceAccountName="aid-guarded")
    assert pod.spec.service_account_name == "aid-mine"
    assert pods.agent_pods("aid-guarded") == []


def test_nobody_else_reads_an_agents_token_secret_or_joins_its_pod(pods: Pods) -> None:
    """Attack: anyone who may create pods may mount any Secret of the namespace (Kubernetes'
    default), or add an ephemeral container to a running pod and read what it mounts."""
    pods.ready("alice", "keeper")
    secret = "aid-keeper-token"
    guard = "an agent's token Secret (aid-<name>-token) is read only by that agent's own pods"
    mount = {"name": "loot", "mountPath": "/loot"}
    env = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}}
    thefts: list[dict[str, Any]] = [
        {
            "volumes": [{"name": "loot", "secret": {"secretName": secret}}],
            "containers": [{"name": "a", "image": "a", "volumeMounts": [mount]}],
        },
        {
            "volumes": [{"name": "loot", "projected": {"sources": [{"secret": {"name": secret}}]}}],
            "containers": [{"name": "a", "image": "a", "volumeMounts": [mount]}],
        },
        {"containers": [{"name": "a", "image": "a", "env": [env]}]},
        {"initContainers": [{"name": "i", "image": "i", "envFrom": [{"secretRef": {"name": secret}}]}]},
    ]
    mallory = pods.core("mallory")
    for theft in thefts:
        body = {"metadata": {"name": "loot"}, "spec": {"containers": [{"name": "a", "image": "a"}]} | theft}
        message = pods.refusal(functools.partial(mallory.create_namespaced_pod, pods.namespace, body))
        assert guard in message, (theft, message)
    # Joining alice's agent pod with an ephemeral container.
    pods.pod("alice", "keeper-pod", labels={LABEL: "keeper"})
    debug = {"spec": {"ephemeralContainers": [{"name": "debug", "image": "debug:local"}]}}
    message = pods.refusal(
        lambda: pods.core("mallory").patch_namespaced_pod_ephemeralcontainers("keeper-pod", pods.namespace, debug)
    )
    assert "pod-runs-as-agent: mallory" in message, message
    stealing = {
        "spec": {
            "ephemeralContainers": [
                {
                    "name": "debug",
                    "image": "debug:local",
                    "env": [{**env, "valueFrom": {"secretKeyRef": {"name": "aid-guarded-token", "key": "token"}}}],
                }
            ]
        }
    }
    message = pods.refusal(
        lambda: pods.core("alice").patch_namespaced_pod_ephemeralcontainers("keeper-pod", pods.namespace, stealing)
    )
    assert guard in message, message
    # alice may debug her own agent: the ephemeral container gets the agent's token, nothing else.
    joined = pods.core("alice").patch_namespaced_pod_ephemeralcontainers("keeper-pod", pods.namespace, debug)
    (container,) = joined.spec.ephemeral_containers
    assert [m.mount_path for m in container.volume_mounts] == [MOUNT]


def test_a_pod_naming_an_identity_that_is_not_ready_is_refused_saying_so(pods: Pods) -> None:
    message = pods.refusal(lambda: pods.pod("alice", "ghost-pod", labels={LABEL: "ghost"}))
    assert "identity-exists:" in message and "no AgentIdentity" in message, message
    # Not Ready: its ServiceAccount's name is taken by someone else's account, so it is Failed.
    pods.cluster.core.create_namespaced_service_account(pods.namespace, {"metadata": {"name": "aid-clash"}})
    pods.identity("alice", "clash")
    pods.cluster.wait_phase(pods.namespace, "clash", "Failed")
    message = pods.refusal(lambda: pods.pod("alice", "clash-pod", labels={LABEL: "clash"}))
    assert "agent pod refused: identity-ready:" in message and "is Failed, not Ready" in message, message
    # A namespace this operator does not serve: nothing there is ever provisioned.
    pods.identity("alice", "waiting", namespace=pods.unserved)
    message = pods.refusal(lambda: pods.pod("alice", "waiting-pod", labels={LABEL: "waiting"}, namespace=pods.unserved))
    assert "namespace-served:" in message and "is not served by this operator" in message, message


def test_a_deployments_pods_are_judged_by_the_deployments_author(pods: Pods) -> None:
    pods.ready("alice", "worker")
    pods.apps("alice").create_namespaced_deployment(pods.namespace, deployment("worker", "worker", template_identity="worker"))
    (pod,) = wait_for("the controllers to create the agent pod", lambda: pods.agent_pods("aid-worker") or None)
    assert pod.metadata.labels[LABEL] == "worker" and pod.spec.automount_service_account_token is False
    mallory = pods.apps("mallory")
    # Attack: mallory writes her own Deployment for alice's agent.
    message = pods.refusal(
        lambda: mallory.create_namespaced_deployment(pods.namespace, deployment("evil", "worker", template_identity="worker"))
    )
    assert "Deployment refused: pod-runs-as-agent: mallory" in message, message
    # Attack: mallory swaps the image of alice's Deployment.
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "evil:local"}]}}}}
    message = pods.refusal(lambda: mallory.patch_namespaced_deployment("worker", pods.namespace, patch))
    assert "pod-runs-as-agent: mallory" in message, message
    # Scaling changes nothing about what runs as the agent: allowed.
    mallory.patch_namespaced_deployment("worker", pods.namespace, {"spec": {"replicas": 2}})
    wait_for("the second agent pod", lambda: len(pods.agent_pods("aid-worker")) == 2 or None)
    # Attack: a ReplicaSet that claims alice's Deployment as its controller.
    owner = pods.apps("alice").read_namespaced_deployment("worker", pods.namespace).metadata
    replica_set = deployment("forged", "worker", template_identity="worker")
    replica_set["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker", "uid": owner.uid, "controller": True}
    ]
    message = pods.refusal(lambda: mallory.create_namespaced_replica_set(pods.namespace, replica_set))
    assert "ReplicaSet refused: pod-runs-as-agent: mallory" in message, message


def test_a_workload_that_is_not_labelled_itself_gets_no_agent_pods(pods: Pods) -> None:
    """Attack: label only the pod template, so that no webhook sees the Deployment: the ReplicaSet
    the controller makes is then refused, since nobody was judged for the Deployment."""
    pods.ready("alice", "template-only")
    message = pods.refusal(
        lambda: pods.apps("alice").create_namespaced_deployment(
            pods.namespace, deployment("half", "template-only", template_identity=None)
        )
    )
    assert "template-labelled:" in message, message
    sneaky = deployment("sneaky", None, template_identity="template-only")
    pods.apps("mallory").create_namespaced_deployment(pods.namespace, sneaky)

    def failure() -> str | None:
        status = client.AppsV1Api(pods.cluster.api_client).read_namespaced_deployment("sneaky", pods.namespace).status
        return next((c.message for c in status.conditions or [] if c.reason == "ReplicaSetCreateError"), None)

    message = wait_for("the Deployment to report its refused ReplicaSet", failure)
    assert "workload-judged:" in message and "does not carry the label" in message, message
    assert pods.agent_pods("aid-template-only") == []


def test_an_agents_pods_go_when_it_expires_or_is_deleted(pods: Pods) -> None:
    pods.ready("alice", "brief", ttl="15s")
    pods.ready("alice", "deleted")
    pods.pod("alice", "brief-pod", labels={LABEL: "brief"})
    pods.pod("alice", "deleted-pod", labels={LABEL: "deleted"})
    pods.cluster.delete_identity(pods.namespace, "deleted")
    wait_for("the deleted identity's pod to go", lambda: pods.agent_pods("aid-deleted") == [] or None)
    body = pods.cluster.wait_phase(pods.namespace, "brief", "Expired", timeout=40)
    wait_for("the expired identity's pod to go", lambda: pods.agent_pods("aid-brief") == [] or None)
    message = pods.refusal(lambda: pods.pod("alice", "late-pod", labels={LABEL: "brief"}))
    assert "identity-ready:" in message and "is Expired, not Ready" in message, (message, body["status"])


def test_projected_delivery_keeps_no_token_at_rest(pods: Pods) -> None:
    body = pods.ready("alice", "projected", token={"delivery": "Projected"})
    assert "tokenSecretName" not in body["status"] and "tokenExpiresAt" not in body["status"]
    secret = lambda: pods.cluster.core.read_namespaced_secret("aid-projected-token", pods.namespace)  # noqa: E731
    assert pods.cluster.call_status(secret) == 404
    assert set(body["status"]["childUIDs"]) == {"ServiceAccount", "Role", "RoleBinding"}
    pod = pods.pod("alice", "projected-pod", labels={LABEL: "projected"})
    assert pod.spec.service_account_name == "aid-projected"


def test_an_operator_outage_blocks_only_agent_pods(pods: Pods) -> None:
    pods.operator.stop()
    try:
        pods.pod("mallory", "plain-pod", labels={"app": "plain"})  # never reaches the operator
        message = pods.refusal(lambda: pods.pod("alice", "agent-pod", labels={LABEL: "anything"}), statuses=(500,))
        assert 'failed calling webhook "mutate.pods.agentidentity.dev"' in message, message  # Fail: never unguarded
    finally:
        pods.operator.start()  # same port and certificate: the webhook configuration still holds
        wait_listening(pods.port)
    pods.ready("alice", "after-outage")
    assert pods.pod("alice", "after-pod", labels={LABEL: "after-outage"}).spec.service_account_name == "aid-after-outage"


def test_the_agent_pod_example_applies_as_documented(pods: Pods) -> None:
    documents = [d for d in yaml.safe_load_all((EXAMPLES / "agent-pod.yaml").read_text()) if d]
    identity, pod = (next(d for d in documents if d["kind"] == kind) for kind in ("AgentIdentity", "Pod"))
    for document in (identity, pod):
        document["metadata"]["namespace"] = pods.namespace
    impersonating(pods.cluster, "alice").create_namespaced_custom_object(GROUP, "v1alpha1", pods.namespace, PLURAL, identity)
    status = pods.cluster.wait_phase(pods.namespace, "reporter", "Ready")["status"]
    assert "tokenSecretName" not in status
    created = pods.core("alice").create_namespaced_pod(pods.namespace, pod)
    assert created.spec.service_account_name == "aid-reporter"
    assert [m.mount_path for m in created.spec.containers[0].volume_mounts] == [MOUNT]


# -- what a holder of `edit` tries next: a credential of the agent's kept past what it allows -------

LEGACY_TYPE = "kubernetes.io/service-account-token"
LEGACY_ACCOUNT = "kubernetes.io/service-account.name"
LEGACY_GUARD = "would hold a token that never expires"


def legacy_token_secret(name: str, account: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": {LEGACY_ACCOUNT: account}}, "type": LEGACY_TYPE}


def test_nobody_gets_a_legacy_token_secret_for_an_agent(pods: Pods) -> None:
    """Attack: the token controller fills any Secret of type service-account-token with a token
    that never expires; mallory (``edit``: create Secrets) asks for one for alice's agent, to
    mount in a pod of her own. Nobody may: not alice, not the cluster admin."""
    pods.ready("alice", "legacy")
    for who, core in (("mallory", pods.core("mallory")), ("alice", pods.core("alice")), ("admin", pods.cluster.core)):
        secret = legacy_token_secret(f"{who}-legacy", "aid-legacy")
        message = pods.refusal(functools.partial(core.create_namespaced_secret, pods.namespace, secret))
        assert LEGACY_GUARD in message and "aid-legacy" in message, (who, message)
    # The token controller runs here, as in every cluster: it fills one for an account not an agent's.
    mallory = pods.core("mallory")
    mallory.create_namespaced_service_account(pods.namespace, {"metadata": {"name": "helper"}})
    mallory.create_namespaced_secret(pods.namespace, legacy_token_secret("helper-token", "helper"))

    def filled() -> bool | None:
        data = pods.cluster.core.read_namespaced_secret("helper-token", pods.namespace).data or {}
        return "token" in data or None

    wait_for("the token controller to fill the helper's legacy Secret", filled)
    # Attack: point a Secret the controller already serves at the agent's account instead.
    repoint = {"metadata": {"annotations": {LEGACY_ACCOUNT: "aid-legacy"}}}
    message = pods.refusal(lambda: mallory.patch_namespaced_secret("helper-token", pods.namespace, repoint))
    assert LEGACY_GUARD in message, message
    secrets = pods.cluster.core.list_namespaced_secret(pods.namespace, field_selector=f"type={LEGACY_TYPE}").items
    assert [s.metadata.name for s in secrets] == ["helper-token"]


def test_a_running_agent_pod_keeps_the_images_it_was_admitted_with(pods: Pods) -> None:
    """Attack: ``kubectl set image`` on alice's running agent pod (``edit``: patch pods), so the
    kubelet restarts it with mallory's code and the agent's token still mounted; or first strip
    the label, so the pod no longer looks like an agent's."""
    pods.ready("alice", "steady")
    pods.pod("alice", "steady-pod", labels={LABEL: "steady"}, initContainers=[{"name": "init", "image": "init:local"}])
    swaps = [
        {"spec": {"containers": [{"name": "agent", "image": "evil:local"}]}},
        {"spec": {"initContainers": [{"name": "init", "image": "evil:local"}]}},
    ]
    for user in ("mallory", "alice"):  # nobody: the pod was admitted with its code, and keeps it
        for swap in swaps:
            message = pods.refusal(functools.partial(pods.core(user).patch_namespaced_pod, "steady-pod", pods.namespace, swap))
            assert "runs as agent aid-steady: its images are the ones it was admitted with" in message, (user, message)
    for labels in ({LABEL: None}, {LABEL: "other"}):
        relabel = {"metadata": {"labels": labels}}
        patch = functools.partial(pods.core("mallory").patch_namespaced_pod, "steady-pod", pods.namespace, relabel)
        message = pods.refusal(patch)
        assert "do not change or remove that label on a running agent pod" in message, message
    pod = pods.cluster.core.read_namespaced_pod("steady-pod", pods.namespace)
    assert [c.image for c in pod.spec.containers + pod.spec.init_containers] == ["agent:local", "init:local"]
    assert pod.metadata.labels[LABEL] == "steady"
    # Any other pod keeps Kubernetes' own rules.
    pods.pod("mallory", "plain-image", labels={"app": "plain"})
    pods.core("mallory").patch_namespaced_pod("plain-image", pods.namespace, swaps[0])


def test_an_agent_pod_carries_only_the_tokens_its_identity_allows(pods: Pods) -> None:
    """Attack: alice's agent is for the audience ``vault``; its creator adds a projected token of
    her own, for a cloud's token exchange and a year, which offline verifiers would accept long
    after the identity retired."""
    pods.ready("alice", "federated", token={"audiences": ["vault"]})
    cloud = {"serviceAccountToken": {"audience": "sts.amazonaws.com", "expirationSeconds": 31_536_000, "path": "token"}}
    mounted = [{"name": "agent", "image": "agent:local", "volumeMounts": [{"name": "cloud", "mountPath": "/cloud"}]}]
    extra = {"name": "cloud", "projected": {"sources": [cloud]}}
    message = pods.refusal(
        lambda: pods.pod("alice", "federated-pod", labels={LABEL: "federated"}, volumes=[extra], containers=mounted)
    )
    assert "agent pod refused: tokens-from-identity: the pod: volume 'cloud' projects a service account token" in message
    assert "its audiences (vault)" in message, message
    template = deployment("federated", "federated", template_identity="federated")
    template["spec"]["template"]["spec"] |= {"volumes": [extra], "containers": mounted}
    message = pods.refusal(lambda: pods.apps("alice").create_namespaced_deployment(pods.namespace, template))
    assert "Deployment refused: tokens-from-identity: spec.template: volume 'cloud'" in message, message
    # Hidden in the volume the operator writes: the webhook writes that volume itself.
    disguised = {**extra, "name": "agent-identity"}
    own = [{"name": "agent", "image": "agent:local", "volumeMounts": [{"name": "agent-identity", "mountPath": "/cloud"}]}]
    pod = pods.pod("alice", "disguised-pod", labels={LABEL: "federated"}, volumes=[disguised], containers=own)
    tokens = [s.service_account_token for v in pod.spec.volumes if v.projected for s in v.projected.sources]
    tokens = [t for t in tokens if t]
    assert [(t.audience, t.expiration_seconds) for t in tokens] == [("vault", 600)], tokens


# -- a workload serves the identity it was judged for, not a later one of the same name ---------------

JUDGED_FOR = "agentidentity.dev/judged-for-uid"
AGENT_CONTAINER = {"name": "agent", "image": "agent:local"}


def pod_template(identity: str, app: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"labels": {LABEL: identity, "app": app}}, "spec": {"containers": [AGENT_CONTAINER], **spec}}


def workload(kind: str, name: str, identity: str) -> dict[str, Any]:
    """A ``kind`` labelled for ``identity`` that runs nothing yet (no replicas, suspended)."""
    template = pod_template(identity, name)
    selector = {"matchLabels": {"app": name}}
    spec: dict[str, Any] = {
        "Deployment": {"replicas": 0, "selector": selector, "template": template},
        "ReplicaSet": {"replicas": 0, "selector": selector, "template": template},
        "StatefulSet": {"replicas": 0, "selector": selector, "template": template, "serviceName": name},
        "DaemonSet": {"selector": selector, "template": template},
        "ReplicationController": {"replicas": 0, "selector": {"app": name}, "template": template},
        "Job": {"suspend": True, "template": pod_template(identity, name, restartPolicy="Never")},
        "CronJob": {
            "schedule": "0 0 1 1 *",
            "suspend": True,
            "jobTemplate": {
                "metadata": {"labels": {LABEL: identity}},
                "spec": {"template": pod_template(identity, name, restartPolicy="Never")},
            },
        },
    }[kind]
    api_version = {"Job": "batch/v1", "CronJob": "batch/v1", "ReplicationController": "v1"}.get(kind, "apps/v1")
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "labels": {LABEL: identity}}, "spec": spec}


# What each controller makes from a workload, and as whom: (kind made, controller's user).
MADE_BY = {
    "Deployment": ("ReplicaSet", "deployment-controller"),
    "ReplicaSet": ("Pod", "replicaset-controller"),
    "StatefulSet": ("Pod", "statefulset-controller"),
    "DaemonSet": ("Pod", "daemon-set-controller"),
    "ReplicationController": ("Pod", "replication-controller"),
    "Job": ("Pod", "job-controller"),
    "CronJob": ("Job", "cronjob-controller"),
}


def made_from(stored: dict[str, Any], suffix: str) -> dict[str, Any]:
    """What the workload's controller creates from ``stored``, exactly as it would: its template's
    labels and annotations, owned by the workload as its controller."""
    kind, made = stored["kind"], MADE_BY[stored["kind"]][0]
    metadata = stored["metadata"]
    owner = {"apiVersion": stored["apiVersion"], "kind": kind, "name": metadata["name"], "uid": metadata["uid"]}
    template = stored["spec"]["jobTemplate"] if kind == "CronJob" else stored["spec"]["template"]
    body: dict[str, Any] = {
        "metadata": {
            "name": f"{metadata['name']}-{suffix}",
            "labels": template["metadata"]["labels"],
            "annotations": template["metadata"].get("annotations") or {},
            "ownerReferences": [{**owner, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": template["spec"],
    }
    if made == "ReplicaSet":
        body["spec"] = {"replicas": 0, "selector": stored["spec"]["selector"], "template": template}
    return body


def create_as_controller(pods: Pods, stored: dict[str, Any], suffix: str) -> None:
    made, controller = MADE_BY[stored["kind"]]
    api = impersonated(pods.cluster, f"system:serviceaccount:kube-system:{controller}", groups=("system:serviceaccounts",))
    body = made_from(stored, suffix)
    if made == "Pod":
        client.CoreV1Api(api).create_namespaced_pod(pods.namespace, body)
    elif made == "ReplicaSet":
        client.AppsV1Api(api).create_namespaced_replica_set(pods.namespace, body)
    else:
        client.BatchV1Api(api).create_namespaced_job(pods.namespace, body)


def read_workload(pods: Pods, kind: str, name: str) -> dict[str, Any]:
    api = pods.cluster.api_client
    apps, batch, core = client.AppsV1Api(api), client.BatchV1Api(api), client.CoreV1Api(api)
    read = {
        "Deployment": apps.read_namespaced_deployment,
        "ReplicaSet": apps.read_namespaced_replica_set,
        "StatefulSet": apps.read_namespaced_stateful_set,
        "DaemonSet": apps.read_namespaced_daemon_set,
        "ReplicationController": core.read_namespaced_replication_controller,
        "Job": batch.read_namespaced_job,
        "CronJob": batch.read_namespaced_cron_job,
    }[kind]
    return dict(api.sanitize_for_serialization(read(name, pods.namespace)))


def create_workload(pods: Pods, user: str, body: dict[str, Any]) -> None:
    utils.create_from_dict(impersonated(pods.cluster, user), body, namespace=pods.namespace)


def succession(pods: Pods, identity: str, kind: str) -> tuple[dict[str, Any], str]:
    """mallory's identity ``identity`` and her ``kind`` for it; then her identity is gone and
    alice's of the same name is Ready. The workload as stored, and the uid of alice's identity."""
    mallory_is = {"kind": "User", "name": "mallory"}
    first = pods.ready("mallory", identity, delegator=mallory_is)
    create_workload(pods, "mallory", workload(kind, identity, identity))
    stored = read_workload(pods, kind, identity)
    template = stored["spec"]["jobTemplate"]["spec"]["template"] if kind == "CronJob" else stored["spec"]["template"]
    assert template["metadata"]["annotations"][JUDGED_FOR] == first["metadata"]["uid"]
    create_as_controller(pods, stored, "before")  # while it is still hers: her workload serves her agent
    pods.cluster.delete_identity(pods.namespace, identity)
    wait_for("mallory's identity gone", lambda: pods.cluster.get_identity(pods.namespace, identity) is None or None)
    second = pods.ready("alice", identity)
    return stored, second["metadata"]["uid"]


def successor_refused(pods: Pods, successor: str) -> str | None:
    """The message of a controller's create refused for serving the identity of uid ``successor``."""
    events = pods.cluster.core.list_namespaced_event(pods.namespace, field_selector="reason=FailedCreate").items
    refused = (e.message or "" for e in events)
    return next((m for m in refused if "workload-judged-for-identity" in m and successor in m), None)


@pytest.mark.parametrize("kind", list(MADE_BY))
def test_a_workload_judged_for_an_identity_never_serves_its_successor(pods: Pods, kind: str) -> None:
    """Attack: mallory makes identity ``<kind>-heir`` and a workload for it, deletes her identity,
    and waits for alice to create one of the same name (fixed names outlive 24 h identities).
    Then her workload's controller makes pods (scale, a CronJob firing): they must not run as
    alice's agent."""
    name = f"{kind.lower()}-heir"
    stored, successor = succession(pods, name, kind)
    message = pods.refusal(lambda: create_as_controller(pods, stored, "after"))
    made = MADE_BY[kind][0]
    subject = "agent pod" if made == "Pod" else made
    assert f"{subject} refused: workload-judged-for-identity: {kind} {pods.namespace}/{name}" in message, message
    assert f"was admitted for an earlier AgentIdentity of that name, not for AgentIdentity {pods.namespace}/{name}" in message
    assert successor in message and "workload-judged:" not in message and "identity-ready" not in message, message
    assert [p.metadata.name for p in pods.agent_pods(f"aid-{name}") if p.metadata.name.endswith("-after")] == []


def test_scaling_a_predecessors_deployment_starts_no_pod_of_the_successor_until_re_admitted(pods: Pods) -> None:
    """The same attack through the real controllers: mallory scales her Deployment (scale is never
    re-judged); the ReplicaSet controller's pods are refused, and only a change to the template
    by someone who may run alice's agent (alice: ``kubectl rollout restart``) re-admits it."""
    successor = succession(pods, "scaled-heir", "Deployment")[1]
    pods.apps("mallory").patch_namespaced_deployment_scale("scaled-heir", pods.namespace, {"spec": {"replicas": 1}})
    message = wait_for("the ReplicaSet controller's pod to be refused", functools.partial(successor_refused, pods, successor))
    assert f"ReplicaSet {pods.namespace}/scaled-heir-" in message and successor in message, message
    assert pods.agent_pods("aid-scaled-heir") == []
    restart = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}}}}
    message = pods.refusal(lambda: pods.apps("mallory").patch_namespaced_deployment("scaled-heir", pods.namespace, restart))
    assert "pod-runs-as-agent: mallory" in message, message
    pods.apps("alice").patch_namespaced_deployment("scaled-heir", pods.namespace, restart)
    (pod,) = wait_for("alice's re-admitted Deployment to start its pod", lambda: pods.agent_pods("aid-scaled-heir") or None)
    assert pod.metadata.annotations[JUDGED_FOR] == successor


def test_unsuspending_a_predecessors_job_starts_no_pod_of_the_successor(pods: Pods) -> None:
    successor = succession(pods, "suspended-heir", "Job")[1]
    patch = {"spec": {"suspend": False}}
    client.BatchV1Api(impersonated(pods.cluster, "mallory")).patch_namespaced_job("suspended-heir", pods.namespace, patch)

    message = wait_for("the Job controller's pod to be refused", functools.partial(successor_refused, pods, successor))
    assert "Job " in message and "suspended-heir" in message, message
    assert [p.metadata.name for p in pods.agent_pods("aid-suspended-heir") if not p.metadata.name.endswith("-before")] == []
