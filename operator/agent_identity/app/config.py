"""The operator's configuration: typed, from flags, with every flag's environment variable as
its default (so the Helm chart sets either). The only place a flag is defined or parsed.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from agent_identity.api.durations import parse_duration
from agent_identity.policy.pod_security import Level


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()
    workers: int = 8
    retain_for: timedelta = timedelta(hours=1)
    cluster_server: str | None = None
    kubeconfig: str | None = None
    liveness_endpoint: str | None = None
    default_profile: str | None = None
    webhook_port: int = 0  # 0: no webhooks: the operator refuses to start unless unsafe_no_webhooks
    unsafe_no_webhooks: bool = False  # provision on unverified creators (development only)
    require_profile: bool = False
    operator_namespace: str = "agent-identity-system"  # its seal keys live here; never provisioned here
    webhook_host: str = "127.0.0.1"
    webhook_listen: str | None = None
    webhook_cert_dir: str | None = None  # default: a fresh private temporary directory
    webhook_drain: timedelta = timedelta(0)  # stopping, answer with Connection: close this long first
    webhook_client_ca: str | None = None  # answer only clients whose certificate this CA signed
    signing_namespace: str | None = None  # where the signing keys live; None: no assertions
    issuer: str = "https://agent-identity-operator"
    trust_domain: str = "cluster.local"
    key_rotation: timedelta = timedelta(hours=24)
    http_port: int = 0  # /metrics, /healthz, /readyz and the JWKS; 0: off
    leader_election: bool = False
    leader_election_namespace: str = "default"
    lease_name: str = "agent-identity-operator"
    lease_duration: timedelta = timedelta(seconds=8)
    shard_selector: str | None = None  # label selector: this replica serves only matching identities
    resync_period: timedelta = timedelta(hours=1)  # every identity listed and verified again
    http_listen: str = "0.0.0.0"  # noqa: S104 - a Service fronts it in a cluster
    pod_security_default: Level = Level.PRIVILEGED  # what the API server enforces on unlabelled namespaces
    pod_security_check_period: timedelta = timedelta(minutes=1)  # served namespaces' Pod Security read again
    audit_file: str | None = None  # audit records go here (rotated) instead of stdout
    audit_file_max_mb: int = 100
    audit_file_backups: int = 10
    audit_shard: str | None = None  # the chain's name; None: the lease name
    audit_checkpoint_interval: timedelta = timedelta(seconds=10)
    unchained_audit: bool = False  # records written without the hash chain (to measure its cost)

    @property
    def shard(self) -> str:
        return self.audit_shard or self.lease_name

    @property
    def webhooks(self) -> bool:
        return self.webhook_port > 0


_PARSERS: dict[type, Callable[[str], Any]] = {int: int, timedelta: parse_duration, Level: Level}


@dataclass(frozen=True)
class Flag:
    """One command-line flag, the OperatorConfig field it sets, and the environment variables that
    give its default (the first one set wins; by default ``AGENT_IDENTITY_`` + the flag's name)."""

    name: str
    field: str
    help: str
    kind: type = str  # str, int, bool (a switch; "true" in the environment), timedelta (a duration) or Level
    default: str | None = None
    env: tuple[str, ...] = ()

    @property
    def variables(self) -> tuple[str, ...]:
        return self.env or ("AGENT_IDENTITY_" + self.name.removeprefix("--").replace("-", "_").upper(),)

    def default_from(self, environ: Mapping[str, str]) -> str | None:
        return next((environ[name] for name in self.variables if environ.get(name)), self.default)

    @property
    def parse(self) -> Callable[[str], Any]:
        """How argparse turns the text (given, or the default) into the value."""
        return _PARSERS.get(self.kind, str)


FLAGS = (
    Flag("--workers", "workers", "concurrent reconciles (default 8)", int, "8"),
    Flag("--retain-for", "retain_for", "how long expired records are kept for audit (default 1h)", timedelta, "1h"),
    Flag("--cluster-server", "cluster_server", "API server URL written into agents' kubeconfigs (default: the operator's own)"),
    Flag("--kubeconfig", "kubeconfig", "kubeconfig (default: in-cluster, then ~/.kube/config)", env=("KUBECONFIG",)),
    Flag("--liveness", "liveness_endpoint", "e.g. http://0.0.0.0:8080/healthz"),
    Flag("--default-profile", "default_profile", "AgentProfile for identities that name none"),
    Flag("--webhook-port", "webhook_port", "serve the admission webhooks on this port (default 0: off)", int, "0"),
    Flag(
        "--unsafe-no-admission-webhooks",
        "unsafe_no_webhooks",
        "UNSAFE, development only: run without --webhook-port, provisioning on creators nobody verified",
        bool,
    ),
    Flag("--require-profile", "require_profile", "refuse identities that name no profile (and get no --default-profile)", bool),
    Flag(
        "--operator-namespace",
        "operator_namespace",
        "the operator's own namespace: its seal keys live here, and no identity is provisioned here",
        default="agent-identity-system",
        env=("AGENT_IDENTITY_OPERATOR_NAMESPACE", "POD_NAMESPACE"),
    ),
    Flag(
        "--webhook-host",
        "webhook_host",
        "the name or IP the API server reaches the webhooks at (in the serving certificate)",
        default="127.0.0.1",
    ),
    Flag("--webhook-listen", "webhook_listen", "address to listen on (default: --webhook-host)"),
    Flag("--webhook-cert-dir", "webhook_cert_dir", "tls.crt, tls.key and ca.crt: used if present, else generated here"),
    Flag(
        "--webhook-client-ca",
        "webhook_client_ca",
        "answer only clients with a certificate this CA signed: the API server, given one in its AdmissionConfiguration"
        " (default: any client)",
    ),
    Flag(
        "--webhook-drain",
        "webhook_drain",
        "before the webhook server stops, keep answering this long, closing each connection after its answer (default 0s)",
        timedelta,
        "0s",
    ),
    Flag(
        "--signing-namespace",
        "signing_namespace",
        "namespace of the signing-key Secret and JWKS ConfigMap; unset: no assertions",
        env=("AGENT_IDENTITY_SIGNING_NAMESPACE", "POD_NAMESPACE"),
    ),
    Flag(
        "--issuer",
        "issuer",
        "iss of delegation assertions (where /.well-known/jwks.json is served)",
        default="https://agent-identity-operator",
    ),
    Flag(
        "--trust-domain",
        "trust_domain",
        "trust domain of agent URIs (spiffe://<domain>/ns/<ns>/agent/<name>)",
        default="cluster.local",
    ),
    Flag("--key-rotation", "key_rotation", "signing key lifetime", timedelta, "24h"),
    Flag(
        "--http-port",
        "http_port",
        "serve /metrics, /healthz, /readyz (and the JWKS when signing) here (default 0: off)",
        int,
        "0",
    ),
    Flag("--http-listen", "http_listen", "address for --http-port", default="0.0.0.0"),  # noqa: S104
    Flag("--leader-election", "leader_election", "active/standby replicas: only the holder of the Lease reconciles", bool),
    Flag(
        "--leader-election-namespace",
        "leader_election_namespace",
        "namespace of the Lease (default: POD_NAMESPACE, else default)",
        default="default",
        env=("AGENT_IDENTITY_LEADER_ELECTION_NAMESPACE", "POD_NAMESPACE"),
    ),
    Flag("--lease-name", "lease_name", "Lease name; give each shard its own", default="agent-identity-operator"),
    Flag(
        "--lease-duration",
        "lease_duration",
        "a standby takes over once the lease has not been renewed for this long",
        timedelta,
        "8s",
    ),
    Flag("--shard-selector", "shard_selector", "label selector: serve only AgentIdentities matching it (e.g. shard=a)"),
    Flag(
        "--resync-period",
        "resync_period",
        "list and verify every identity this often, and at once after a gap in a watch (default 1h)",
        timedelta,
        "1h",
    ),
    Flag(
        "--pod-security-default",
        "pod_security_default",
        "the Pod Security level the API server enforces on namespaces without the pod-security.kubernetes.io/enforce "
        "label (its PodSecurity admission configuration's defaults.enforce; default privileged, Kubernetes' own)",
        Level,
        "privileged",
    ),
    Flag(
        "--pod-security-check-period",
        "pod_security_check_period",
        "read the served namespaces' Pod Security labels this often (default 1m)",
        timedelta,
        "1m",
    ),
    Flag("--audit-file", "audit_file", "write audit records to this file, rotated by size, instead of stdout"),
    Flag("--audit-file-max-size", "audit_file_max_mb", "rotate --audit-file at this many MiB (default 100)", int, "100"),
    Flag(
        "--audit-file-backups",
        "audit_file_backups",
        "rotated --audit-file files kept: FILE.1 (newest) .. FILE.N (default 10)",
        int,
        "10",
    ),
    Flag("--audit-shard", "audit_shard", "the audit chain this replica writes, one per shard (default: --lease-name)"),
    Flag(
        "--audit-checkpoint-interval",
        "audit_checkpoint_interval",
        "sign and store the audit chain's head this often when records came, and at shutdown (default 10s)",
        timedelta,
        "10s",
    ),
    Flag("--unchained-audit", "unchained_audit", "write audit records without the hash chain (to measure its cost)", bool),
)


def parse_args(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> OperatorConfig:
    parser = argparse.ArgumentParser(prog="agent-identity-operator", description="Just-in-time identities for AI agents.")
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[n for n in environ.get("AGENT_IDENTITY_NAMESPACES", "").split(",") if n],
        help="serve only this namespace (repeatable; default: all namespaces)",
    )
    for flag in FLAGS:
        default = flag.default_from(environ)
        if flag.kind is bool:
            parser.add_argument(flag.name, dest=flag.field, action="store_true", default=default == "true", help=flag.help)
        else:
            parser.add_argument(flag.name, dest=flag.field, type=flag.parse, default=default, help=flag.help)
    args = parser.parse_args(argv)
    values: dict[str, Any] = {flag.field: getattr(args, flag.field) for flag in FLAGS}
    if values["webhook_port"] <= 0 and not values["unsafe_no_webhooks"]:
        parser.error(
            "--webhook-port is required: without its admission webhooks the operator cannot verify who created an "
            "identity (pass --unsafe-no-admission-webhooks to run without them anyway, for development only)"
        )
    return OperatorConfig(namespaces=tuple(args.namespace), **values)
