"""Wiring: kopf watches, settings and the entry point. The only module that imports kopf.

Every handler here is one line that hands the event to the controller; the logic lives below.
kopf gives us robust list-and-watch streams for AgentIdentities and AgentProfiles (reconnects,
relists) and serves the webhooks; the children have their own thin watches (childwatch.py); the
controller's single work queue gives deduplicated, deadline-driven reconciles with no per-object
timers and no state kept in annotations, so an identity costs only the writes it needs.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import kopf

from . import GROUP, PLURAL, VERSION, admission, audit, ops
from .builders import SELECTOR
from .certs import ensure_serving_certificate
from .childwatch import ChildWatch
from .config import OperatorConfig, parse_args
from .controller import Controller, utc_now
from .facts import PolicySettings
from .keystore import KeyStore, SealKeys, Signer, StoredKeyRing, discovery_document
from .kube import ChildKind, Kube, load_client_configuration
from .leader import LeaderElector
from .metrics import Metrics
from .ops import Readiness
from .reconciler import Reconciler, Settings
from .supervisor import Supervised, dead

log = logging.getLogger("agent_identity")


class _NoDiffBase(kopf.DiffBaseStorage):
    """The operator registers only on.event handlers, so kopf's change detection (a deep copy of
    every object on every event, managedFields included) would be computed and never read."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


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
    if config.shard_selector:
        settings.watching.label_selectors[PLURAL] = config.shard_selector
    if config.webhooks:
        certfile, pkeyfile, cafile = ensure_serving_certificate(
            Path(config.webhook_cert_dir or tempfile.mkdtemp(prefix="aio-webhook-")),
            server_names=[config.webhook_host, "localhost"],
        )
        settings.admission.server = kopf.WebhookServer(
            addr=config.webhook_listen or config.webhook_host,
            port=config.webhook_port,
            host=config.webhook_host,
            certfile=str(certfile),
            pkeyfile=str(pkeyfile),
            cafile=str(cafile),
        )
    kube = Kube(load_client_configuration(config.kubeconfig), pool_size=config.workers + 4)
    _wait_for_crds(kube)
    signer = _start_signing(config, kube, memo) if config.signing_namespace else None
    sealer = _start_sealing(config, kube, memo) if config.webhooks else None
    policy = PolicySettings(
        require_creator=config.webhooks,
        require_profile=config.require_profile,
        default_profile=config.default_profile,
        operator_namespace=config.operator_namespace,
    )
    reconciler_settings = Settings(retain_for=config.retain_for, cluster_server=config.cluster_server, policy=policy)
    metrics = Metrics()
    controller = Controller(
        lambda lookup_identity, lookup_profile: Reconciler(
            kube,
            settings=reconciler_settings,
            clock=utc_now,
            lookup_identity=lookup_identity,
            lookup_profile=lookup_profile,
            signer=signer,
            sealer=sealer,
        ),
        workers=config.workers,
        metrics=metrics,
    )
    metrics.first_seen = controller.first_seen
    if sealer is not None:
        memo["admission"] = admission.Admission(
            kube=kube, lookup=controller.lookup, profile_lookup=controller.lookup_profile, sealer=sealer, settings=policy
        )
    metrics.watch(controller.bodies, queue_depth=lambda: len(controller.queue))
    audit.subscribe(metrics.on_audit)
    if config.leader_election:
        controller.queue.pause()  # a standby until it holds the lease: watching, caching, not acting
        memo["elector"] = elector = LeaderElector(
            kube,
            namespace=config.leader_election_namespace,
            name=config.lease_name,
            identity=f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}",
            wall_clock=utc_now,
            lease_duration=config.lease_duration,
            on_started_leading=controller.queue.resume,
            on_stopped_leading=controller.queue.pause,  # and then the process exits (leader.py)
        )
        controller.queue.may_process = elector.holds  # no key taken past the renew deadline
        kube.may_write = elector.holds  # and no write sent: a reconcile caught mid-way by a freeze stops there
        elector.start()
    controller.start()
    resync = _supervise(
        memo,
        Supervised(
            "resync",
            lambda: _resync(kube, controller, config),
            every=config.resync_period.total_seconds(),
            first_after=config.resync_period.total_seconds(),
            stale_after=config.resync_period.total_seconds() + 600,
        ),
    )
    # Children are watched by thin metadata-only watches, not kopf (see childwatch.py); a gap in
    # any of them (compaction, API server restart) resyncs at once.
    for kind in ChildKind:
        for namespace in config.namespaces or (None,):
            watch = ChildWatch(
                kube, kind, namespace, label_selector=SELECTOR, on_change=controller.child_changed, on_gap=resync.wake
            )
            watch.begin()
            _supervise(memo, Supervised(watch.name, watch.step, every=0, max_backoff=5, stale_after=watch.timeout_s + 90))
    # Seed the cache with one list per namespace now, rather than waiting for kopf to dispatch the
    # initial listing object by object: after downtime, overdue identities are retired first.
    for namespace in config.namespaces or (None,):
        for body in kube.list_identities(namespace, label_selector=config.shard_selector):
            controller.observe(None, body)
    if config.http_port:
        memo["http"] = _serve_http(config, kube, controller, metrics, memo)
    memo["controller"] = controller
    log.info("agent-identity-operator started: %d workers, retention %s", config.workers, config.retain_for)


def _wait_for_crds(kube: Kube, timeout: float = 120.0) -> None:
    """kopf resolves the resources it serves once, at start-up (no CRD scanning, for least
    privilege): starting while the API server (re)starts could resolve nothing and serve nothing
    for good. So wait until discovery lists our resources, or fail loudly (and get restarted)."""
    wanted = {PLURAL, "agentprofiles"}
    deadline = time.monotonic() + timeout
    while not wanted <= kube.served_resources():
        if time.monotonic() > deadline:
            raise kopf.PermanentError(f"the API server does not serve {sorted(wanted)} in {GROUP}/{VERSION}: install the CRDs")
        time.sleep(1)


def _supervise(memo: kopf.Memo, loop: Supervised) -> Supervised:
    memo.setdefault("loops", []).append(loop)
    return loop.start()


def _resync(kube: Kube, controller: Controller, config: OperatorConfig) -> None:
    """A fresh listing of every served identity: each verified again, deletions nobody saw revoked."""
    for namespace in config.namespaces or (None,):
        listed, version = kube.list_identity_collection(namespace, label_selector=config.shard_selector)
        vanished = controller.resync(listed, version=version)
        log.info("resync of %s: %d identities, %d deleted unseen", namespace or "all namespaces", len(listed), vanished)


def _serve_http(
    config: OperatorConfig, kube: Kube, controller: Controller, metrics: Metrics, memo: kopf.Memo
) -> ThreadingHTTPServer:
    namespace = config.namespaces[0] if config.namespaces else None
    readiness = Readiness(
        lambda: kube.list_identities(namespace, limit=1),
        alive=lambda: ([] if controller.queue.alive else ["reconcile workers"]) + dead(memo.get("loops", [])),
    )
    _supervise(
        memo,
        Supervised("readiness-probe", readiness.probe, every=ops.PROBE_EVERY_S, max_backoff=ops.PROBE_EVERY_S, stale_after=60),
    )
    routes: dict[str, ops.Route] = {
        "/metrics": ops.metrics_route(metrics.registry),
        "/healthz": readiness.healthz,
        "/readyz": readiness.readyz,
    }
    store: KeyStore | None = memo.get("keystore")
    if store is not None:
        routes["/.well-known/jwks.json"] = ops.json_route(store.jwks)
        routes["/.well-known/openid-configuration"] = ops.json_route(lambda: discovery_document(config.issuer))
    return ops.serve(routes, address=config.http_listen, port=config.http_port)


def _start_signing(config: OperatorConfig, kube: Kube, memo: kopf.Memo) -> Signer:
    """Signing keys from their Secret (rotated on schedule), and the JWKS served over HTTP."""
    assert config.signing_namespace is not None
    store = KeyStore(kube, namespace=config.signing_namespace, clock=utc_now, **_rotation(config))
    _rotate_in_background(store, memo, config)
    memo["keystore"] = store
    return Signer(store, issuer=config.issuer, trust_domain=config.trust_domain)


def _start_sealing(config: OperatorConfig, kube: Kube, memo: kopf.Memo) -> SealKeys:
    """The creator seals' HMAC keys, from their Secret in the operator's namespace (rotated on schedule)."""
    store = SealKeys(kube, namespace=config.operator_namespace, clock=utc_now, **_rotation(config))
    _rotate_in_background(store, memo, config)
    return store


def _rotation(config: OperatorConfig) -> dict[str, timedelta]:
    return {"period": config.key_rotation, "publish_ahead": min(config.key_rotation / 10, timedelta(minutes=10))}


def _rotate_in_background(store: StoredKeyRing, memo: kopf.Memo, config: OperatorConfig) -> None:
    store.sync()
    every = min(config.key_rotation / 10, timedelta(minutes=1)).total_seconds()
    _supervise(memo, Supervised(f"rotation-{store.secret_name}", store.sync, every=every, stale_after=every + 120))


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    memo["controller"].stop()
    for loop in memo.get("loops", ()):
        loop.stop()
    if "elector" in memo:
        memo["elector"].stop()
    if "http" in memo:
        memo["http"].shutdown()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def identity_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo["controller"].observe(event["type"], dict(event["object"]))


@kopf.on.event(GROUP, VERSION, "agentprofiles")
async def profile_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo["controller"].observe_profile(event["type"], dict(event["object"]))


def mutate_identity(*, body: kopf.Body, userinfo: kopf.UserInfo, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:
    result = _admit(
        memo,
        "mutate",
        lambda: admission.stamp(
            memo["admission"],
            operation=str(kwargs.get("operation")),
            body=body,
            old=kwargs.get("old"),
            userinfo=userinfo,
            now=utc_now(),
        ),
    )
    patch.metadata.annotations.update(result.annotations)
    patch.metadata.labels.update(result.labels)
    for field, value in result.spec.items():
        patch.spec[field] = value


def validate_identity(*, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    _admit(
        memo,
        "validate",
        lambda: admission.review(
            memo["admission"], operation=str(kwargs.get("operation")), body=body, old=kwargs.get("old"), now=utc_now()
        ),
    )


T = TypeVar("T")


def _admit(memo: kopf.Memo, webhook: str, decide: Callable[[], T]) -> T:
    """One place for both webhooks' outcomes: a refusal becomes a 403 naming every rule."""
    try:
        result = decide()
    except admission.Refused as refused:
        memo["controller"].metrics.webhook_requests.labels(webhook, "denied").inc()
        raise kopf.AdmissionError(str(refused), code=403) from None
    memo["controller"].metrics.webhook_requests.labels(webhook, "mutated" if webhook == "mutate" else "allowed").inc()
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


def _configure_logging() -> None:
    """Audit lines go to stdout as bare JSON, one per line, whatever kopf does to other loggers."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    audit_logger = logging.getLogger(audit.LOGGER_NAME)
    audit_logger.handlers[:] = [handler]
    audit_logger.setLevel(logging.INFO)
    audit_logger.propagate = False
    # kopf logs "Handler ... succeeded" at INFO for every watch event: at a burst of 1,000
    # identities that is 7,000 lines saying nothing. Its warnings and errors still show.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _configure_logging()
    if not config.webhooks:
        log.warning(
            "UNSAFE: running without admission webhooks (--unsafe-no-admission-webhooks): creators are not verified "
            "and any creator annotation a client writes is believed. Never run this way on a shared cluster."
        )
    if config.webhooks:
        register_webhooks()
    kopf.run(
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        standalone=True,
        liveness_endpoint=config.liveness_endpoint,
        memo=kopf.Memo(config=config),
    )


if __name__ == "__main__":
    main()
