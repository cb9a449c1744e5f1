"""An orchestrator that spawns a planner agent and a narrower sub-agent, each with its own
just-in-time identity, and revokes both when done.

    KUBECONFIG=.demo/kubeconfig python examples/python_orchestrator.py support

Needs the operator running (``make demo`` starts one) and a namespace to work in.
"""

from __future__ import annotations

import sys

import yaml
from kubernetes import client, config

from agent_identity.sdk.client import AgentIdentities, user

READ_CONFIGMAPS = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]


def list_configmaps(kubeconfig_text: str, namespace: str) -> list[str]:
    """What an agent does with its credentials: use its own kubeconfig, nothing else."""
    api = config.new_client_from_config_dict(yaml.safe_load(kubeconfig_text))
    return [item.metadata.name for item in client.CoreV1Api(api).list_namespaced_config_map(namespace).items]


def main(namespace: str) -> None:
    agents = AgentIdentities(namespace=namespace)
    with agents.identity(
        task="Plan the incident review",
        ttl="5m",
        delegator=user("alice"),
        scopes=[*READ_CONFIGMAPS, {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]}],
    ) as planner:
        print(f"planner {planner.name}: chain {list(planner.delegation_chain)}, expires {planner.expires_at:%H:%M:%S}")
        with agents.delegated(planner, task="Collect the incident ConfigMaps", ttl="1m", scopes=READ_CONFIGMAPS) as crawler:
            print(f"crawler {crawler.name}: chain {list(crawler.delegation_chain)}")
            print(f"crawler sees configmaps: {list_configmaps(crawler.kubeconfig, namespace)}")
        print(f"crawler {crawler.name} revoked")
    print(f"planner {planner.name} revoked")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "default")
