"""What a restarted operator looks at before it has listed every identity, against the real API
server: the label selector on the ServiceAccounts' deadline (``expires<now+AHEAD_S``) and the
field selector on ``status.phase`` (the CRD's selectableFields) select exactly the deadlines due
soon and the unsettled. A deadline that falls while the listing is still running (the listing
slowed down by a fault point) is kept on time. And the label is only a hint: an identity whose
label a user stripped is still retired by the full listing, and one whose label a user moved
forward is read early and kept, because its status says so."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from agent_identity import GROUP, PLURAL, VERSION
from agent_identity.api.durations import parse_timestamp
from agent_identity.engine.controller import Controller
from agent_identity.engine.informer import IdentityInformer
from agent_identity.engine.workqueue import Lane
from agent_identity.kube.client import Kube, load_client_configuration
from support.cluster import Cluster, make_identity, wait_for
from support.operator_process import OperatorProcess


def test_a_restart_finds_the_overdue_and_the_unsettled_first_and_the_listing_the_rest(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    for name, ttl in (("due", "12s"), ("stripped", "12s"), ("lasting", "1h")):
        cluster.create_identity(make_identity(name, namespace, ttl=ttl))
    ready = {name: cluster.wait_phase(namespace, name, "Ready") for name in ("due", "stripped", "lasting")}
    account = cluster.core.read_namespaced_service_account("aid-due", namespace)
    expires_at = parse_timestamp(ready["due"]["status"]["expiresAt"])
    assert account.metadata.labels["agentidentity.dev/expires"] == str(int(expires_at.timestamp()))
    # A user who may edit ServiceAccounts strips the hint: the sweep no longer sees it as overdue.
    cluster.core.patch_namespaced_service_account(
        "aid-stripped", namespace, {"metadata": {"labels": {"agentidentity.dev/expires": None}}}
    )

    operator.kill()
    cluster.create_identity(make_identity("new", namespace))  # nobody watches
    deadline = max(parse_timestamp(ready[name]["status"]["expiresAt"]) for name in ("due", "stripped"))
    time.sleep(max(0.0, deadline.timestamp() - time.time()) + 1.5)

    kube = Kube(load_client_configuration(str(cluster.kubeconfig)))
    reconciler: Any = SimpleNamespace(kube=kube)  # the sweep only observes: nothing is reconciled here
    controller = Controller(lambda lookup, profiles: reconciler, workers=1)
    informer = IdentityInformer(kube, controller, namespace, label_selector=None, on_gap=lambda: None)
    assert informer.sweep_first() == 2  # "new" (not settled) and "due" (its label): not "stripped", not "lasting"
    assert controller.queue._queued == {(namespace, "new"): Lane.ROUTINE}
    assert set(controller.queue._due) == {(namespace, "due")}  # read when its time comes: now
    controller._process((namespace, "due"))
    assert controller.queue._queued[(namespace, "due")] is Lane.URGENT

    operator.start()
    for name, phase in (("due", "Expired"), ("stripped", "Expired"), ("new", "Ready"), ("lasting", "Ready")):
        cluster.wait_phase(namespace, name, phase, timeout=30)
    assert cluster.has_service_account(namespace, "aid-stripped") is None  # its token died with it


def test_a_deadline_that_falls_while_the_listing_runs_is_kept_and_a_forged_hint_changes_nothing(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    for name, ttl in (("soon", "20s"), ("forged", "1h")):
        cluster.create_identity(make_identity(name, namespace, ttl=ttl))
        cluster.wait_phase(namespace, name, "Ready")
    # A user who may edit ServiceAccounts tells the operator that "forged" is overdue.
    cluster.core.patch_namespaced_service_account(
        "aid-forged", namespace, {"metadata": {"labels": {"agentidentity.dev/expires": str(int(time.time()) - 100)}}}
    )

    operator.kill()
    before = len(operator.output())
    # The restarted operator's listing of every identity takes two minutes (as 100,000 identities
    # take a minute on a busy API server): "soon" must not wait for it.
    operator.start(failpoint="listing-page=sleep(120)")
    cluster.wait_phase(namespace, "soon", "Expired", timeout=40)
    assert cluster.has_service_account(namespace, "aid-soon") is None
    restarted = operator.output()[before:]
    assert "listed " not in restarted  # the listing has not reached any page yet
    # Both labels were selected; "forged"'s time (100 s ago) came first, so it was read before
    # "soon" was, and its status, not its label, was judged: it is not due.
    assert "2 identities not settled or due within 60s" in restarted
    assert cluster.phase(namespace, "forged") == "Ready"
    assert cluster.has_service_account(namespace, "aid-forged")

    cluster.create_identity(make_identity("new", namespace))  # the watch serves new work meanwhile
    cluster.wait_phase(namespace, "new", "Ready")


def test_a_delegator_deleted_before_the_listing_reaches_its_delegate_takes_the_delegate_with_it(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.create_identity(make_identity("lead", namespace, ttl="1h"))
    cluster.wait_phase(namespace, "lead", "Ready")
    delegated = {"kind": "AgentIdentity", "name": "lead"}
    cluster.create_identity(make_identity("helper", namespace, ttl="30m", delegator=delegated))  # within lead's hour
    cluster.wait_phase(namespace, "helper", "Ready")

    operator.kill()
    # The garbage collector would delete "helper" with "lead": whoever strips the reference that
    # lets it leaves the operator alone to revoke it.
    cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "helper", {"metadata": {"ownerReferences": None}}
    )
    before = len(operator.output())
    operator.start(failpoint="listing-page=sleep(120)")  # no listing reaches "helper" for two minutes
    wait_for("the restarted operator to watch", lambda: "found in" in operator.output()[before:])
    cluster.delete_identity(namespace, "lead")  # never seen by this process: not in its cache
    helper = cluster.wait_phase(namespace, "helper", "Revoked", timeout=20)
    assert cluster.has_service_account(namespace, "aid-helper") is None
    assert "listed " not in operator.output()[before:]  # found by its delegator's name, not by the listing
    assert "lead was deleted" in str(helper["status"]["conditions"])


def test_a_child_tampered_with_before_the_listing_reaches_its_identity_is_repaired_at_once(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    for name in ("widened", "unbound"):
        cluster.create_identity(make_identity(name, namespace, ttl="1h"))
        cluster.wait_phase(namespace, name, "Ready")

    operator.kill()
    before = len(operator.output())
    operator.start(failpoint="listing-page=sleep(120)")  # no listing reaches either for two minutes
    wait_for("the restarted operator to watch", lambda: "found in" in operator.output()[before:])
    # A user who may edit RBAC in the namespace widens one agent's Role and unbinds another's,
    # hoping the operator, busy taking over, does not look at identities it has not cached yet.
    cluster.rbac.patch_namespaced_role(
        "aid-widened", namespace, {"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}
    )
    cluster.rbac.delete_namespaced_role_binding("aid-unbound", namespace)

    wait_for(
        "the widened Role narrowed again",
        lambda: (
            [r.verbs for r in cluster.rbac.read_namespaced_role("aid-widened", namespace).rules] == [["get", "list"], ["patch"]]
        ),
        timeout=10,
    )
    wait_for(
        "the RoleBinding recreated", lambda: cluster.children(namespace, "unbound")["RoleBinding"] == ["aid-unbound"], timeout=10
    )
    assert "listed " not in operator.output()[before:]  # repaired from the child's event, not by the listing
    assert cluster.phase(namespace, "widened") == cluster.phase(namespace, "unbound") == "Ready"
