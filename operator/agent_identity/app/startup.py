"""Start-up: the running operator, assembled from its configuration. No kopf here: the kopf
handlers (``handlers``) call :func:`start` once and hand it every event.

What runs: one request layer to the API server, the controller (cache, work queue, workers), the
creator seals' and (optionally) the assertions' key rings with their rotation, leader election
when asked, the identities' list-and-watch (engine/informer.py), the children's metadata watches,
a periodic resync, the served namespaces' Pod Security check, and the HTTP endpoints. Every
background loop runs under a :class:`Supervised` and reports to ``/healthz``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from http.server import ThreadingHTTPServer
from typing import Any

from agent_identity import GROUP, PLURAL, VERSION
from agent_identity.admission.identity import Admission
from agent_identity.admission.reviews import CachedAccessReviews
from agent_identity.app.config import OperatorConfig
from agent_identity.engine.childwatch import ChildWatch
from agent_identity.engine.controller import Controller, utc_now
from agent_identity.engine.informer import IdentityInformer, relist
from agent_identity.engine.leader import LeaderElector, LeaseWatch
from agent_identity.engine.pod_security import PodSecurityCheck
from agent_identity.engine.reconciler import Reconciler, Settings
from agent_identity.engine.seal_ledger import SealLedger
from agent_identity.engine.subjects import SubjectKeys
from agent_identity.engine.supervisor import Supervised, dead
from agent_identity.engine.trail import TrailWriter
from agent_identity.engine.watch import Watch
from agent_identity.engine.workloadwatch import WorkloadWatch
from agent_identity.keys.keystore import KeyStore, SealKeys, Signer, StoredKeyRing, discovery_document
from agent_identity.keys.subjects import pseudonymise
from agent_identity.kube.client import WORKLOAD_RESOURCES, Kube, load_client_configuration
from agent_identity.ops import audit, http
from agent_identity.ops.metrics import Metrics
from agent_identity.plan.children import SELECTOR, ChildKind
from agent_identity.policy.facts import PolicySettings
from agent_identity.policy.pod_security import namespaces_to_check

log = logging.getLogger("agent_identity")
LEDGER_SWEEP_S = 60.0  # the seal ledger forgets claims whose window closed (engine.seal_ledger)


class CRDsMissing(RuntimeError):
    """The API server does not serve our resources: nothing can be served until it does."""


@dataclass
class Operator:
    """Everything :func:`start` started, so that :meth:`stop` stops all of it."""

    config: OperatorConfig
    kube: Kube
    controller: Controller
    metrics: Metrics
    admission: Admission | None = None
    keystore: KeyStore | None = None
    trail: TrailWriter | None = None
    elector: LeaderElector | None = None
    http: ThreadingHTTPServer | None = None
    loops: list[Supervised] = field(default_factory=list)

    def supervise(self, loop: Supervised) -> Supervised:
        self.loops.append(loop)
        return loop.start()

    def stop(self) -> None:
        self.controller.stop()
        for loop in self.loops:
            loop.stop()
        if self.trail is not None:
            _final_checkpoint(self.trail)
        if self.elector is not None:
            self.elector.stop()
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()  # the port is free for the next start


def start(config: OperatorConfig) -> Operator:
    kube = Kube(load_client_configuration(config.kubeconfig), pool_size=config.workers + 4)
    wait_for_crds(kube)
    policy = PolicySettings(
        require_creator=config.webhooks,
        require_profile=config.require_profile,
        default_profile=config.default_profile,
        operator_namespace=config.operator_namespace,
        served_namespaces=tuple(config.namespaces),
    )
    metrics = Metrics()
    keystore = (
        KeyStore(kube, namespace=config.signing_namespace, clock=utc_now, **_rotation(config))
        if config.signing_namespace
        else None
    )
    sealer = SealKeys(kube, namespace=config.operator_namespace, clock=utc_now, **_rotation(config)) if config.webhooks else None
    ledger = SealLedger(kube, sealer, namespace=config.operator_namespace, clock=utc_now) if sealer else None
    signer = Signer(keystore, issuer=config.issuer, trust_domain=config.trust_domain) if keystore else None
    reconciler_settings = Settings(retain_for=config.retain_for, cluster_server=config.cluster_server, policy=policy)
    controller = Controller(
        lambda lookup_identity, lookup_profile: Reconciler(
            kube,
            settings=reconciler_settings,
            clock=utc_now,
            lookup_identity=lookup_identity,
            lookup_profile=lookup_profile,
            signer=signer,
            sealer=sealer,
            ledger=ledger,
        ),
        workers=config.workers,
        metrics=metrics,
    )
    operator = Operator(config=config, kube=kube, controller=controller, metrics=metrics, keystore=keystore)
    try:  # a step that fails stops what the earlier ones started: kopf calls start() again
        for store in (keystore, sealer):
            if store is not None:
                _rotate_in_background(operator, store)
        if ledger is not None:
            operator.supervise(
                Supervised("seal-ledger-sweep", ledger.sweep, every=LEDGER_SWEEP_S, stale_after=LEDGER_SWEEP_S + 600)
            )
        if sealer is not None:
            operator.admission = Admission(
                kube=kube,
                reviews=CachedAccessReviews(kube),
                lookup=controller.lookup,
                profile_lookup=controller.lookup_profile,
                sealer=sealer,
                settings=policy,
                signing=signer is not None,
            )
        metrics.first_seen = controller.first_seen
        metrics.watch(
            controller.live_identities, queue_depth=lambda: len(controller.queue), cache_complete=controller.warm.is_set
        )
        audit.subscribe(metrics.on_audit)
        writer = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        _audit_into(operator, writer)
        if config.leader_election:
            operator.elector = _elect(kube, controller, config, identity=writer, trail=operator.trail)
            _supervise_watch(operator, LeaseWatch(kube, operator.elector))
        controller.start()
        if config.http_port:  # first: probes answer while the identities are listed
            operator.http = _serve_http(operator)
        _watch(operator)
        _check_pod_security(operator)
    except BaseException:
        operator.stop()
        raise
    log.info("agent-identity-operator started: %d workers, retention %s", config.workers, config.retain_for)
    return operator


def wait_for_crds(kube: Kube, timeout: float = 120.0) -> None:
    """kopf resolves the resources it serves once, at start-up (no CRD scanning, for least
    privilege): starting while the API server (re)starts could resolve nothing and serve nothing
    for good. So wait until discovery lists our resources, or fail loudly (and get restarted)."""
    wanted = {PLURAL, "agentprofiles"}
    deadline = time.monotonic() + timeout
    while not wanted <= kube.served_resources():
        if time.monotonic() > deadline:
            raise CRDsMissing(f"the API server does not serve {sorted(wanted)} in {GROUP}/{VERSION}: install the CRDs")
        time.sleep(1)


def _audit_into(operator: Operator, writer: str) -> None:
    """Every audit record with its people pseudonymised, into this shard's hash chain (signed every
    checkpoint interval) unless --unchained-audit."""
    subjects = SubjectKeys(operator.kube, namespace=operator.config.operator_namespace)

    def prepare(record: dict[str, Any]) -> dict[str, Any]:
        return pseudonymise(record, subjects)

    if operator.config.unchained_audit:
        audit.chain_into(lambda record: audit.write(prepare(record)))
    else:
        operator.trail = _chain_audit(operator, writer, prepare=prepare)
        audit.chain_into(operator.trail.append)


def _chain_audit(operator: Operator, writer: str, *, prepare: Callable[[dict[str, Any]], dict[str, Any]]) -> TrailWriter:
    """This shard's hash chain, its head signed every checkpoint interval."""
    config = operator.config
    trail = TrailWriter(
        operator.kube,
        namespace=config.operator_namespace,
        shard=config.shard,
        writer=writer,
        keystore=operator.keystore,
        clock=utc_now,
        write=audit.write,
        prepare=prepare,
    )
    every = config.audit_checkpoint_interval.total_seconds()
    operator.supervise(Supervised("audit-checkpoint", trail.checkpoint, every=every, stale_after=every + 120, first_after=every))
    return trail


def _final_checkpoint(trail: TrailWriter) -> None:
    """At shutdown the head is signed, so the next writer resumes from exactly here."""
    audit.chain_into(None)
    try:
        trail.checkpoint()
    except Exception:
        log.exception("audit trail: no checkpoint at shutdown")


def _elect(
    kube: Kube, controller: Controller, config: OperatorConfig, *, identity: str, trail: TrailWriter | None
) -> LeaderElector:
    """A standby until it holds the lease: watching, caching, not acting. Taking the lease, it
    claims the audit trail afresh (the former leader may have written since this one last did)."""
    controller.queue.pause()

    def started_leading() -> None:
        if trail is not None:
            trail.release()
        controller.lead()

    elector = LeaderElector(
        kube,
        namespace=config.leader_election_namespace,
        name=config.lease_name,
        identity=identity,
        wall_clock=utc_now,
        warm=controller.warm.is_set,
        lease_duration=config.lease_duration,
        on_started_leading=started_leading,
        on_stopped_leading=controller.queue.pause,  # and then the process exits (leader.py)
    )
    controller.queue.may_process = elector.holds  # no key taken past the renew deadline
    kube.may_write = elector.holds  # and no write sent: a reconcile caught mid-way by a freeze stops there
    elector.start()
    return elector


def _watch(operator: Operator) -> None:
    """The identities' and the children's watches start from now, so anything new is seen at once;
    then the resync loop's first run lists every identity (the cache is seeded on that thread,
    whatever it takes at 100,000) and its later runs, every resync period, heal what any watch
    missed. A gap in any watch (compaction, API server restart) resumes that watch from now and
    wakes the resync loop."""
    config, kube, controller = operator.config, operator.kube, operator.controller
    period = config.resync_period.total_seconds()
    informers: list[IdentityInformer] = []
    resync = Supervised("resync", partial(relist, informers), every=period, stale_after=period + 600)
    namespaces = config.namespaces or (None,)

    def identities_gap() -> None:  # the API server answers again: heartbeats get a period from now
        controller.reconciler.reachable_again()
        resync.wake()

    informers += [
        IdentityInformer(kube, controller, namespace, label_selector=config.shard_selector, on_gap=identities_gap)
        for namespace in namespaces
    ]
    children = [
        ChildWatch(kube, kind, namespace, label_selector=SELECTOR, on_change=controller.child_changed, on_gap=resync.wake)
        for kind in ChildKind
        for namespace in namespaces
    ]
    workloads = [
        WorkloadWatch(kube, resource, namespace, on_change=controller.workload_changed, on_gap=resync.wake)
        for resource in WORKLOAD_RESOURCES
        for namespace in namespaces
    ]
    for watch in [*informers, *children, *workloads]:
        _supervise_watch(operator, watch)
    operator.supervise(resync)  # last: its first listing is taken after every watch began


def _check_pod_security(operator: Operator) -> None:
    """Every check period, the Pod Security of each served namespace (the listed ones, or where
    identities are cached): metrics, and a Warning Event on a Namespace that lacks it."""
    config, controller = operator.config, operator.controller
    check = PodSecurityCheck(
        operator.kube,
        namespaces=lambda: namespaces_to_check(
            served=config.namespaces,
            with_identities=lambda: {live.namespace for live in controller.live_identities()},
            operator_namespace=config.operator_namespace,
        ),
        cluster_default=config.pod_security_default,
        clock=utc_now,
    )
    operator.metrics.watch_pod_security(check.enforcement)
    period = config.pod_security_check_period.total_seconds()
    operator.supervise(Supervised("pod-security", check.step, every=period, stale_after=period + 600))


def _supervise_watch(operator: Operator, watch: Watch) -> None:
    watch.begin()
    operator.supervise(Supervised(watch.name, watch.step, every=0, max_backoff=5, stale_after=watch.timeout_s + 90))


def _serve_http(operator: Operator) -> ThreadingHTTPServer:
    config, kube, controller = operator.config, operator.kube, operator.controller
    namespace = config.namespaces[0] if config.namespaces else None
    elector = operator.elector

    def held_back() -> str | None:
        """A standby is not ready until its cache is full, so a rolling update, which stops an old
        replica once a new one is ready, always leaves a warm standby to take over. A leader, or a
        replica that finds no one leading, is ready at once: it serves the webhooks."""
        if elector is not None and not controller.warm.is_set() and elector.another_leads():
            return "a standby whose first listing of the identities is still running"
        return None

    readiness = http.Readiness(
        lambda: kube.list_identities(namespace, limit=1),
        alive=lambda: ([] if controller.queue.alive else ["reconcile workers"]) + dead(operator.loops),
        held_back=held_back,
    )
    operator.supervise(
        Supervised("readiness-probe", readiness.probe, every=http.PROBE_EVERY_S, max_backoff=http.PROBE_EVERY_S, stale_after=60)
    )
    routes: dict[str, http.Route] = {
        "/metrics": http.metrics_route(operator.metrics.registry),
        "/healthz": readiness.healthz,
        "/readyz": readiness.readyz,
    }
    if operator.keystore is not None:
        routes["/.well-known/jwks.json"] = http.json_route(operator.keystore.jwks)
        routes["/.well-known/openid-configuration"] = http.json_route(lambda: discovery_document(config.issuer))
    return http.serve(routes, address=config.http_listen, port=config.http_port)


def _rotation(config: OperatorConfig) -> dict[str, timedelta]:
    return {"period": config.key_rotation, "publish_ahead": min(config.key_rotation / 10, timedelta(minutes=10))}


def _rotate_in_background(operator: Operator, store: StoredKeyRing) -> None:
    """Reads (or creates) the key ring now, then rotates it on schedule."""
    store.sync()
    every = min(operator.config.key_rotation / 10, timedelta(minutes=1)).total_seconds()
    operator.supervise(Supervised(f"rotation-{store.secret_name}", store.sync, every=every, stale_after=every + 120))
