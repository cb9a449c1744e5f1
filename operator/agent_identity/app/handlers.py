"""The kopf handlers: the only module that imports kopf. Each is a line or two that hands the
event to the running operator (``startup``); the logic lives below.

kopf serves the webhooks and watches AgentProfiles; AgentIdentities and their children have the
operator's own watches (engine.informer, engine.childwatch), which start before any listing;
the controller's single work queue gives deduplicated, deadline-driven reconciles with no
per-object timers and no state kept in annotations, so an identity costs only the writes it needs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import kopf

from agent_identity import GROUP, PLURAL, VERSION
from agent_identity.admission import identity as admission
from agent_identity.admission import pods
from agent_identity.app import startup
from agent_identity.app.config import OperatorConfig
from agent_identity.app.webhook_server import DrainingWebhookServer
from agent_identity.engine.controller import utc_now
from agent_identity.keys.certs import ensure_serving_certificate
from agent_identity.plan.pods import WORKLOAD_PLURALS


class _NoDiffBase(kopf.DiffBaseStorage):
    """The operator registers only on.event handlers, so kopf's change detection (a deep copy of
    every object on every event, managedFields included) would be computed and never read."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def _operator(memo: kopf.Memo) -> startup.Operator:
    operator: startup.Operator = memo["operator"]
    return operator


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: OperatorConfig = memo["config"]
    settings.posting.enabled = False  # our Events are written by the reconciler, one per step
    settings.peering.standalone = True
    # No cluster-wide namespace/CRD scanning: exact namespaces and the CRDs present at start-up
    # are all we serve, and the operator needs no list/watch on namespaces or CRDs (least privilege).
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.persistence.diffbase_storage = _NoDiffBase()
    if config.webhooks:
        certfile, pkeyfile, cafile = ensure_serving_certificate(
            Path(config.webhook_cert_dir or tempfile.mkdtemp(prefix="aio-webhook-")),
            server_names=[config.webhook_host, "localhost"],
        )
        settings.admission.server = DrainingWebhookServer(
            drain=config.webhook_drain,
            client_ca=config.webhook_client_ca,
            addr=config.webhook_listen or config.webhook_host,
            port=config.webhook_port,
            host=config.webhook_host,
            certfile=str(certfile),
            pkeyfile=str(pkeyfile),
            cafile=str(cafile),
        )
    try:
        memo["operator"] = startup.start(config)
    except startup.CRDsMissing as missing:
        raise kopf.PermanentError(str(missing)) from None


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    if "operator" in memo:
        _operator(memo).stop()


@kopf.on.event(GROUP, VERSION, "agentprofiles")
async def profile_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _operator(memo).controller.observe_profile(event["type"], dict(event["object"]))


def mutate_identity(*, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:
    result = _admit(memo, "mutate", admission.stamp, kwargs)
    patch.metadata.annotations.update(result.annotations)
    patch.metadata.labels.update(result.labels)
    for field, value in result.spec.items():
        patch.spec[field] = value


def validate_identity(*, memo: kopf.Memo, **kwargs: Any) -> None:
    _admit(memo, "validate", admission.review, kwargs)


def mutate_pod(*, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:
    spec = _admit(memo, "mutate-pod", pods.admit_pod, {"body": body, **kwargs})
    for field, value in (spec or {}).items():
        if body.spec.get(field) != value:
            patch.spec[field] = value


def mutate_workload(*, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:
    judged = _admit(memo, "mutate-workload", pods.admit_workload, kwargs)
    patch.update(judged or {})


T = TypeVar("T")


def _admit(memo: kopf.Memo, webhook: str, decide: Callable[[admission.Admission, admission.Request], T], kwargs: Any) -> T:
    """One place for every webhook's outcome: a refusal becomes a 403 naming every rule."""
    operator = _operator(memo)
    assert operator.admission is not None, "webhooks are registered only when the operator serves them"
    request = admission.Request(
        operation=str(kwargs.get("operation")),
        body=kwargs["body"],
        old=kwargs.get("old"),
        userinfo=kwargs.get("userinfo") or {},
        now=utc_now(),
    )
    requests = operator.metrics.webhook_requests
    try:
        result = decide(operator.admission, request)
    except admission.Refused as refused:
        requests.labels(webhook, "denied").inc()
        raise kopf.AdmissionError(str(refused), code=403) from None
    requests.labels(webhook, "mutated" if webhook.startswith("mutate") else "allowed").inc()
    return result


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    config: OperatorConfig = memo["config"]
    if config.kubeconfig:
        os.environ["KUBECONFIG"] = config.kubeconfig
    return kopf.login_with_kubeconfig(**kwargs) if os.environ.get("KUBECONFIG") else kopf.login_via_client(**kwargs)


def register_webhooks() -> None:
    """Admission handlers exist only when the operator serves webhooks: kopf refuses to start
    with handlers and no server."""
    kopf.on.mutate(GROUP, VERSION, PLURAL, id=admission.MUTATE_PATH, operations=["CREATE", "UPDATE"])(mutate_identity)
    kopf.on.validate(GROUP, VERSION, PLURAL, id=admission.VALIDATE_PATH, operations=["CREATE", "UPDATE"])(validate_identity)
    kopf.on.mutate("", "v1", "pods", id=pods.POD_PATH, operations=["CREATE", "UPDATE"], subresource="*")(mutate_pod)
    for (api_version, _), plural in WORKLOAD_PLURALS.items():
        group, _, version = api_version.rpartition("/")
        kopf.on.mutate(group, version, plural, id=pods.WORKLOAD_PATH, operations=["CREATE", "UPDATE"])(mutate_workload)


def run(config: OperatorConfig) -> None:
    if config.webhooks:
        register_webhooks()
    kopf.run(
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        standalone=True,
        liveness_endpoint=config.liveness_endpoint,
        memo=kopf.Memo(config=config),
    )
