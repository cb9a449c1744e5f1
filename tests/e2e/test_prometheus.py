"""The chart's dashboard and alerts on a real Prometheus, fed by the real operator and API server.

A Prometheus (Debian's, from scripts/install-prometheus.sh) runs on loopback and scrapes the
operator's /metrics every second, labelled as a ServiceMonitor would label the chart's metrics
Service (job <release>-metrics, namespace <release namespace>), and the API server's /metrics;
it loads the chart's rendered PrometheusRule. After a scripted scenario (identities provisioned,
one delegated, one under a risk-rated profile, one expired at its TTL, one revoked, one refused by
the webhook, one Denied by the reconciler) every PromQL expression of the dashboard and of the
alerts is evaluated through the HTTP API and its result compared with what happened. promtool
checks the rules file.
"""

from __future__ import annotations

import base64
import ctypes
import json
import re
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.rest import ApiException

from agent_identity.local.controlplane import terminate
from agent_identity.ops.metrics import LAG_BUCKETS, RETIREMENT_CAUSES
from agent_identity.policy.pod_security import ENFORCE_LABEL
from support.cluster import GROUP, VERSION, Cluster, make_identity, wait_for
from support.tools import render_chart, script_output
from support.webhooks import free_port, operator_with_webhooks, unregister

RELEASE, RELEASE_NAMESPACE = "agent-identity-operator", "agent-identity-system"
JOB = f"{RELEASE}-metrics"  # the job label a ServiceMonitor gives the chart's metrics Service
RATE_WINDOW = "1m"  # for Grafana's $__rate_interval: the whole scenario fits in it
Series = list[tuple[dict[str, str], float]]


# --- tools -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prometheus_tools() -> tuple[str, str]:
    """(prometheus, promtool): from PATH, else installed from Debian's package by the script."""
    prometheus, promtool = script_output("install-prometheus.sh", "Prometheus", timeout=900)[-2:]
    return prometheus, promtool


@pytest.fixture(scope="session")
def chart_monitoring() -> tuple[dict[str, Any], dict[str, Any]]:
    """(PrometheusRule, dashboard JSON) as the chart renders them, with the alerts enabled."""
    rendered = render_chart(
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--show-only",
        "templates/prometheusrule.yaml",
        "--show-only",
        "templates/dashboard.yaml",
        release=RELEASE,
        namespace=RELEASE_NAMESPACE,
    )
    docs = {doc["kind"]: doc for doc in rendered}
    return docs["PrometheusRule"], json.loads(docs["ConfigMap"]["data"]["agent-identity.json"])


# --- Prometheus ----------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: no orphan Prometheus


class Prometheus:
    def __init__(self, binary: str, directory: Path) -> None:
        self.binary, self.directory = binary, directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, config: dict[str, Any]) -> None:
        (self.directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = (self.directory / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - one syscall
        )
        wait_for("Prometheus ready", self._ready, timeout=30)

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"Prometheus exited with {self.process.returncode}:\n{self.log()}")
        try:
            return urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process:
            terminate(self.process, timeout=15)

    def log(self) -> str:
        path = self.directory / "prometheus.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            body = json.loads(urllib.request.urlopen(url, timeout=10).read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read())
        assert body["status"] == "success", f"{path} {params}: {body.get('errorType')}: {body.get('error')}"
        return body["data"]

    def query(self, expr: str) -> Series:
        data = self.api("query", query=expr)
        assert data["resultType"] in ("vector", "scalar"), f"{expr}: {data['resultType']}"
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [({k: v for k, v in s["metric"].items()}, float(s["value"][1])) for s in data["result"]]


def _apiserver_scrape(cluster: Cluster, directory: Path) -> dict[str, Any]:
    """A scrape job for the API server's /metrics with the kubeconfig's credentials."""
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    context_name = kubeconfig.get("current-context") or kubeconfig["contexts"][0]["name"]
    context = next(c["context"] for c in kubeconfig["contexts"] if c["name"] == context_name)
    server = next(c["cluster"] for c in kubeconfig["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in kubeconfig["users"] if u["name"] == context["user"])

    def file(entry: dict[str, Any], key: str) -> str | None:
        if entry.get(f"{key}-data"):
            path = directory / f"apiserver-{key}"
            path.write_bytes(base64.b64decode(entry[f"{key}-data"]))
            return str(path)
        return str(Path(cluster.kubeconfig).parent / entry[key]) if entry.get(key) else None

    url = urllib.parse.urlsplit(server["server"])
    tls: dict[str, Any] = {"insecure_skip_verify": bool(server.get("insecure-skip-tls-verify"))}
    if ca := file(server, "certificate-authority"):
        tls["ca_file"] = ca
    job: dict[str, Any] = {
        "job_name": "apiserver",
        "scheme": url.scheme,
        "metrics_path": url.path.rstrip("/") + "/metrics",
        "scrape_interval": "2s",
        "tls_config": tls,
        "static_configs": [{"targets": [url.netloc]}],
        # the API server exports thousands of series: keep the one the alerts use
        "metric_relabel_configs": [
            {"source_labels": ["__name__"], "regex": "apiserver_admission_webhook_rejection_count", "action": "keep"}
        ],
    }
    cert, key = file(user, "client-certificate"), file(user, "client-key")
    if cert and key:
        tls.update(cert_file=cert, key_file=key)
    elif user.get("token"):
        job["authorization"] = {"credentials": user["token"]}
    else:
        pytest.fail("the kubeconfig's user has neither a client certificate nor a token: cannot scrape the API server")
    return job


# --- expectations --------------------------------------------------------------------------------------


def _by(series: Series, *labels: str) -> dict[tuple[str, ...] | str, float]:
    keys = [tuple(s.get(label, "") for label in labels) for s, _ in series]
    return {(key[0] if len(key) == 1 else key): value for key, (_, value) in zip(keys, series, strict=True)}


def _single(series: Series) -> float:
    assert len(series) == 1 and series[0][0] == {}, f"expected one unlabelled value, got {series}"
    return series[0][1]


def _lag_quantiles(p50: Series, p99: Series, top: Series) -> None:
    # One retirement, in the histogram bucket up to 2 s (as tests/e2e/test_metrics.py sees it).
    assert 0 < _single(p50) <= _single(p99) <= _single(top) <= 2.0
    assert _single(top) in LAG_BUCKETS  # quantile 1: the upper bound of the highest bucket used


def dashboard_expectations() -> dict[tuple[str, str], Callable[[Series], object]]:
    """(panel title, refId) -> a check of its result after the scenario. Every target needs one."""

    def value(expected: float) -> Callable[[Series], object]:
        def check(series: Series) -> None:
            assert _single(series) == expected

        return check

    def positive(series: Series) -> None:
        assert _single(series) > 0

    def present(series: Series) -> None:
        # A labelled counter first scraped at 1 has no increase Prometheus can see (it does not
        # assume a start at 0): present, and never negative.
        assert _single(series) >= 0

    def latency(series: Series) -> None:
        assert 0 < _single(series) <= 5.0  # all five provisioned within the 5 s bucket

    return {
        ("Operator up / replicas with a full cache", "A"): value(1),
        ("Operator up / replicas with a full cache", "B"): value(1),  # the one operator, its listing done
        ("Ready identities", "A"): value(3),
        ("Overdue identities", "A"): value(0),
        ("Provisioned since start", "A"): value(5),
        ("Expired / revoked since start", "A"): value(1),
        ("Expired / revoked since start", "B"): value(1),
        ("Token / assertion failures since start", "A"): value(0),
        ("Token / assertion failures since start", "B"): value(0),
        ("Identities by phase", "A"): lambda s: _by(s, "phase") == {"Ready": 3, "Expired": 1, "Denied": 1} or _fail(s),
        ("Ready identities by risk level", "A"): lambda s: _by(s, "risk_level") == {"none": 2, "low": 1} or _fail(s),
        ("Ready identities by delegation depth", "A"): lambda s: _by(s, "depth") == {"0": 2, "1": 1} or _fail(s),
        ("Provisioning and retirement rate", "A"): positive,
        ("Provisioning and retirement rate", "B"): present,
        ("Provisioning and retirement rate", "C"): present,
        ("Create-to-Ready latency", "A"): latency,
        ("Create-to-Ready latency", "B"): latency,
        ("Retirement lag", "A"): lambda s: None,  # checked together below
        ("Retirement lag", "B"): lambda s: None,
        ("Retirement lag", "C"): lambda s: None,
        ("Denials by reason", "A"): lambda s: set(_by(s, "reason")) == {"InvalidSpec"} or _fail(s),
        ("Denied since start, by reason", "A"): lambda s: _by(s, "reason") == {"InvalidSpec": 1} or _fail(s),
        ("Webhook decisions", "A"): _webhook_rates,
        ("Webhook decisions since start", "A"): _webhook_totals,
        ("Tokens and assertions", "A"): positive,
        ("Tokens and assertions", "B"): positive,
        ("Tokens and assertions", "C"): value(0),
        ("Tokens and assertions", "D"): value(0),
        ("Reconcile errors by reason", "A"): lambda s: s == [] or _fail(s),
        # Idle after the scenario; at most one entry per identity in any case.
        ("Work queue depth", "A"): lambda s: 0 <= _single(s) <= 6 or _fail(s),
        # The served namespace is labelled baseline before the operator starts.
        ("Served namespaces without Pod Security", "A"): value(0),
        ("Pod Security enforced, by served namespace", "A"): lambda s: [v for _, v in s] == [1.0] or _fail(s),
    }


def _fail(series: Series) -> None:
    raise AssertionError(f"unexpected result {series}")


def _webhook_rates(series: Series) -> None:
    rates = _by(series, "webhook", "outcome")
    # the mutating webhook judges and stamps (or denies); the validating one checks the seal as stored
    assert set(rates) == {("validate", "allowed"), ("mutate", "denied"), ("mutate", "mutated")}, rates
    assert rates["validate", "allowed"] > 0 and rates["mutate", "mutated"] > 0 and rates["mutate", "denied"] >= 0


def _webhook_totals(series: Series) -> None:
    totals = _by(series, "webhook", "outcome")
    assert totals["mutate", "denied"] == 1, totals  # the identity without a TTL
    # five identities admitted, plus the dry-run probes that wait for the webhooks to be called
    assert totals["validate", "allowed"] >= 5 and totals["mutate", "mutated"] >= 6, totals


# Instant-vector selectors in the alert expressions, and what each selects after the scenario.
SELECTOR = re.compile(r"(?P<name>[A-Za-z_:][\w:]*)\{(?P<matchers>[^{}]*)\}")
ALERT_SELECTORS: dict[str, Callable[[Series], object]] = {
    "agentidentity_overdue_identities": lambda s: [v for _, v in s] == [0.0] or _fail(s),
    # A series per bucket of each cause, every cause present from the first scrape.
    "agentidentity_retirement_lag_seconds_bucket": lambda s: len(s) == (len(LAG_BUCKETS) + 1) * len(CAUSES) or _fail(s),
    "agentidentity_reconcile_errors_total": lambda s: s == [] or _fail(s),  # no error, no reason label: no series
    "up": lambda s: [v for _, v in s] == [1.0] or _fail(s),
    "agentidentity_token_failures_total": lambda s: [v for _, v in s] == [0.0] or _fail(s),
    "agentidentity_assertion_failures_total": lambda s: [v for _, v in s] == [0.0] or _fail(s),
    "agentidentity_namespaces_without_pod_security": lambda s: [v for _, v in s] == [0.0] or _fail(s),
    # apiserver_admission_webhook_rejection_count: see _check_alerts (the webhook never failed to answer)
}
# Each alert's expression without its final "> threshold": the signal it compares.
ALERT_SIGNALS: dict[str, Callable[[Series], object]] = {
    "AgentIdentityPastExpiryNotRetired": lambda s: _single(s) == 0 or _fail(s),
    "AgentIdentityRetirementSlow": lambda s: 0 < _single(s) <= 2.0 or _fail(s),
    "AgentIdentityReconcileErrors": lambda s: s == [] or _fail(s),
    "AgentIdentityTokenIssuanceFailures": lambda s: _single(s) == 0 or _fail(s),
    "AgentIdentityAssertionSigningFailures": lambda s: _single(s) == 0 or _fail(s),
    "AgentIdentityNamespaceWithoutPodSecurity": lambda s: _single(s) == 0 or _fail(s),
}


# --- the test ----------------------------------------------------------------------------------------


@pytest.fixture
def risk_profile(cluster: Cluster, namespace: str) -> Iterator[str]:
    name = f"low-{uuid.uuid4().hex[:6]}"
    spec = {
        "riskLevel": "low",
        "maxTTL": "10m",
        "namespaces": [namespace],
        "permissionCeiling": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
    }
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentProfile", "metadata": {"name": name}, "spec": spec}
    cluster.custom.create_cluster_custom_object(GROUP, VERSION, "agentprofiles", body)
    yield name
    cluster.custom.delete_cluster_custom_object(GROUP, VERSION, "agentprofiles", name)


def test_dashboard_and_alerts_on_a_real_prometheus(
    *,
    cluster: Cluster,
    namespace: str,
    risk_profile: str,
    tmp_path: Path,
    prometheus_tools: tuple[str, str],
    chart_monitoring: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    prometheus_binary, promtool = prometheus_tools
    rule, dashboard = chart_monitoring
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]))
    checked = subprocess.run([promtool, "check", "rules", str(rules_file)], check=False, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    alerts = {r["alert"]: r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert f"SUCCESS: {len(alerts)} rules found" in checked.stdout

    port = free_port()
    args = ["--http-port", str(port), "--http-listen", "127.0.0.1", "--signing-namespace", namespace]
    cluster.core.patch_namespace(namespace, {"metadata": {"labels": {ENFORCE_LABEL: "baseline"}}})  # no Pod Security alert
    prometheus = Prometheus(prometheus_binary, tmp_path / "prometheus")
    prometheus.directory.mkdir()
    try:
        with operator_with_webhooks(cluster, namespace, tmp_path, extra_args=args):
            wait_for("the operator's /metrics", lambda: _serves(f"http://127.0.0.1:{port}/metrics"))
            prometheus.start(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(rules_file)],
                    "scrape_configs": [
                        {
                            "job_name": JOB,
                            "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": RELEASE_NAMESPACE}}],
                        },
                        _apiserver_scrape(cluster, prometheus.directory),
                    ],
                }
            )
            # A first scrape before anything happens: histograms and counters start from 0.
            wait_for(
                "the first scrape", lambda: prometheus.query(f'agentidentity_tokens_issued_total{{job="{JOB}"}}'), timeout=15
            )
            # The API server's rejection counter is cumulative over the whole suite: count from here.
            wait_for("the API server scraped", lambda: prometheus.query('up{job="apiserver"} == 1'), timeout=15)
            before = prometheus.query(APISERVER_REFUSALS)
            earlier = sum(v for _, v in before)
            earlier_mutate = sum(v for series, v in before if series["name"] == MUTATING_WEBHOOK)
            earlier_failures = prometheus.query(_apiserver_selector(alerts))
            _scenario(cluster, namespace, risk_profile, scraped=lambda expr: bool(prometheus.query(expr)))
            _wait_until_prometheus_saw_it(prometheus, earlier_refusals=earlier)
            _check_dashboard(prometheus, dashboard)
            _check_alerts(prometheus, alerts, earlier_refusals=earlier_mutate, earlier_failures=earlier_failures)
    finally:
        prometheus.stop()
    assert prometheus.process is not None and prometheus.process.poll() is not None


def _serves(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


def _scenario(cluster: Cluster, namespace: str, profile: str, *, scraped: Callable[[str], bool]) -> None:
    """Five identities provisioned (one delegated, one under a low-risk profile), one expired at its
    10 s TTL, one revoked by deletion, one refused by the webhook, one Denied by the reconciler."""
    cluster.create_identity(make_identity("lead", namespace, ttl="10m"))
    cluster.wait_phase(namespace, "lead", "Ready")
    # Prometheus sees no increase in a counter's first sample (it does not assume a start at 0):
    # let it scrape the namespace's first provisioning before the rest, so the rates show them.
    wait_for("lead's provisioning scraped", lambda: scraped(f'agentidentity_provisioned_total{{job="{JOB}"}} == 1'))
    cluster.create_identity(make_identity("brief", namespace, ttl="10s"))
    cluster.create_identity(make_identity("helper", namespace, ttl="5m", delegator={"kind": "AgentIdentity", "name": "lead"}))
    cluster.create_identity(make_identity("scoped", namespace, ttl="5m", profile=profile))
    cluster.create_identity(make_identity("gone", namespace, ttl="10m"))
    for name in ("brief", "helper", "scoped", "gone"):
        cluster.wait_phase(namespace, name, "Ready")
    cluster.delete_identity(namespace, "gone")
    with pytest.raises(ApiException) as refused:  # the mutating webhook judges: no TTL anywhere
        cluster.create_identity(make_identity("ageless", namespace, ttl=None))
    assert refused.value.status == 403
    unregister(cluster)  # as if the webhook were missing: the reconciler denies instead
    cluster.create_identity(make_identity("ageless", namespace, ttl=None))
    cluster.wait_phase(namespace, "ageless", "Denied")
    cluster.wait_phase(namespace, "brief", "Expired", timeout=20)
    wait_for("gone deleted", lambda: cluster.get_identity(namespace, "gone") is None)


MUTATING_WEBHOOK = "mutate.agentidentities.agentidentity.dev"
APISERVER_REFUSALS = 'apiserver_admission_webhook_rejection_count{job="apiserver", error_type="no_error"}'


def _wait_until_prometheus_saw_it(prometheus: Prometheus, *, earlier_refusals: float) -> None:
    final = {
        f'sum(agentidentity_provisioned_total{{job="{JOB}"}})': 5,
        f'sum(agentidentity_expired_total{{job="{JOB}"}})': 1,
        f'sum(agentidentity_revoked_total{{job="{JOB}"}})': 1,
        f'sum(agentidentity_denied_total{{job="{JOB}"}})': 1,
        f'sum(agentidentity_identities{{job="{JOB}", phase="Ready"}})': 3,
        f'sum(agentidentity_identities{{job="{JOB}"}})': 5,  # gone is gone
        f"sum({APISERVER_REFUSALS})": earlier_refusals + 1,
    }

    # ... in two scrapes at least: rate() needs two samples of the counters that appeared last.
    twice = [f'{metric}{{job="{JOB}"}}' for metric in ("agentidentity_expired_total", "agentidentity_revoked_total")]
    twice.append(f'agentidentity_denied_total{{job="{JOB}"}}')

    differing: dict[str, object] = {}

    def seen() -> bool:
        differing.clear()
        for expr, value in final.items():
            if (got := [v for _, v in prometheus.query(expr)]) != [value]:
                differing[expr] = got
        for selector in twice:
            if (got := [v for _, v in prometheus.query(f"count_over_time({selector}[{RATE_WINDOW}])")]) < [2.0]:
                differing[selector] = got
        return not differing

    try:
        wait_for("Prometheus to scrape the scenario's end state", seen, timeout=20, interval=0.5)
    except AssertionError:
        raise AssertionError(f"Prometheus never saw the scenario's end state: {differing} (wanted {final})") from None


CAUSES = set(RETIREMENT_CAUSES.values())


def _grafana(expr: str) -> str:
    """A dashboard query as Grafana sends it for the operator's job."""
    return expr.replace("$__rate_interval", RATE_WINDOW).replace("$job", JOB)  # no regex metacharacters in JOB


def _check_dashboard(prometheus: Prometheus, dashboard: dict[str, Any]) -> None:
    expectations = dashboard_expectations()
    targets = {
        (panel["title"], target["refId"]): target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    }
    assert set(targets) == set(expectations), "every dashboard query needs an expectation here (and only those)"
    results = {key: prometheus.query(_grafana(expr)) for key, expr in targets.items()}
    for key, check in expectations.items():
        try:
            check(results[key])
        except AssertionError as error:
            raise AssertionError(f"panel {key[0]!r} {key[1]}: {targets[key]} -> {results[key]}: {error}") from error
    _lag_quantiles(*(results["Retirement lag", ref] for ref in "ABC"))
    # The variable: Grafana's label_values(agentidentity_identities, job).
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "job"]
    series, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]["query"]).groups()  # type: ignore[union-attr]
    assert prometheus.api(f"label/{label}/values", **{"match[]": series}) == [JOB]
    # Every operator metric a query names is one the scraped target declared (HELP/TYPE).
    declared = {m["metric"] for m in prometheus.api("targets/metadata", match_target=f'{{job="{JOB}"}}')}
    named = {m for expr in targets.values() for m in re.findall(r"agentidentity_\w+", expr)}
    assert {re.sub(r"_(bucket|count|sum)$", "", m) for m in named} <= declared


def _apiserver_selector(alerts: dict[str, str]) -> str:
    """The webhook alert's selector of the API server's failures to call the webhooks."""
    (selector,) = [
        m.group(0) for m in SELECTOR.finditer(alerts["AgentIdentityWebhookUnavailable"]) if m["name"].startswith("apiserver_")
    ]
    return selector


def _check_alerts(prometheus: Prometheus, alerts: dict[str, str], *, earlier_refusals: float, earlier_failures: Series) -> None:
    """``earlier_refusals``: the mutating webhook's refusals the API server counted before the scenario;
    ``earlier_failures``: its failures to call the webhooks by then. The API server counts both over
    its whole life: on a cluster the suite shares (kind), earlier tests' outages are in them."""

    def unchanged(series: Series) -> bool:  # the webhooks never failed to answer during the scenario
        return sorted((sorted(s.items()), v) for s, v in series) == sorted((sorted(s.items()), v) for s, v in earlier_failures)

    checks = ALERT_SELECTORS | {"apiserver_admission_webhook_rejection_count": lambda s: unchanged(s) or _fail(s)}
    assert set(ALERT_SIGNALS) | {"AgentIdentityWebhookUnavailable"} == set(alerts)
    for alert, expr in alerts.items():
        assert prometheus.query(expr) == [], f"{alert} would fire: {expr}"
        for selector in SELECTOR.finditer(expr):
            result = prometheus.query(selector.group(0))
            try:
                checks[selector["name"]](result)
            except AssertionError as error:
                raise AssertionError(f"{alert}: {selector.group(0)} -> {result}") from error
        if alert in ALERT_SIGNALS:
            signal_expr = re.sub(r"\s*>\s*[\d.]+\s*$", "", expr.strip())
            assert signal_expr != expr.strip(), f"{alert}: no trailing threshold in {expr}"
            ALERT_SIGNALS[alert](prometheus.query(signal_expr))
    # The webhook alert's API server selector names the real webhooks: the one refusal (the
    # mutating webhook judges) is there.
    webhook = _apiserver_selector(alerts)
    refusals = prometheus.query(webhook.replace('error_type="calling_webhook_error"', 'error_type="no_error"'))
    mutating = [(s["type"], s["rejection_code"], v) for s, v in refusals if s["name"] == MUTATING_WEBHOOK]
    assert mutating == [("admit", "403", earlier_refusals + 1)], refusals

    # Loaded by Prometheus itself, evaluated without error, and nothing pending or firing.
    def evaluated() -> list[dict[str, Any]] | None:
        rules = [r for group in prometheus.api("rules")["groups"] for r in group["rules"]]
        return rules if all(r["lastEvaluation"] > "2000" for r in rules) else None

    rules = wait_for("the rules evaluated", evaluated, timeout=10)
    assert {r["name"] for r in rules} == set(alerts)
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    assert prometheus.api("alerts")["alerts"] == []
