"""The metadata-only child watch against the real API server: what it reports, what it does not,
and how it comes back from a compaction."""

from __future__ import annotations

from typing import Any

from agent_identity.engine.childwatch import ChildWatch
from agent_identity.engine.supervisor import Supervised
from agent_identity.kube.client import Kube, load_client_configuration
from agent_identity.plan.children import SELECTOR, ChildKind
from support.cluster import Cluster, wait_for

LABELS = {"app.kubernetes.io/managed-by": "agent-identity-operator", "agentidentity.dev/identity": "w"}


def test_it_reports_changes_and_deletions_by_metadata_only_and_never_replays(cluster: Cluster, namespace: str) -> None:
    kube = Kube(load_client_configuration(str(cluster.kubeconfig)))
    cluster.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "before", "labels": LABELS}, "stringData": {"token": "s3cret"}}
    )
    seen: list[tuple[str, ChildKind, dict[str, Any]]] = []
    gaps: list[bool] = []
    watch = ChildWatch(
        kube,
        ChildKind.TOKEN_SECRET,
        namespace,
        label_selector=SELECTOR,
        on_change=lambda *e: seen.append(e),
        on_gap=lambda: gaps.append(True),
    )
    watch.begin()
    loop = Supervised(watch.name, watch.step, every=0, max_backoff=1, stale_after=watch.timeout_s + 90).start()
    try:
        cluster.core.create_namespaced_secret(namespace, {"metadata": {"name": "added", "labels": LABELS}})
        cluster.core.create_namespaced_secret(namespace, {"metadata": {"name": "not-ours"}})  # no label: never seen
        cluster.core.patch_namespaced_secret("before", namespace, {"metadata": {"annotations": {"touched": "yes"}}})
        cluster.core.delete_namespaced_secret("added", namespace)
        wait_for("two events", lambda: len(seen) >= 2 or None, timeout=10)
        assert [(kind, child, metadata["name"]) for kind, child, metadata in seen] == [
            ("MODIFIED", ChildKind.TOKEN_SECRET, "before"),
            ("DELETED", ChildKind.TOKEN_SECRET, "added"),
        ]
        assert all("data" not in metadata for _, _, metadata in seen)
        assert seen[0][2]["labels"]["agentidentity.dev/identity"] == "w"

        assert gaps == []
        if cluster.plane is not None:  # a compaction past the watch's version: it starts again from now
            cluster.plane.compact_etcd()
            cluster.plane.restart("kube-apiserver")
            cluster.core.patch_namespaced_secret("before", namespace, {"metadata": {"annotations": {"touched": "again"}}})
            wait_for("the change after the restart", lambda: len(seen) >= 3 or None, timeout=30)
            assert seen[2][0] == "MODIFIED" and seen[2][2]["annotations"]["touched"] == "again"
            assert gaps, "the gap was not reported: changes made during it would go unnoticed"
        assert loop.alive
    finally:
        loop.stop()
