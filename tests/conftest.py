"""Test fixtures and markers. Unit and chart tests need no server; e2e and chaos tests (marked
``e2e``) get a real API server.

The API server is the local control plane (built and started by ``agent_identity.local.controlplane``)
unless a kubeconfig is given with ``--kubeconfig`` or ``AGENT_IDENTITY_KUBECONFIG``: then the same
suite runs against that cluster (kind, for instance) and nothing is started.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agent_identity.local.controlplane import running
from support import operator_process
from support.cluster import OPERATOR_NAMESPACE, Cluster
from support.operator_process import OperatorProcess


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kubeconfig",
        default=os.environ.get("AGENT_IDENTITY_KUBECONFIG"),
        help="run e2e tests against this cluster instead of starting the local control plane",
    )


# Markers by folder, in one place, so no test module can forget its own: `pytest -m "not e2e"`
# runs only what needs no API server, `-m "not e2e and not chart"` only pure code.
FOLDER_MARKERS = {"e2e": "e2e", "chaos": "e2e", "chart": "chart", "kind": "kind"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(tests):
            marker = FOLDER_MARKERS.get(item.path.relative_to(tests).parts[0])
            if marker:
                item.add_marker(marker)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    given = request.config.getoption("--kubeconfig")
    if given:
        cluster = Cluster(kubeconfig=Path(given))
        # What that API server shows webhooks, when its AdmissionConfiguration gives it a client
        # certificate (scripts/kind-e2e.sh): every operator a test starts then answers only it.
        client_ca = os.environ.get("AGENT_IDENTITY_WEBHOOK_CLIENT_CA")
        operator_process.WEBHOOK_CLIENT_CA = Path(client_ca) if client_ca else None
        cluster.install_crds()
        cluster.ensure_namespace(OPERATOR_NAMESPACE)
        yield cluster
        return
    with running(log_dir=tmp_path_factory.mktemp("control-plane-logs"), audit=True) as plane:
        # Every operator a test starts answers only the API server's webhook client certificate.
        operator_process.WEBHOOK_CLIENT_CA = plane.webhook_client_ca
        cluster = Cluster(kubeconfig=plane.kubeconfig_path, plane=plane)
        cluster.install_crds()
        cluster.ensure_namespace(OPERATOR_NAMESPACE)
        yield cluster


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = cluster.create_test_namespace(request.node.name)
    yield name
    cluster.delete_namespace(name)


@pytest.fixture
def operator(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator as its own process (so it can be killed), serving only the test's namespace."""
    process = OperatorProcess(kubeconfig=cluster.kubeconfig, namespace=namespace, log_dir=tmp_path)
    process.start()
    yield process
    process.stop()
