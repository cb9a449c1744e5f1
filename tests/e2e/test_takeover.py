"""What a restarted operator looks at before it has listed every identity, against the real API
server: the label selector on the ServiceAccounts' deadline (``expires<now``) and the field
selector on ``status.phase`` (the CRD's selectableFields) select exactly the overdue and the
unsettled. And the label is only a hint: an identity whose label a user stripped is still retired
on time by the full listing."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from agent_identity.api.durations import parse_timestamp
from agent_identity.engine.controller import Controller
from agent_identity.engine.informer import IdentityInformer
from agent_identity.engine.workqueue import Lane
from agent_identity.kube.client import Kube, load_client_configuration
from support.cluster import Cluster, make_identity
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
    assert informer.sweep_first() == 2
    assert controller.queue._queued == {(namespace, "due"): Lane.URGENT, (namespace, "new"): Lane.ROUTINE}

    operator.start()
    for name, phase in (("due", "Expired"), ("stripped", "Expired"), ("new", "Ready"), ("lasting", "Ready")):
        cluster.wait_phase(namespace, name, phase, timeout=30)
    assert cluster.has_service_account(namespace, "aid-stripped") is None  # its token died with it
