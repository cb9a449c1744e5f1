"""Chaos scenarios with pass/fail criteria. `make test` runs the short version of each
(CHAOS_SCALE=short, the default); `make chaos` runs the full one (CHAOS_SCALE=full).

After every scenario the same invariants must hold: each identity is Ready or correctly retired,
exactly one of each child per live identity, no orphaned child (one whose owner is gone or is
another object of the same name), and no credential authenticating past expiresAt + 15 s.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client.rest import ApiException

from agent_identity.api.durations import InvalidTTLError, parse_ttl
from support.cluster import SELF_RETIRE_RULE, Cluster, local_plane, make_identity, wait_for
from support.operator_process import OperatorProcess

FULL = os.environ.get("CHAOS_SCALE", "short") == "full"
SCALE = {
    "burst": 500 if FULL else 60,
    "kills": 20 if FULL else 3,
    "deadlines": 100 if FULL else 30,
    "writers": 20,
    "writer_seconds": 20 if FULL else 6,
    "bad_specs": 1000 if FULL else 100,
}
CHILDREN = {"ServiceAccount", "Role", "RoleBinding", "Secret"}


def expires_at(identity: dict[str, Any]) -> float:
    return datetime.fromisoformat(identity["status"]["expiresAt"].replace("Z", "+00:00")).timestamp()


def create_many(cluster: Cluster, manifests: list[dict[str, Any]]) -> None:
    """Creates all, retrying through API server restarts; an existing object counts as created."""

    def create(manifest: dict[str, Any]) -> None:
        for _ in range(60):
            try:
                cluster.create_identity(manifest)
                return
            except ApiException as error:
                if error.status == 409:
                    return
                time.sleep(0.5)
            except Exception:  # noqa: BLE001 - connection refused while the API server restarts
                time.sleep(0.5)
        raise AssertionError(f"could not create {manifest['metadata']['name']}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, manifests))


class TokenSampler:
    """Captures tokens of short-lived identities while they are live, to check them afterwards."""

    def __init__(self, cluster: Cluster, namespace: str, prefix: str) -> None:
        self.cluster, self.namespace, self.prefix = cluster, namespace, prefix
        self.tokens: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                secrets = self.cluster.core.list_namespaced_secret(
                    self.namespace, label_selector="app.kubernetes.io/managed-by=agent-identity-operator"
                )
            except Exception:  # noqa: BLE001 - the API server may be restarting
                continue
            for secret in secrets.items:
                name = secret.metadata.labels["agentidentity.dev/identity"]
                if name.startswith(self.prefix) and secret.data and "token" in secret.data:
                    self.tokens.setdefault(f"{name}/{secret.metadata.uid}", base64.b64decode(secret.data["token"]).decode())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def assert_invariants(cluster: Cluster, namespace: str, names: list[str], *, sampler: TokenSampler | None = None) -> None:
    identities = {name: cluster.get_identity(namespace, name) for name in names}
    for name, identity in identities.items():
        assert identity is not None, f"{name} vanished"
        phase = (identity.get("status") or {}).get("phase")
        children = cluster.children(namespace, name)
        if phase == "Ready":
            assert children == {
                "ServiceAccount": [f"aid-{name}"],
                "Role": [f"aid-{name}"],
                "RoleBinding": [f"aid-{name}"],
                "Secret": [f"aid-{name}-token"],
            }, (name, children)
        elif phase == "Expired":
            assert not any(children.values()), (name, children)
        else:
            raise AssertionError(f"{name} ended {phase}")
    # no orphans: every labelled child belongs to a live identity with the uid it was made for
    uids = {name: identity["metadata"]["uid"] for name, identity in identities.items() if identity}
    for kind, objects in _labelled_children(cluster, namespace).items():
        for obj in objects:
            owner = obj.metadata.labels["agentidentity.dev/identity"]
            assert owner in uids, f"orphaned {kind} {obj.metadata.name}"
            assert obj.metadata.annotations["agentidentity.dev/identity-uid"] == uids[owner], (
                f"{kind} {obj.metadata.name} of a previous owner"
            )
    if sampler is not None:
        overdue = [n for n, i in identities.items() if i and time.time() > expires_at(i) + 15]
        for key, token in sampler.tokens.items():
            if key.split("/")[0] in overdue:
                assert not cluster.token_review(token)["authenticated"], f"{key} still authenticates past expiresAt + 15 s"


def _labelled_children(cluster: Cluster, namespace: str) -> dict[str, list[Any]]:
    selector = "app.kubernetes.io/managed-by=agent-identity-operator"
    return {
        "ServiceAccount": cluster.core.list_namespaced_service_account(namespace, label_selector=selector).items,
        "Role": cluster.rbac.list_namespaced_role(namespace, label_selector=selector).items,
        "RoleBinding": cluster.rbac.list_namespaced_role_binding(namespace, label_selector=selector).items,
        "Secret": cluster.core.list_namespaced_secret(namespace, label_selector=selector).items,
    }


def wait_settled(cluster: Cluster, namespace: str, names: list[str], *, timeout: float) -> None:
    def settled() -> bool:
        items = cluster.custom.list_namespaced_custom_object("agentidentity.dev", "v1alpha1", namespace, "agentidentities")[
            "items"
        ]
        phases = {i["metadata"]["name"]: (i.get("status") or {}).get("phase") for i in items}
        return all(phases.get(name) in {"Ready", "Expired"} for name in names)

    wait_for(f"{len(names)} identities settled", settled, timeout=timeout, interval=0.5)


def mixed_burst(namespace: str, count: int, prefix: str) -> list[dict[str, Any]]:
    """Half live for long, half for 20 s, so kills land both in provisioning and in retirement."""
    return [make_identity(f"{prefix}{i}", namespace, ttl="10m" if i % 2 else "20s") for i in range(count)]


def test_kill_9_at_random_moments_during_a_burst(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    manifests = mixed_burst(namespace, SCALE["burst"], "burst-")
    sampler = TokenSampler(cluster, namespace, "burst-")
    creator = threading.Thread(target=create_many, args=(cluster, manifests))
    creator.start()
    rng = random.Random(7)
    for _ in range(SCALE["kills"]):
        time.sleep(rng.uniform(0.3, 2.0))
        operator.kill()
        operator.start()
    creator.join()
    last_kill = time.monotonic()
    names = [m["metadata"]["name"] for m in manifests]
    wait_settled(cluster, namespace, names, timeout=120 if FULL else 60)
    settled_after = time.monotonic() - last_kill
    print(f"\nkill -9: {SCALE['kills']} kills during a burst of {len(names)}; settled {settled_after:.1f}s after the last")
    latest = max(
        expires_at(i) for n in names if (i := cluster.get_identity(namespace, n)) and (i.get("status") or {}).get("expiresAt")
    )
    time.sleep(max(0.0, min(latest, time.time() + 25) + 16 - time.time()))  # short ones pass expiresAt + 15 s
    wait_settled(cluster, namespace, names, timeout=30)
    sampler.stop()
    assert_invariants(cluster, namespace, names, sampler=sampler)
    assert sum(1 for line in operator.audit_lines() if line["action"] == "expired") >= 1


def test_api_server_restart_and_etcd_compaction_mid_burst(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    plane = local_plane(cluster, "it compacts etcd and restarts kube-apiserver")
    manifests = mixed_burst(namespace, SCALE["burst"] // 2, "restart-")
    half = len(manifests) // 2
    create_many(cluster, manifests[:half])
    plane.compact_etcd()  # watches resuming from before this revision must relist (410 Gone)
    plane.restart("kube-apiserver")
    restarted = time.monotonic()
    create_many(cluster, manifests[half:])
    names = [m["metadata"]["name"] for m in manifests]
    wait_settled(cluster, namespace, names, timeout=90)
    print(f"\napiserver restart after compaction: {len(names)} identities settled {time.monotonic() - restarted:.1f}s after it")
    assert_invariants(cluster, namespace, names)


def test_deadlines_passing_while_the_operator_is_down_are_retired_within_10s_of_its_restart(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    manifests = [make_identity(f"down-{i}", namespace, ttl="15s") for i in range(SCALE["deadlines"])]
    create_many(cluster, manifests)
    names = [m["metadata"]["name"] for m in manifests]
    for name in names:
        cluster.wait_phase(namespace, name, "Ready", timeout=60)
    operator.kill()
    latest = max(expires_at(cluster.get_identity(namespace, n)) for n in names)  # type: ignore[arg-type]
    time.sleep(max(0.0, latest - time.time()) + 2)
    restarted = time.monotonic()
    operator.start()
    wait_for("all retired", lambda: all(cluster.phase(namespace, n) == "Expired" for n in names), timeout=30, interval=0.5)
    took = time.monotonic() - restarted
    print(f"\n{len(names)} deadlines passed while down: all Expired {took:.1f}s after the restart")
    assert took <= 10, f"retiring {len(names)} overdue identities took {took:.1f}s after restart"
    assert_invariants(cluster, namespace, names)


def test_concurrent_writers_conflicting_on_the_same_identities(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    names = [f"contended-{i}" for i in range(10)]
    create_many(cluster, [make_identity(n, namespace) for n in names])
    for name in names:
        cluster.wait_phase(namespace, name, "Ready")
    stop = time.monotonic() + SCALE["writer_seconds"]

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        actions: list[Callable[[str], object]] = [
            lambda n: cluster.patch_identity(namespace, n, {"metadata": {"labels": {"touched": str(rng.random())[:8]}}}),
            lambda n: cluster.rbac.patch_namespaced_role(
                f"aid-{n}", namespace, {"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}
            ),
            lambda n: cluster.core.delete_namespaced_secret(f"aid-{n}-token", namespace),
            lambda n: cluster.rbac.delete_namespaced_role_binding(f"aid-{n}", namespace),
            lambda n: cluster.core.patch_namespaced_service_account(
                f"aid-{n}", namespace, {"automountServiceAccountToken": True}
            ),
        ]
        while time.monotonic() < stop:
            with contextlib.suppress(ApiException):  # conflicts and not-founds are the point
                rng.choice(actions)(rng.choice(names))
            time.sleep(rng.uniform(0, 0.05))

    with ThreadPoolExecutor(SCALE["writers"]) as pool:
        list(pool.map(writer, range(SCALE["writers"])))

    def converged() -> bool:
        for name in names:
            if cluster.phase(namespace, name) != "Ready":
                return False
            role = cluster.rbac.read_namespaced_role(f"aid-{name}", namespace)
            if [(r.resources, r.verbs) for r in role.rules] != [(["configmaps"], ["get", "list"]), SELF_RETIRE_RULE[1:]]:
                return False
            if cluster.children(namespace, name)["RoleBinding"] != [f"aid-{name}"]:
                return False
            try:
                token = cluster.token_secret(namespace, name).get("token")
            except ApiException:
                return False
            if not token or not cluster.token_review(token)["authenticated"]:
                return False
            if cluster.core.read_namespaced_service_account(f"aid-{name}", namespace).automount_service_account_token:
                return False
        return True

    stormed = time.monotonic()
    wait_for("every contended identity converged", converged, timeout=60, interval=1)
    print(f"\n{SCALE['writers']} conflicting writers: converged {time.monotonic() - stormed:.1f}s after they stopped")
    assert_invariants(cluster, namespace, names)
    cluster.create_identity(make_identity("after-the-storm", namespace))  # no handler is stuck
    cluster.wait_phase(namespace, "after-the-storm", "Ready", timeout=15)


# -- 1,000 (or 100) generated bad specs --------------------------------------------------------------

RULE = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}


def _invalid_ttl(text: str) -> bool:
    try:
        parse_ttl(text)
    except InvalidTTLError:
        return True
    return False


bad_mutations = st.one_of(
    st.builds(lambda t: {"ttl": t}, st.text(max_size=12).filter(_invalid_ttl)),
    st.builds(lambda n: {"ttl": f"{n}s"}, st.one_of(st.integers(0, 9), st.integers(86401, 10**6))),
    st.just({"scopes": []}),
    st.builds(lambda field: {"scopes": [{**RULE, field: []}]}, st.sampled_from(["verbs", "resources", "apiGroups"])),
    st.builds(lambda key: {"scopes": [{**RULE, key: ["x"]}]}, st.sampled_from(["nonResourceURLs", "bogus"])),
    st.builds(lambda n: {"task": "x" * n}, st.sampled_from([0, 1025, 5000])),
    st.builds(lambda kind: {"delegator": {"kind": kind, "name": "x"}}, st.sampled_from(["Group", "Node", "", "user"])),
    st.just({"delegator": {"kind": "ServiceAccount", "name": "ci"}}),
    st.just({"delegator": {"kind": "User", "name": "bob", "namespace": "default"}}),
    st.builds(
        lambda ns: {"delegator": {"kind": "AgentIdentity", "name": "p", "namespace": ns}},
        st.sampled_from(["kube-system", "other"]),
    ),
    st.builds(lambda name: {"profile": name}, st.from_regex(r"\A[a-z][a-z0-9-]{2,20}\Z")),
    st.builds(lambda n: {"token": {"audiences": [""] * n}}, st.integers(1, 3)),
    st.builds(lambda n: {"token": {"audiences": [f"a{i}" for i in range(n)]}}, st.integers(17, 40)),
)


def test_generated_bad_specs_are_refused_or_denied_and_nothing_is_provisioned(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    bad_specs_state: dict[str, Any] = {"accepted": [], "refused": 0}
    counter = iter(range(10**6))

    @settings(max_examples=SCALE["bad_specs"], deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(mutation=bad_mutations)
    def attempt(mutation: dict[str, Any]) -> None:
        name = f"bad-{next(counter)}"
        manifest = make_identity(name, namespace)
        manifest["spec"].update(mutation)
        try:
            cluster.custom.create_namespaced_custom_object(
                "agentidentity.dev", "v1alpha1", namespace, "agentidentities", manifest, field_validation="Strict"
            )
        except ApiException as error:
            assert error.status in (400, 403, 422), error.status
            message = json.loads(error.body)["message"]
            assert "spec" in message, message  # names the offending field
            bad_specs_state["refused"] += 1
            return
        bad_specs_state["accepted"].append(name)

    attempt()
    accepted: list[str] = bad_specs_state["accepted"]
    for name in accepted:
        denied = cluster.wait_phase(namespace, name, "Denied", timeout=30)
        ready = {c["type"]: c for c in denied["status"]["conditions"]}["Ready"]
        assert ready["message"], name
        assert not any(cluster.children(namespace, name).values()), name
    assert operator.process is not None and operator.process.poll() is None, "the operator crashed"
    print(f"\nbad specs: {bad_specs_state['refused']} refused by the API server, {len(accepted)} admitted and Denied")
