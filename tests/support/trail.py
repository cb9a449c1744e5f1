"""The audit trail in the tests: the operator's flags for it, its records read back from the
file sink, the head it stores, and ``kubectl agent audit verify`` run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from support.cluster import OPERATOR_NAMESPACE, Cluster
from support.operator_process import REPO


def trail_args(namespace: str, audit_file: Path) -> list[str]:
    return [
        *("--signing-namespace", namespace, "--audit-shard", namespace),
        *("--audit-file", str(audit_file), "--audit-checkpoint-interval", "1s"),
    ]


def records(*files: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for file in files for line in file.read_text().splitlines() if line.startswith('{"audit"')]


def stored_head(cluster: Cluster, shard: str) -> dict[str, Any]:
    configmap = cluster.core.read_namespaced_config_map("agent-identity-audit", OPERATOR_NAMESPACE)
    return dict(json.loads(configmap.data[shard]))


def evidence(cluster: Cluster, namespace: str, tmp_path: Path) -> tuple[Path, Path]:
    """The JWKS the operator published, and the ConfigMap holding the latest checkpoint, as files."""
    jwks = tmp_path / "jwks.json"
    jwks.write_text(cluster.core.read_namespaced_config_map("agent-identity-jwks", namespace).data["jwks.json"])
    stored = tmp_path / "stored.json"
    stored.write_text(json.dumps({"checkpoint": stored_head(cluster, namespace)["checkpoint"]}))
    return jwks, stored


def audit_verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: PLW1510 - the tests read returncode themselves
        [sys.executable, "-m", "agent_identity.sdk.cli", "audit", "verify", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO / "operator")},
    )


def kubectl_agent(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """``kubectl agent ARGS`` with the admin's kubeconfig."""
    return subprocess.run(  # noqa: PLW1510 - the tests read returncode themselves
        [sys.executable, "-m", "agent_identity.sdk.cli", "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO / "operator")},
    )
