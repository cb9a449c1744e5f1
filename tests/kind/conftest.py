"""tests/kind: the operator as users run it, installed by its Helm chart on a kind cluster
(``make kind-e2e``, scripts/kind-e2e.sh), with its image, its Deployment, its Service-routed webhooks
and its leader election. Nothing here starts an operator: the tests act on the installed one.

Skipped unless ``AGENT_IDENTITY_KIND_KUBECONFIG`` names the cluster's kubeconfig (``make test``
leaves the folder out unless it is set). Where the chart is and what it serves come from the
environment scripts/kind-e2e.sh sets, with the same defaults:

- ``AGENT_IDENTITY_KIND_RELEASE`` (agent-identity-operator): the Helm release, Deployment and Lease;
- ``AGENT_IDENTITY_KIND_RELEASE_NAMESPACE`` (agent-identity-system);
- ``AGENT_IDENTITY_KIND_NAMESPACE`` (kind-e2e): a namespace the operator serves;
- ``AGENT_IDENTITY_KIND_FIGURES``: a JSON file the measured figures are written to.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kind.release import Release
from support.cluster import Cluster

KUBECONFIG_ENV = "AGENT_IDENTITY_KIND_KUBECONFIG"


@pytest.fixture(scope="session")
def release() -> Release:
    kubeconfig = os.environ.get(KUBECONFIG_ENV)
    if not kubeconfig:
        pytest.skip(f"{KUBECONFIG_ENV} is not set: these tests need the chart installed on kind (make kind-e2e)")
    figures = os.environ.get("AGENT_IDENTITY_KIND_FIGURES")
    return Release(
        cluster=Cluster(kubeconfig=Path(kubeconfig)),
        name=os.environ.get("AGENT_IDENTITY_KIND_RELEASE", "agent-identity-operator"),
        namespace=os.environ.get("AGENT_IDENTITY_KIND_RELEASE_NAMESPACE", "agent-identity-system"),
        served=os.environ.get("AGENT_IDENTITY_KIND_NAMESPACE", "kind-e2e"),
        figures=Path(figures) if figures else None,
    )


@pytest.fixture
def settled(release: Release) -> list[str]:
    """Every test starts from a rolled-out Deployment with a leader: the operator pods' names."""
    return release.wait_available()
