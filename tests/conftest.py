"""Test fixtures. Unit tests need nothing; e2e tests get a real API server.

The API server is the local control plane (built and started by ``agent_identity.localcluster``)
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

from agent_identity.localcluster import running
from support.cluster import OPERATOR_NAMESPACE, Cluster
from support.operator_process import OperatorProcess


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kubeconfig",
        default=os.environ.get("AGENT_IDENTITY_KUBECONFIG"),
        help="run e2e tests against this cluster instead of starting the local control plane",
    )


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    given = request.config.getoption("--kubeconfig")
    if given:
        cluster = Cluster(kubeconfig=Path(given))
        cluster.install_crds()
        cluster.ensure_namespace(OPERATOR_NAMESPACE)
        yield cluster
        return
    with running(log_dir=tmp_path_factory.mktemp("control-plane-logs")) as plane:
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
