"""An operator serving a namespace where Pod Security does not keep privileged and hostPath pods
out (so anyone who may create pods there can read agent tokens from the node) says so: a Warning
Event on the Namespace, where ``kubectl describe namespace`` finds it, with the fix, and a metric
that an alert watches. A namespace enforcing ``restricted`` gets no Event."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_identity.engine.pod_security import REASON
from agent_identity.policy.pod_security import ENFORCE_LABEL, fix
from support.cluster import Cluster, wait_for
from support.metrics import scrape, value
from support.operator_process import OperatorProcess
from support.webhooks import free_port

WITHOUT = "agentidentity_namespaces_without_pod_security"
ENFORCED = "agentidentity_namespace_pod_security_enforced"


@pytest.fixture
def restricted_namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = cluster.create_test_namespace(f"{request.node.name}-restricted")
    cluster.core.patch_namespace(name, {"metadata": {"labels": {ENFORCE_LABEL: "restricted"}}})
    yield name
    cluster.delete_namespace(name)


def namespace_events(cluster: Cluster, name: str) -> list[Any]:
    """The Events ``kubectl describe namespace <name>`` shows: in any namespace, about the Namespace
    (no involvedObject namespace, as for every cluster-scoped object)."""
    selector = f"involvedObject.kind=Namespace,involvedObject.name={name},involvedObject.namespace="
    return list(cluster.core.list_event_for_all_namespaces(field_selector=selector).items)


def test_a_served_namespace_without_pod_security_gets_a_warning_and_the_metric_counts_it(
    cluster: Cluster, namespace: str, restricted_namespace: str, tmp_path: Path
) -> None:
    port = free_port()
    args = ["--namespace", restricted_namespace, "--http-port", str(port), "--http-listen", "127.0.0.1"]
    process = OperatorProcess(
        kubeconfig=cluster.kubeconfig,
        namespace=namespace,
        log_dir=tmp_path,
        extra_args=[*args, "--pod-security-check-period", "1s"],
    )
    process.start()
    try:
        (event,) = wait_for("the Warning Event on the Namespace", lambda: namespace_events(cluster, namespace), timeout=60)
        assert (event.type, event.reason, event.metadata.namespace) == ("Warning", REASON, "default")
        assert event.involved_object.uid == cluster.core.read_namespace(namespace).metadata.uid
        assert fix(namespace) in event.message and "agent token" in event.message
        wait_for("the metrics", lambda: value(scrape(port), WITHOUT) == 1 or None)
        samples = scrape(port)
        assert value(samples, ENFORCED, namespace=namespace) == 0
        assert value(samples, ENFORCED, namespace=restricted_namespace) == 1

        cluster.core.patch_namespace(namespace, {"metadata": {"labels": {ENFORCE_LABEL: "baseline"}}})
        wait_for("the label seen", lambda: value(scrape(port), WITHOUT) == 0 or None, timeout=15)
        assert value(scrape(port), ENFORCED, namespace=namespace) == 1
        # Warned once in all those checks; the restricted namespace never.
        assert len(namespace_events(cluster, namespace)) == 1
        assert namespace_events(cluster, restricted_namespace) == []
        assert "Forbidden" not in process.output()
    finally:
        process.stop()
