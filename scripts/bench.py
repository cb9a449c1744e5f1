"""`make bench`: how fast the operator provisions and retires, against the local control plane.

Prints figures; asserts nothing (targets are judged by people reading the numbers). Sizes come
from the environment so a quick run and a full run use the same code:

    BENCH_BURST=1000 BENCH_STEADY_RATE=20 BENCH_STEADY_SECONDS=30 BENCH_EXPIRING=1000 make bench

- BENCH_ROUNDS rounds (default 3), each a baseline burst then an operator burst of BENCH_BURST:
  the baseline is a bare client making the operator's API calls per identity (ServiceAccount,
  Role, RoleBinding, Secret, TokenRequest, Secret write, status patch, Event) at the same
  concurrency; the operator burst is BENCH_BURST identities created at once. Each prints seconds
  until all Ready, rate, ratio to its own baseline, the CPU seconds every process used, and API
  writes per identity counted from the API server's own metrics; then the median ratio;
- steady: create-to-Ready latency p50/p99 at BENCH_STEADY_RATE per second;
- expiry: BENCH_EXPIRING identities whose deadlines are spread over BENCH_EXPIRE_OVER seconds:
  retirement lag (ServiceAccount deleted minus expiresAt) p50/p99/max, and when TokenReview
  refused a sample of BENCH_TOKEN_SAMPLE tokens, half of them in use until expiry;
- restart: BENCH_LIVE identities in all (memory; token delivery BENCH_LIVE_DELIVERY, default
  Secret), then BENCH_RESTARTS times (default 1) kill -9 while BENCH_OVERDUE deadlines pass:
  seconds to take over, revoke and mark the overdue, re-verify everything; as many deadlines
  again falling 10-40 s after the restart, while the listing runs: how late each was revoked;
  identities created at BENCH_TAKEOVER_RATE per second throughout the take-over:
  create-to-Ready p50/p99/max; and the children of BENCH_TAMPERED identities (listed last)
  tampered with BENCH_TAMPER_AFTER seconds (default 8) after the operator answers, before its
  listing reaches them (half the Roles widened to every verb, half the RoleBindings deleted): how
  soon each was put right;
- failover: the chart's two replicas on a Lease (BENCH_LEASE_DURATION, default 8s) at BENCH_LIVE
  identities, the leader stopped by SIGTERM (a rolling update) and then by kill -9 (a crash),
  each time while BENCH_OVERDUE deadlines fall: seconds until the standby leads, how late those
  deadlines were revoked, create-to-Ready of identities created throughout;
- operator resident memory at BENCH_BURST and at BENCH_LIVE identities.

BENCH_PARTS=restart,failover (a comma-separated subset of bursts,steady,expiry,restart,failover)
runs only those.
BENCH_PROFILE=out.txt samples the operator with py-spy during the bursts (collapsed stacks of
the threads holding the GIL) and stops there.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config, watch

from agent_identity.api.conditions import Reason
from agent_identity.api.durations import parse_timestamp
from agent_identity.api.v1alpha1 import AgentIdentity
from agent_identity.engine.records import phase_status
from agent_identity.kube.client import Kube, load_client_configuration
from agent_identity.local.controlplane import running
from agent_identity.plan import children
from agent_identity.plan.children import ChildKind, Provenance
from agent_identity.plan.decisions import parse_identity

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "agentidentity.dev", "v1alpha1", "agentidentities"
BURST = int(os.environ.get("BENCH_BURST", "1000"))
RATE = float(os.environ.get("BENCH_STEADY_RATE", "20"))
STEADY_S = float(os.environ.get("BENCH_STEADY_SECONDS", "30"))
EXPIRING = int(os.environ.get("BENCH_EXPIRING", "1000"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DELIVERIES = ("Secret", "Projected")  # spec.token.delivery, side by side in each round
SCOPES = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def write_requests(api: client.ApiClient) -> int:
    """Mutating requests the API server has served so far (apiserver_request_total)."""
    serialized = api.param_serialize(
        method="GET", resource_path="/metrics", header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"]
    )
    response = api.call_api(*serialized)
    total = 0
    for line in response.read().decode().splitlines():
        if line.startswith("apiserver_request_total{") and any(f'verb="{v}"' in line for v in ("POST", "PUT", "PATCH", "DELETE")):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def identity(name: str, namespace: str, ttl: str, delivery: str = "Secret") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentIdentity",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "task": "bench",
            "ttl": ttl,
            "delegator": {"kind": "User", "name": "bench"},
            "scopes": SCOPES,
            **({"token": {"delivery": delivery}} if delivery != "Secret" else {}),
        },
    }


def in_background(target: Callable[[], None]) -> threading.Thread:
    """Runs ``target`` in a daemon thread; the control plane going away at the end of the run
    ends it quietly."""

    def guarded() -> None:
        with contextlib.suppress(Exception):
            target()

    thread = threading.Thread(target=guarded, daemon=True)
    thread.start()
    return thread


class ReadyWatcher:
    """Watches identities: when each was first seen Ready (wall clock), and each one's phase now.
    The bench reads both instead of listing thousands of identities over and over."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.ready: dict[str, float] = {}
        self.phase: dict[str, str | None] = {}
        self._custom = client.CustomObjectsApi(api)
        self._namespace = namespace
        in_background(self._watch)

    def _watch(self) -> None:
        while True:  # the client's watch resumes from its last resourceVersion; a 410 starts over
            with contextlib.suppress(client.ApiException):
                for event in watch.Watch().stream(
                    self._custom.list_namespaced_custom_object, GROUP, VERSION, self._namespace, PLURAL
                ):
                    obj = event["object"]
                    name, phase = obj["metadata"]["name"], (obj.get("status") or {}).get("phase")
                    self.phase[name] = phase
                    if phase == "Ready":
                        self.ready.setdefault(name, time.time())

    def wait(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(n in self.ready for n in names):
            time.sleep(0.05)


def baseline(kube: Kube, namespace: str, count: int) -> float:
    """Identities per second a bare client achieves making the operator's calls itself: the same
    requests (the operator's own request layer and bodies, from the same builders), none of the
    operator's watching, queueing or deciding. Equal bodies make the ratio measure the operator,
    not a difference in object sizes; the lean request layer keeps the client's own CPU low, so
    the baseline stays close to the API server's limit on cores it shares with the client."""
    access = kube.cluster_access()

    def one(index: int) -> None:
        body = kube.create_identity(identity(f"base-{index}", namespace, "1h"))
        agent = parse_identity(body)
        assert isinstance(agent, AgentIdentity), agent
        now = datetime.now(UTC)
        created = parse_timestamp(agent.metadata.creation_timestamp)
        provenance = Provenance(
            delegator="user:bench", task="bench", chain=("user:bench",), expires_at=created + timedelta(hours=1)
        )
        kube.create_child(ChildKind.SERVICE_ACCOUNT, children.service_account(agent, provenance))
        kube.create_child(ChildKind.ROLE, children.role(agent, provenance))
        kube.create_child(ChildKind.ROLE_BINDING, children.role_binding(agent, provenance))
        secret = kube.create_child(ChildKind.TOKEN_SECRET, children.token_secret(agent, provenance))["metadata"]
        request = children.token_request(
            audiences=[], expiration_seconds=3600, secret_name=secret["name"], secret_uid=secret["uid"]
        )
        issued = kube.request_token(namespace, children.child_name(agent), request, now=now)
        data = children.token_secret_data(identity=agent, issued=issued, server=access.server, ca_cert=access.ca_cert)
        kube.write_token(namespace, secret["name"], data=data, annotations=children.token_annotations(issued))
        status = phase_status(body, "Ready", Reason.PROVISIONED, "credentials valid", now=now, ready=True)
        kube.patch_identity_status(namespace, agent.metadata.name, status)
        kube.record_event(
            involved=body,
            event_type="Normal",
            reason=Reason.PROVISIONED,
            message="ServiceAccount, Role, RoleBinding ready",
            now=now,
        )

    started = time.monotonic()
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(one, range(count)))
    return count / (time.monotonic() - started)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds each process used between start() and report()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.started = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.wall = time.monotonic()

    def used(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) - self.started[name] for name, pid in self.pids.items()}

    def report(self) -> str:
        wall = time.monotonic() - self.wall
        parts = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in self.used().items())
        return f"CPU over {wall:.1f}s wall: {parts} (of {wall * (os.cpu_count() or 1):.0f} core-seconds)"


def operator_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    with running() as plane:
        api = config.new_client_from_config(config_file=str(plane.kubeconfig_path))
        extensions, core = client.ApiextensionsV1Api(api), client.CoreV1Api(api)
        for path in sorted((REPO / "crds").glob("*.yaml")):
            extensions.create_custom_resource_definition(yaml.safe_load(path.read_text()))
        time.sleep(2)
        # agent-identity-system: the operator's own namespace (its default), where it keeps its keys.
        for namespace in ["bench", "agent-identity-system", *(f"bench-baseline-{r}" for r in range(ROUNDS))]:
            core.create_namespace({"metadata": {"name": namespace}})
        print(
            f"agent-identity-operator bench: {os.cpu_count()} cores, burst {BURST} x {ROUNDS} rounds, "
            f"steady {RATE}/s for {STEADY_S:.0f}s, expiring {EXPIRING}, {WORKERS} workers"
        )
        plane_pids = {name: process.pid for name, process in plane.processes.items()} | {"bench client": os.getpid()}
        operator = start_operator(plane.kubeconfig_path)
        try:
            time.sleep(3)
            watcher = ReadyWatcher(api, "bench")
            custom = client.CustomObjectsApi(api)
            kube = Kube(load_client_configuration(str(plane.kubeconfig_path)), pool_size=WORKERS + 4)
            if "bursts" in PARTS:
                bursts(api, kube, watcher, operator, plane_pids)
            if PROFILE:  # the burst was what we came for: py-spy writes its samples on SIGINT
                operator.send_signal(signal.SIGINT)
                operator.wait(timeout=60)
                print(f"profile of the bursts (collapsed stacks): {PROFILE}")
                return
            if "steady" in PARTS:
                steady(custom, watcher)
            if "expiry" in PARTS:
                retirement_lag(api, custom, watcher)
            if "causes" in PARTS:
                retirement_causes(api, custom, watcher)
            for run in range(RESTARTS if "restart" in PARTS else 0):
                operator = restart(api, operator, plane.kubeconfig_path, watcher, run)
            if "failover" in PARTS:
                operator = failover(api, operator, plane.kubeconfig_path, watcher)
        finally:
            operator.terminate()
            operator.wait(timeout=30)


def bursts(
    api: client.ApiClient,
    kube: Kube,
    watcher: ReadyWatcher,
    operator: subprocess.Popen[bytes],
    plane_pids: dict[str, int],
) -> None:
    """ROUNDS rounds, each a bare-client baseline burst then an operator burst of BURST identities.
    The machine's speed drifts between minutes (shared cores): pairing each operator burst with
    a baseline taken just before it compares like with like."""
    ratios: dict[str, list[float]] = {delivery: [] for delivery in DELIVERIES}
    summary: dict[str, list[Burst]] = {delivery: [] for delivery in DELIVERIES}
    for round_ in range(ROUNDS):
        ReadyWatcher(api, f"bench-baseline-{round_}")  # the same instrument watches both bursts
        meter = CpuMeter(plane_pids)
        base_rate = baseline(kube, f"bench-baseline-{round_}", BURST)
        print(
            f"round {round_ + 1}: baseline (bare client, the operator's calls and bodies, {WORKERS} threads): "
            f"{base_rate:.1f} identities/s"
        )
        print(f"  {meter.report()}")

        for delivery in DELIVERIES:
            burst = operator_burst(
                api, watcher, operator, plane_pids, prefix=f"burst-{round_}-{delivery.lower()}", delivery=delivery
            )
            ratios[delivery].append(burst.rate / base_rate)
            print(
                f"round {round_ + 1}: operator burst, token delivery {delivery}: {burst.ready}/{BURST} Ready in"
                f" {burst.elapsed:.1f}s (creates took {burst.creating:.1f}s): {burst.rate:.1f} identities/s,"
                f" {ratios[delivery][-1]:.2f} of baseline"
            )
            print(f"  {burst.cpu}")
            print(
                f"  API writes per provisioned identity: {burst.writes_each:.2f} by the operator (+1 create by the client);"
                f" API server CPU {burst.apiserver_cpu_per_1000:.1f}s per 1,000 identities"
            )
            summary[delivery].append(burst)
        if round_ == 0 and not PROFILE:
            live = BURST * len(DELIVERIES)
            print(f"operator resident memory with {live} live identities: {operator_rss_mb(operator.pid):.0f} MB")
    print("token delivery side by side (medians over the rounds):")
    for delivery in DELIVERIES:
        bursts_ = summary[delivery]
        print(
            f"  {delivery:9} {statistics.median(b.rate for b in bursts_):7.1f} identities/s"
            f" ({statistics.median(ratios[delivery]):.2f} of baseline),"
            f" {statistics.median(b.writes_each for b in bursts_):.2f} writes per identity,"
            f" API server CPU {statistics.median(b.apiserver_cpu_per_1000 for b in bursts_):.1f}s per 1,000"
        )
    print(f"burst throughput, operator / baseline: median {statistics.median(ratios['Secret']):.2f} over {ROUNDS} rounds")


@dataclass(frozen=True)
class Burst:
    ready: int
    elapsed: float  # first create to last Ready
    creating: float  # first create to last create
    cpu: str
    writes_each: float  # by the operator, per identity
    apiserver_cpu_per_1000: float

    @property
    def rate(self) -> float:
        return self.ready / self.elapsed


def operator_burst(
    api: client.ApiClient,
    watcher: ReadyWatcher,
    operator: subprocess.Popen[bytes],
    plane_pids: dict[str, int],
    *,
    prefix: str,
    delivery: str,
) -> Burst:
    """BURST identities created at once, timed until the last is Ready; writes counted by the API server."""
    writes_before = write_requests(api)
    names = [f"{prefix}-{i}" for i in range(BURST)]
    meter = CpuMeter(plane_pids | {"operator": operator.pid})
    started = time.time()
    create_all(client.CustomObjectsApi(api), names, "1h", delivery)
    created = time.time()
    watcher.wait(names, timeout=600)
    last_ready = max(watcher.ready[n] for n in names if n in watcher.ready)
    cpu, apiserver = meter.report(), meter.used()["kube-apiserver"]
    time.sleep(3)  # let trailing writes (Events) land before counting
    writes = write_requests(api) - writes_before
    ready = sum(1 for n in names if n in watcher.ready)
    return Burst(ready, last_ready - started, created - started, cpu, (writes - BURST) / BURST, apiserver * 1000 / BURST)


def steady(custom: client.CustomObjectsApi, watcher: ReadyWatcher) -> None:
    names = [f"steady-{i}" for i in range(int(RATE * STEADY_S))]
    submitted: dict[str, float] = {}
    start = time.monotonic()
    for index, name in enumerate(names):
        time.sleep(max(0.0, start + index / RATE - time.monotonic()))
        submitted[name] = time.time()
        custom.create_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL, identity(name, "bench", "1h"))
    watcher.wait(names, timeout=120)
    latencies = [watcher.ready[n] - submitted[n] for n in names if n in watcher.ready]
    print(
        f"steady {RATE:.0f}/s: create-to-Ready p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms ({len(latencies)}/{len(names)} Ready)"
    )


HTTP_PORT = int(os.environ.get("BENCH_HTTP_PORT", "18080"))
LIVE = int(os.environ.get("BENCH_LIVE", "0"))
OVERDUE = int(os.environ.get("BENCH_OVERDUE", "100"))
TAKEOVER_WAIT = float(os.environ.get("BENCH_TAKEOVER_WAIT", "900"))  # how long the restart's clocks may run
LIVE_DELIVERY = os.environ.get("BENCH_LIVE_DELIVERY", "Secret")  # Projected: half the writes, a faster fill
TAKEOVER_RATE = float(os.environ.get("BENCH_TAKEOVER_RATE", "5"))
TAMPERED = int(os.environ.get("BENCH_TAMPERED", "20"))
# After the restarted operator answers: past the overdue burst (retired 2-5 s after the start at
# 100,000), so the new identities' latency measures the take-over, not the tampering too; long
# before its listing (24-30 s at 100,000) reaches the tampered identities.
TAMPER_AFTER_S = float(os.environ.get("BENCH_TAMPER_AFTER", "8"))
RESTARTS = int(os.environ.get("BENCH_RESTARTS", "1"))  # restarts, each after the same fill
LEASE_DURATION = os.environ.get("BENCH_LEASE_DURATION", "8s")  # the chart's leaderElection.leaseDuration
PARTS = set(os.environ.get("BENCH_PARTS", "bursts,steady,expiry,causes,restart,failover").split(","))
CAUSES = int(os.environ.get("BENCH_CAUSES", "200"))  # identities per cause of retirement (#33)
CAUSE_RATE = float(os.environ.get("BENCH_CAUSE_RATE", "20"))  # ends per second, causes interleaved
EXPIRE_OVER = int(os.environ.get("BENCH_EXPIRE_OVER", "60"))
TOKEN_SAMPLE = int(os.environ.get("BENCH_TOKEN_SAMPLE", "500"))
PROFILE = os.environ.get("BENCH_PROFILE", "")
SCRAPE_EVERY_S = 1.0  # the take-over's metrics clocks are this coarse (see run_clocks)


def start_operator(kubeconfig: Path, port: int = HTTP_PORT, *flags: str) -> subprocess.Popen[bytes]:
    log = open(REPO / f".demo-bench-operator-{port}.log", "a")  # noqa: SIM115 - lives as long as the operator
    # BENCH_PROFILE=out.txt: sample the operator with py-spy (collapsed stacks, on-CPU only)
    sampler = ["py-spy", "record", "--format", "raw", "--rate", "100", "--nonblocking", "--gil", "-o", PROFILE, "--"]
    profile = sampler if PROFILE else []
    return subprocess.Popen(
        [
            *profile,
            sys.executable,
            "-m",
            "agent_identity",
            "--namespace",
            "bench",
            "--workers",
            str(WORKERS),
            "--http-port",
            str(port),
            "--http-listen",
            "127.0.0.1",
            # The baseline it is compared with has no admission either: this measures provisioning.
            "--unsafe-no-admission-webhooks",
            *flags,
        ],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def scrape(name: str, port: int = HTTP_PORT) -> float | None:
    return scrape_all(name, port=port).get(name)


def scrape_all(*names: str, port: int = HTTP_PORT) -> dict[str, float]:
    """The operator's metrics ``names``, each summed over its labels (nothing while it does not answer)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    values = [line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#")]
    return {name: sum(float(value) for series, value in values if series.split("{")[0] == name) for name in names}


def create_all(custom: client.CustomObjectsApi, names: list[str], ttl: str, delivery: str = "Secret") -> None:
    def create(name: str) -> object:
        return custom.create_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL, identity(name, "bench", ttl, delivery))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, names))


class Arrivals:
    """New identities keep coming during a take-over, as they would in a busy cluster: one every
    1/TAKEOVER_RATE s from start() until stop(). ``submitted``: name -> when its create was sent;
    ``created``: those the API server accepted (refused while no webhook answers: not a sample)."""

    def __init__(self, custom: client.CustomObjectsApi, prefix: str) -> None:
        self.custom, self.prefix = custom, prefix
        self.submitted: dict[str, float] = {}
        self.created: list[str] = []
        self._done = threading.Event()
        self._thread = in_background(self._run)

    def _run(self) -> None:
        index = 0
        while not self._done.is_set():
            name = f"{self.prefix}-{index}"
            self.submitted[name] = time.time()
            with contextlib.suppress(client.ApiException):
                self.custom.create_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL, identity(name, "bench", "1h"))
                self.created.append(name)
            index += 1
            self._done.wait(1 / TAKEOVER_RATE)

    def stop(self, watcher: ReadyWatcher) -> None:
        self._done.set()
        self._thread.join()
        watcher.wait(list(self.submitted), 60)

    def report(self, watcher: ReadyWatcher, since: float, what: str) -> None:
        """create-to-Ready of all of them, and of those created from ``since`` (wall clock) on."""
        report_latencies(f"identities created during the take-over ({TAKEOVER_RATE:g}/s)", self.submitted, watcher)
        later = {n: at for n, at in self.submitted.items() if at >= since}
        report_latencies(f"  of those, created once {what}", later, watcher)
        slowest = sorted(later, key=lambda n: watcher.ready.get(n, math.inf) - later[n], reverse=True)[:5]
        offsets = ", ".join(f"+{later[n] - since:.1f}s took {watcher.ready.get(n, math.inf) - later[n]:.2f}s" for n in slowest)
        print(f"    slowest five, created at (after {what}): {offsets}")


WIDE_ROLE = {"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}


class Repairs:
    """The children of ``names`` (settled identities), tampered with once the restarted operator
    answers: odd ones' Roles widened to every verb, even ones' RoleBindings deleted. A watch per
    kind sees when each was put right: the Role narrowed again, the RoleBinding created again."""

    def __init__(self, api: client.ApiClient, names: list[str]) -> None:
        self.rbac, self.names = client.RbacAuthorizationV1Api(api), names
        self.tampered: dict[str, float] = {}
        self.repaired: dict[str, float] = {}
        self.listing_complete: float | None = None  # agentidentity_cache_complete when the last was tampered with
        if not names:  # BENCH_TAMPERED=0: nothing tampered with, nothing to watch
            return
        selector = f"agentidentity.dev/identity in ({','.join(names)})"
        kinds: list[tuple[Callable[..., Any], Callable[[Any], bool]]] = [
            (self.rbac.list_namespaced_role, lambda role: all("*" not in (rule.verbs or []) for rule in role.rules or [])),
            (self.rbac.list_namespaced_role_binding, lambda binding: True),
        ]
        for lister, put_right in kinds:
            version = lister("bench", label_selector=selector, limit=1).metadata.resource_version
            in_background(partial(self._watch, lister, selector, version, put_right))

    def _watch(self, lister: Callable[..., Any], selector: str, version: str, put_right: Callable[[Any], bool]) -> None:
        for event in watch.Watch().stream(
            lister, "bench", label_selector=selector, resource_version=version, timeout_seconds=600
        ):
            name = event["object"].metadata.labels["agentidentity.dev/identity"]
            if name in self.tampered and event["type"] != "DELETED" and put_right(event["object"]):
                self.repaired.setdefault(name, time.time())

    def tamper(self) -> None:
        wait_until(lambda: answers("/healthz"), TAKEOVER_WAIT)
        time.sleep(TAMPER_AFTER_S)
        for index, name in enumerate(self.names):
            self.tampered[name] = time.time()
            if index % 2:
                self.rbac.patch_namespaced_role(f"aid-{name}", "bench", WIDE_ROLE)
            else:
                self.rbac.delete_namespaced_role_binding(f"aid-{name}", "bench")
        self.listing_complete = scrape("agentidentity_cache_complete")

    def report(self, started_wall: float) -> None:
        if not self.names:
            return
        with contextlib.suppress(SystemExit):  # one not put right within a minute is counted below
            wait_until(lambda: len(self.repaired) == len(self.names), 60)
        if not self.tampered:
            print("  children tampered with: the operator never answered")
            return
        first = min(self.tampered.values()) - started_wall
        lags = [self.repaired[n] - at for n, at in self.tampered.items() if n in self.repaired]
        state = "complete" if self.listing_complete == 1 else "not complete"
        print(
            f"  children tampered with {first:.1f}s after the operator started (its listing {state}), "
            f"{len(lags)} of {len(self.names)} put right within 60 s: "
            f"p50 {percentile(lags, 0.5):.2f}s, max {max(lags, default=float('nan')):.2f}s after the change"
        )


def falling_deadlines(
    custom: client.CustomObjectsApi, watcher: ReadyWatcher, prefix: str, first_s: int, over_s: int
) -> dict[str, float]:
    """OVERDUE identities whose deadlines fall evenly from ``first_s`` to ``first_s + over_s``
    seconds from now, once Ready; name -> expiresAt (Unix seconds)."""
    falling = {f"{prefix}-{i}": f"{first_s + (i * over_s) // OVERDUE}s" for i in range(OVERDUE)}
    for ttl in sorted(set(falling.values())):
        create_all(custom, [name for name, its in falling.items() if its == ttl], ttl)
    watcher.wait(list(falling), 600)
    return deadlines_of(custom, list(falling))


def report_lags(what: str, lags: list[float], after: str) -> None:
    if lags:
        print(f"  {what}, {len(lags)} revoked: p50 {percentile(lags, 0.5):.2f}s, max {max(lags):.2f}s after {after}")


def restart(
    api: client.ApiClient, operator: subprocess.Popen[bytes], kubeconfig: Path, watcher: ReadyWatcher, run: int = 0
) -> subprocess.Popen[bytes]:
    """Fill up to BENCH_LIVE identities (memory), then kill -9 the operator while BENCH_OVERDUE
    deadlines pass, restart it, and time what follows. ``run`` tells repeated restarts' names apart."""
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    fill(custom, operator, watcher)
    overdue = [f"overdue-{run}-{i}" for i in range(OVERDUE)]
    create_all(custom, overdue, "30s")
    # Deadlines 10-40 s after the restart (the restart comes 32 s after the kill): before the full
    # listing at 100,000 identities could reach them.
    deadlines = falling_deadlines(custom, watcher, f"falling-{run}", 42, 30)
    tampered = [f"zz-tampered-{run}-{i}" for i in range(TAMPERED)]  # "zz": the listing reaches them last
    create_all(custom, tampered, "2h")
    watcher.wait(overdue + tampered, 600)
    deleted = watch_deletions(core)
    repairs = Repairs(api, tampered)
    total = count_identities(custom)
    operator.kill()
    operator.wait()
    time.sleep(32)  # every overdue deadline passes while the operator is down
    restarted, restarted_wall = time.monotonic(), time.time()
    operator = start_operator(kubeconfig)
    arrivals = Arrivals(custom, f"takeover-{run}")  # from the moment the operator process starts
    in_background(repairs.tamper)

    def cached(metrics: dict[str, float]) -> bool:
        # The operator's own word: its first listing is complete. (Counting cached identities against
        # those created raced the take-over's arrivals, created 5 a second, with a scrape up to
        # SCRAPE_EVERY_S old: at 100,000 it once never matched within 90 s of a 39 s listing.)
        return metrics.get("agentidentity_cache_complete") == 1

    clocks = run_clocks(
        restarted,
        {
            "answering (its watches begin)": lambda _: answers("/healthz"),
            "every identity cached (the re-verification of what changed while down begins)": cached,
            "overdue credentials revoked": lambda _: all(n in deleted for n in overdue),
            "overdue marked Expired": lambda _: all(watcher.phase.get(n) == "Expired" for n in overdue),
            "every identity re-verified (queue empty)": lambda m: cached(m) and m.get("agentidentity_workqueue_depth") == 0,
        },
    )
    arrivals.stop(watcher)
    print(f"restart {run + 1} with {total} identities ({OVERDUE} overdue), seconds after the operator started:")
    print_clocks(clocks)
    with contextlib.suppress(SystemExit):  # one not revoked within a minute is counted below
        wait_until(lambda: all(n in deleted for n in deadlines), 60)
    report_lags(
        f"deadlines falling during the take-over ({OVERDUE})",
        [deleted[n] - at for n, at in deadlines.items() if n in deleted],
        "expiresAt",
    )
    answering = restarted_wall + (clocks["answering (its watches begin)"] or TAKEOVER_WAIT)
    arrivals.report(watcher, answering, "the operator answered")
    repairs.report(restarted_wall)
    print(f"  operator resident memory after the take-over: {operator_rss_mb(operator.pid):.0f} MB")
    return operator


def print_clocks(clocks: dict[str, float | None]) -> None:
    for what, clock in clocks.items():
        print(f"  {what}: {clock:.1f}s" if clock is not None else f"  {what}: not within {TAKEOVER_WAIT:.0f}s")


LEASE = "agent-identity-operator"


def failover(
    api: client.ApiClient, operator: subprocess.Popen[bytes], kubeconfig: Path, watcher: ReadyWatcher
) -> subprocess.Popen[bytes]:
    """The chart's default: two replicas on a Lease (BENCH_LEASE_DURATION, the chart's 8s), the
    standby watching and caching. At BENCH_LIVE identities the leader is stopped twice, as a
    rolling update or a drain stops it (SIGTERM: it releases the lease) and as a crash does
    (kill -9: the lease runs out), each time while BENCH_OVERDUE deadlines fall over 30 s and new
    identities keep coming. Seconds after the stop until the standby leads; how late the deadlines
    that fell while no one led were revoked after it led, and the later ones after expiresAt;
    create-to-Ready of the new identities. The stopped replica comes back as the next standby."""
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    leases = client.CoordinationV1Api(api)
    fill(custom, operator, watcher)
    operator.terminate()
    operator.wait(timeout=60)
    flags = ("--leader-election", "--leader-election-namespace", "bench", "--lease-duration", LEASE_DURATION)
    ports = {HTTP_PORT: start_operator(kubeconfig, HTTP_PORT, *flags)}

    def holder() -> str:
        with contextlib.suppress(client.ApiException):
            return leases.read_namespaced_lease(LEASE, "bench").spec.holder_identity or ""
        return ""

    def holds(port: int) -> bool:  # identities are <hostname>-<pid>-<random>
        return holder().startswith(f"{socket.gethostname()}-{ports[port].pid}-")

    wait_until(lambda: holds(HTTP_PORT), 120)
    ports[HTTP_PORT + 1] = start_operator(kubeconfig, HTTP_PORT + 1, *flags)
    leader, standby = HTTP_PORT, HTTP_PORT + 1
    for how in (signal.SIGTERM, signal.SIGKILL):
        total = count_identities(custom)
        wait_until(lambda: scrape("agentidentity_cache_complete", standby) == 1, 900)  # noqa: B023
        deadlines = falling_deadlines(custom, watcher, f"{how.name.lower()}-falling", 20, 30)
        deleted = watch_deletions(core)
        time.sleep(max(0.0, min(deadlines.values()) - 1 - time.time()))  # the first falls 1 s after the stop
        stopped, stopped_wall = time.monotonic(), time.time()
        ports[leader].send_signal(how)
        arrivals = Arrivals(custom, f"{how.name.lower()}-new")
        clocks = run_clocks(
            stopped,
            {
                "the standby leads": lambda _: holds(standby),  # noqa: B023
                "every deadline revoked": lambda _: all(n in deleted for n in deadlines),  # noqa: B023
            },
            port=standby,
        )
        arrivals.stop(watcher)
        ports[leader].wait(timeout=60)
        print(f"failover by {how.name} with {total} identities, seconds after the leader was stopped:")
        print_clocks(clocks)
        led = stopped_wall + (clocks["the standby leads"] or TAKEOVER_WAIT)
        report_lags(
            "deadlines that fell while no replica led",
            [deleted[n] - led for n, at in deadlines.items() if n in deleted and at < led],
            "the standby led",
        )
        report_lags(
            "deadlines that fell after",
            [deleted[n] - at for n, at in deadlines.items() if n in deleted and at >= led],
            "expiresAt",
        )
        arrivals.report(watcher, led, "the standby led")
        print(f"  new leader's resident memory: {operator_rss_mb(ports[standby].pid):.0f} MB")
        ports[leader] = start_operator(kubeconfig, leader, *flags)  # back, as the next standby
        leader, standby = standby, leader
    ports[standby].terminate()
    ports[standby].wait(timeout=60)
    return ports[leader]


def report_latencies(what: str, submitted: dict[str, float], watcher: ReadyWatcher) -> None:
    latencies = [watcher.ready[n] - at for n, at in submitted.items() if n in watcher.ready]
    if latencies:
        print(
            f"  {what}, {len(latencies)} of {len(submitted)} Ready: create-to-Ready p50 {percentile(latencies, 0.5):.2f}s, "
            f"p99 {percentile(latencies, 0.99):.2f}s, max {max(latencies):.2f}s"
        )


def fill(custom: client.CustomObjectsApi, operator: subprocess.Popen[bytes], watcher: ReadyWatcher) -> None:
    """Up to BENCH_LIVE identities, all Ready."""
    existing = count_identities(custom)
    if existing >= LIVE:
        return
    started = time.monotonic()
    live = [f"live-{i}" for i in range(LIVE - existing)]
    create_all(custom, live, "2h", LIVE_DELIVERY)
    wait_until(lambda: all(n in watcher.ready for n in live) and scrape("agentidentity_workqueue_depth") == 0, 3600)
    print(
        f"filled to {LIVE} identities in {time.monotonic() - started:.0f}s; "
        f"operator resident memory: {operator_rss_mb(operator.pid):.0f} MB"
    )


def run_clocks(
    started: float, checks: dict[str, Callable[[dict[str, float]], bool]], port: int = HTTP_PORT
) -> dict[str, float | None]:
    """Seconds from ``started`` until each check first held (None: not within BENCH_TAKEOVER_WAIT),
    all clocks running at once, looking every 0.1 s. The checks get the operator's metrics as of at
    most SCRAPE_EVERY_S ago: a scrape counts every cached identity (50 ms at 100,000, holding the
    GIL), so scraping at every look would slow down what it measures."""
    clocks: dict[str, float | None] = dict.fromkeys(checks)
    deadline = time.monotonic() + TAKEOVER_WAIT
    metrics: dict[str, float] = {}
    scraped = 0.0
    while None in clocks.values() and time.monotonic() < deadline:
        if time.monotonic() - scraped >= SCRAPE_EVERY_S:
            metrics, scraped = (
                scrape_all("agentidentity_cache_complete", "agentidentity_workqueue_depth", port=port),
                time.monotonic(),
            )
        elapsed = time.monotonic() - started
        for what, check in checks.items():
            if clocks[what] is None and check(metrics):
                clocks[what] = elapsed
        time.sleep(0.1)
    return clocks


def answers(path: str) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}{path}", timeout=1).close()
    except OSError:
        return False
    return True


def deadlines_of(custom: client.CustomObjectsApi, names: list[str]) -> dict[str, float]:
    """expiresAt of each, read one by one (a listing of 100,000 would take longer than they live)."""

    def read(name: str) -> float:
        status = custom.get_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL, name)["status"]
        return parse_timestamp(status["expiresAt"]).timestamp()

    with ThreadPoolExecutor(16) as pool:
        return dict(zip(names, pool.map(read, names), strict=True))


def count_identities(custom: client.CustomObjectsApi) -> int:
    """How many identities the bench namespace holds, as the API server counts them: one one-item
    page (a full listing of 100,000 takes longer than the overdue identities' 30 s TTL)."""
    page = custom.list_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL, limit=1)
    return len(page["items"]) + int(page["metadata"].get("remainingItemCount") or 0)


def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise SystemExit(f"bench: condition not reached within {timeout:.0f}s")


def retirement_lag(api: client.ApiClient, custom: client.CustomObjectsApi, watcher: ReadyWatcher) -> None:
    """EXPIRING identities with deadlines spread over EXPIRE_OVER seconds: when was each
    ServiceAccount deleted, and when did TokenReview start refusing a sample of the tokens?"""
    core = client.CoreV1Api(api)
    deleted = watch_deletions(core)
    names = [f"expiring-{i}" for i in range(EXPIRING)]
    first = 40 + EXPIRING // 50  # long enough for all to be provisioned first
    # Deadlines spread evenly over EXPIRE_OVER seconds, as a fleet of short-lived agents has them.
    ttls = {name: first + (index * EXPIRE_OVER) // EXPIRING for index, name in enumerate(names)}
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda n: custom.create_namespaced_custom_object(
                    GROUP, VERSION, "bench", PLURAL, identity(n, "bench", f"{ttls[n]}s")
                ),
                names,
            )
        )
    watcher.wait(names, timeout=first)
    expires = expiries(custom, "expiring-")
    sample = names[:: max(1, EXPIRING // TOKEN_SAMPLE)]
    with ThreadPoolExecutor(16) as pool:
        tokens = dict(zip(sample, pool.map(lambda n: read_token(core, n), sample), strict=True))
    rejected, in_use, prober = probe_rejections(api, tokens, expires, deleted)
    deadline = time.monotonic() + first + EXPIRE_OVER + 60
    while time.monotonic() < deadline and len(deleted) < EXPIRING:
        time.sleep(1)
    prober.join(timeout=30)
    lags = [deleted[n] - expires[n] for n in names if n in deleted and n in expires]
    if not lags:
        print("retirement lag: nothing retired")
        return
    print(
        f"retirement lag ({len(lags)}/{EXPIRING} retired): p50 {percentile(lags, 0.5):.2f}s, p99 {percentile(lags, 0.99):.2f}s, "
        f"max {max(lags):.2f}s (ServiceAccount deleted minus expiresAt; mean {statistics.mean(lags):.2f}s)"
    )
    for label, group in (("in use until expiry", in_use), ("idle at expiry", set(tokens) - in_use)):
        refusals = [rejected[n] - expires[n] for n in group if n in rejected]
        print(
            f"token refused by TokenReview, {label} ({len(refusals)}/{len(group)} sampled): "
            f"p50 {percentile(refusals, 0.5):.2f}s, p99 {percentile(refusals, 0.99):.2f}s, "
            f"max {max(refusals, default=float('nan')):.2f}s after expiresAt"
        )
    print("  (expiresAt has second precision; a lag of -0.99..0 s means retired within the due second)")


def retirement_causes(api: client.ApiClient, custom: client.CustomObjectsApi, watcher: ReadyWatcher) -> None:
    """BENCH_CAUSES identities per cause of #33, each ended by the bench at BENCH_CAUSE_RATE per
    second: from the moment the bench's call that ended the credential's use returned (the agent's
    spec.done patch; the bound pod's status written Succeeded, as its kubelet would; the identity's
    deletion; for a delegate, its delegator's spec.done) to its ServiceAccount's deletion seen by
    a watch. p50/p99 per cause; the TTL path is the expiry part's."""
    core = client.CoreV1Api(api)
    deleted = watch_deletions(core)
    causes = ("self", "task_completed", "revoked", "delegator")
    names = {cause: [f"{cause.replace('_', '-')}-{i}" for i in range(CAUSES)] for cause in causes}
    parents = {name: f"parent-{i}" for i, name in enumerate(names["delegator"])}

    def create(name: str, **spec: Any) -> None:
        body = identity(name, "bench", "10m")
        body["spec"].update(spec)
        custom.create_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL, body)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, [*names["self"], *names["revoked"], *parents.values()]))
        list(pool.map(lambda n: create(n, boundTo={"kind": "Pod", "name": n}), names["task_completed"]))
    watcher.wait([*names["self"], *names["revoked"], *parents.values(), *names["task_completed"]], timeout=120)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: create(n, delegator={"kind": "AgentIdentity", "name": parents[n]}), names["delegator"]))
    watcher.wait(names["delegator"], timeout=120)
    for name in names["task_completed"]:  # no webhooks in the bench: the pod names the agent's account itself
        pod = {  # labelled, as the pod webhook admits an agent pod
            "metadata": {"name": name, "labels": {"agentidentity.dev/identity": name}},
            "spec": {"serviceAccountName": f"aid-{name}", "containers": [{"name": "a", "image": "a"}]},
        }
        core.create_namespaced_pod("bench", pod)
    time.sleep(3)  # every bound pod seen (status.boundWorkloadUID) before any ends

    def done(name: str) -> None:
        custom.patch_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL, name, {"spec": {"done": True}})

    end: dict[str, Callable[[str], object]] = {
        "self": done,
        "task_completed": lambda n: core.patch_namespaced_pod_status(n, "bench", {"status": {"phase": "Succeeded"}}),
        "revoked": lambda n: custom.delete_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL, n),
        "delegator": lambda n: done(parents[n]),
    }
    ended: dict[str, float] = {}
    order = [(cause, name) for i in range(CAUSES) for cause, name in ((c, names[c][i]) for c in causes)]
    for cause, name in order:
        started = time.monotonic()
        end[cause](name)
        ended[name] = time.time()
        time.sleep(max(0.0, 1 / CAUSE_RATE - (time.monotonic() - started)))
    wait_deadline = time.monotonic() + 60
    while time.monotonic() < wait_deadline and not all(n in deleted for group in names.values() for n in group):
        time.sleep(0.5)
    for cause in causes:
        lags = [deleted[n] - ended[n] for n in names[cause] if n in deleted]
        if not lags:
            print(f"retirement lag, cause {cause}: nothing retired")
            continue
        print(
            f"retirement lag, cause {cause} ({len(lags)}/{CAUSES}): p50 {percentile(lags, 0.5):.3f}s, "
            f"p99 {percentile(lags, 0.99):.3f}s, max {max(lags):.3f}s (the end's call returned to ServiceAccount deleted)"
        )
        if cause == "task_completed":
            credential_seconds(lags)


def credential_seconds(lags: list[float], tasks: int = 1000, ttl_s: float = 600.0) -> None:
    """The README's figure: ``tasks`` Jobs of 5-30 s (uniform, a fixed seed), each with a TTL of
    ``ttl_s`` from its start. Unbound, a credential lives its whole TTL; bound to its Job, it lives
    the Job's run plus a retirement lag drawn from the measured task_completed lags."""
    chooser = random.Random(33)  # noqa: S311 - a simulation, not a secret
    runs = [chooser.uniform(5.0, 30.0) for _ in range(tasks)]
    bound = sum(min(ttl_s, run + chooser.choice(lags)) for run in runs)
    print(
        f"credential-seconds alive, {tasks} Jobs of 5-30 s with {ttl_s / 60:.0f}-minute TTLs: "
        f"{tasks * ttl_s:,.0f} unbound, {bound:,.0f} bound to their Jobs ({tasks * ttl_s / bound:.0f}x fewer)"
    )


def watch_deletions(core: client.CoreV1Api) -> dict[str, float]:
    """identity name -> when its ServiceAccount's deletion was seen (filled in by a thread)."""
    deleted: dict[str, float] = {}

    def record() -> None:
        for event in watch.Watch().stream(  # ends after 10 minutes: long enough for each use
            core.list_namespaced_service_account,
            "bench",
            timeout_seconds=600,
            label_selector="app.kubernetes.io/managed-by=agent-identity-operator",
        ):
            if event["type"] == "DELETED":
                deleted.setdefault(event["object"].metadata.labels["agentidentity.dev/identity"], time.time())

    in_background(record)
    return deleted


def expiries(custom: client.CustomObjectsApi, prefix: str) -> dict[str, float]:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL)["items"]
    return {
        item["metadata"]["name"]: parse_timestamp(item["status"]["expiresAt"]).timestamp()
        for item in items
        if item["metadata"]["name"].startswith(prefix) and (item.get("status") or {}).get("expiresAt")
    }


def read_token(core: client.CoreV1Api, name: str) -> str:
    secret = core.read_namespaced_secret(f"aid-{name}-token", "bench")
    return base64.b64decode(secret.data["token"]).decode()


def probe_rejections(
    api: client.ApiClient, tokens: dict[str, str], expires: dict[str, float], deleted: dict[str, float]
) -> tuple[dict[str, float], set[str], threading.Thread]:
    """name -> when TokenReview first refused its token. Half the tokens are "in use": probed from
    1 s before their expiresAt, as an agent busy to the last second would use them; the others are
    first presented once their ServiceAccount's deletion is seen. The API server caches a
    successful authentication for 10 s, which only the tokens in use can hit."""
    authentication = client.AuthenticationV1Api(api)
    rejected: dict[str, float] = {}
    in_use = set(sorted(tokens)[::2])

    def authenticated(token: str) -> bool:
        review = authentication.create_token_review({"spec": {"token": token}})
        return bool(review.status.authenticated)

    def due(name: str, now: float) -> bool:
        return expires[name] - 1 <= now if name in in_use else name in deleted

    def run() -> None:
        pending = sorted(tokens, key=lambda n: expires[n])
        while pending:
            now = time.time()
            for name in [n for n in pending if due(n, now)]:
                if not authenticated(tokens[name]):
                    rejected[name] = time.time()
                    pending.remove(name)
            time.sleep(0.02)

    return rejected, in_use, in_background(run)


if __name__ == "__main__":
    main()
