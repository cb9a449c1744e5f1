"""Every manifest in examples/ does what its comments say, on a real API server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from support.cluster import Cluster
from support.operator_process import OperatorProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
IDENTITY_EXAMPLES = sorted(
    path.name
    for path in EXAMPLES.glob("*.yaml")
    if any(d and d["kind"] == "AgentIdentity" for d in yaml.safe_load_all(path.read_text()))
)


def identities_in(name: str, namespace: str) -> list[dict[str, Any]]:
    documents = [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d and d["kind"] == "AgentIdentity"]
    for document in documents:
        document["metadata"]["namespace"] = namespace
    return documents


@pytest.mark.parametrize("example", IDENTITY_EXAMPLES)
def test_example_becomes_ready_with_its_chain(cluster: Cluster, namespace: str, operator: OperatorProcess, example: str) -> None:
    documents = identities_in(example, namespace)
    for document in documents:
        cluster.create_identity(document)
    statuses = {d["metadata"]["name"]: cluster.wait_phase(namespace, d["metadata"]["name"], "Ready")["status"] for d in documents}
    for document in documents:
        delegator = document["spec"].get("delegator")
        chain = statuses[document["metadata"]["name"]]["delegationChain"]
        if delegator and delegator["kind"] == "AgentIdentity":
            parent = statuses[delegator["name"]]
            assert chain == [*parent["delegationChain"], f"agent:{namespace}/{delegator['name']}"]
            assert statuses[document["metadata"]["name"]]["expiresAt"] <= parent["expiresAt"]
        elif delegator and delegator["kind"] == "User":
            assert chain == [f"user:{delegator['name']}"]
        elif delegator:
            assert chain == [f"serviceaccount:{delegator['namespace']}/{delegator['name']}"]
        else:
            assert chain == []


def test_the_examples_cover_a_single_agent_and_a_delegation_chain() -> None:
    assert {"single-agent.yaml", "delegation-chain.yaml"} <= set(IDENTITY_EXAMPLES)


def test_the_example_profiles_are_accepted_by_the_api_server(cluster: Cluster) -> None:
    documents = [d for d in yaml.safe_load_all((EXAMPLES / "profiles.yaml").read_text()) if d]
    assert len(documents) >= 3
    try:
        for document in documents:
            created = cluster.custom.create_cluster_custom_object("agentidentity.dev", "v1alpha1", "agentprofiles", document)
            assert created["spec"]["riskLevel"] == document["spec"]["riskLevel"]
    finally:
        for document in documents:
            cluster.custom.delete_cluster_custom_object(
                "agentidentity.dev", "v1alpha1", "agentprofiles", document["metadata"]["name"]
            )
