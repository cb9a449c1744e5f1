"""agent-identity-operator: just-in-time Kubernetes identities for AI agents.

Subpackages by role, top to bottom; each imports only those below it (the import-linter contracts
in pyproject.toml check every module, new ones included):

- ``local``: a real control plane on loopback, for the tests and ``make demo``;
- ``app``: configuration, start-up, and the kopf handlers (the only kopf importer);
- ``admission`` | ``engine`` | ``sdk``: the webhooks' decisions | the watches, work queue,
  reconciler, leader election and supervised loops | the Python API and ``kubectl agent``;
- ``keys`` | ``ops``: assertions, creator seals and their rotating key rings | the HTTP endpoints,
  Prometheus metrics and audit lines;
- ``kube``: the one request layer to the API server;
- ``policy``: who may ask for what, and the facts that decides it (pure; questions for the API
  server go through a port);
- ``plan``: the desired children and every decision, as values (pure);
- ``api``: the custom resources, their conditions and durations (pure).
"""

GROUP = "agentidentity.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "AgentIdentity"
PLURAL = "agentidentities"
