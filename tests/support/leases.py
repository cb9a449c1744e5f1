"""Leader-election helpers for the tests: who holds the Lease, which replica that is, and who
wrote what according to the API server's own audit log."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client

from support.operator_process import OperatorProcess

LEASE_NAME = "agent-identity-operator"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def start_replicas(kubeconfig: Path, namespace: str, log_dir: Path, *, lease_s: int) -> list[OperatorProcess]:
    """Two replicas with leader election on a short lease, started."""
    args = ["--leader-election", "--leader-election-namespace", namespace, "--lease-duration", f"{lease_s}s"]
    replicas = [
        OperatorProcess(kubeconfig=kubeconfig, namespace=namespace, log_dir=log_dir / name, extra_args=args)
        for name in ("a", "b")
    ]
    for replica in replicas:
        replica.log_dir.mkdir()
        replica.start()
    return replicas


def lease(api_client: client.ApiClient, namespace: str) -> Any:
    """The Lease's spec, or None."""
    try:
        return client.CoordinationV1Api(api_client).read_namespaced_lease(LEASE_NAME, namespace).spec
    except client.ApiException:
        return None


def holder(api_client: client.ApiClient, namespace: str) -> str | None:
    spec = lease(api_client, namespace)
    return spec.holder_identity if spec else None


def holding(identity: str, replicas: Iterable[OperatorProcess]) -> OperatorProcess:
    """The replica whose identity (hostname-pid-random) is ``identity``."""
    return next(r for r in replicas if r.process and f"-{r.process.pid}-" in identity)


@dataclass(frozen=True)
class Write:
    user: str
    verb: str
    what: str
    code: int
    received: datetime


def audited_writes(audit_log: Path) -> list[Write]:
    """Every write request the API server answered, from its audit log (and rotated ones)."""
    writes = []
    for path in sorted(audit_log.parent.glob("audit*.log")):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event.get("verb") in WRITE_VERBS:
                ref = event.get("objectRef") or {}
                writes.append(
                    Write(
                        user=event["user"]["username"],
                        verb=event["verb"],
                        what=f"{ref.get('resource')}/{ref.get('name', '')}",
                        code=int((event.get("responseStatus") or {}).get("code", 0)),
                        received=datetime.fromisoformat(event["requestReceivedTimestamp"]),
                    )
                )
    return writes
