"""agent-identity-operator: just-in-time Kubernetes identities for AI agents.

Layers, from the bottom up (kept apart by the import-linter contract in pyproject.toml):

- ``api``, ``durations``: the custom resource models and TTL arithmetic (pure);
- ``builders``, ``plan``, ``conditions``, ``delegation``, ``audit``: desired state, the diff
  against what exists, and the records we keep (pure, no I/O, no kopf);
- ``kube``: the one thin facade that talks to the Kubernetes API;
- ``reconciler``, ``workqueue``: one level-triggered reconcile and the queue that schedules it;
- ``main``: kopf wiring, settings and the entry point.
"""

GROUP = "agentidentity.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "AgentIdentity"
PLURAL = "agentidentities"
