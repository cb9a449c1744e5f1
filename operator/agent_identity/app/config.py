"""The operator's configuration: typed, from flags, with every flag's environment variable as
its default (so the Helm chart sets either). The only place a flag is defined or parsed.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from datetime import timedelta

from agent_identity.api.durations import parse_duration


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
    signing_namespace: str | None = None  # where the signing keys live; None: no assertions
    issuer: str = "https://agent-identity-operator"
    trust_domain: str = "cluster.local"
    key_rotation: timedelta = timedelta(hours=24)
    http_port: int = 0  # /metrics, /healthz, /readyz and the JWKS; 0: off
    leader_election: bool = False
    leader_election_namespace: str = "default"
    lease_name: str = "agent-identity-operator"
    lease_duration: timedelta = timedelta(seconds=15)
    shard_selector: str | None = None  # label selector: this replica serves only matching identities
    resync_period: timedelta = timedelta(hours=1)  # every identity listed and verified again
    http_listen: str = "0.0.0.0"  # noqa: S104 - a Service fronts it in a cluster

    @property
    def webhooks(self) -> bool:
        return self.webhook_port > 0


def parse_args(argv: list[str] | None = None) -> OperatorConfig:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="agent-identity-operator", description="Just-in-time identities for AI agents.")
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[n for n in env("AGENT_IDENTITY_NAMESPACES", "").split(",") if n],
        help="serve only this namespace (repeatable; default: all namespaces)",
    )
    parser.add_argument(
        "--workers", type=int, default=int(env("AGENT_IDENTITY_WORKERS", "8")), help="concurrent reconciles (default 8)"
    )
    parser.add_argument(
        "--retain-for",
        default=env("AGENT_IDENTITY_RETAIN_FOR", "1h"),
        help="how long expired records are kept for audit (default 1h)",
    )
    parser.add_argument(
        "--cluster-server",
        default=env("AGENT_IDENTITY_CLUSTER_SERVER"),
        help="API server URL written into agents' kubeconfigs (default: the operator's own)",
    )
    parser.add_argument("--kubeconfig", default=env("KUBECONFIG"), help="kubeconfig (default: in-cluster, then ~/.kube/config)")
    parser.add_argument("--liveness", default=env("AGENT_IDENTITY_LIVENESS"), help="e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument(
        "--default-profile", default=env("AGENT_IDENTITY_DEFAULT_PROFILE"), help="AgentProfile for identities that name none"
    )
    parser.add_argument(
        "--webhook-port",
        type=int,
        default=int(env("AGENT_IDENTITY_WEBHOOK_PORT", "0")),
        help="serve the admission webhooks on this port (default 0: off)",
    )
    parser.add_argument(
        "--unsafe-no-admission-webhooks",
        action="store_true",
        default=env("AGENT_IDENTITY_UNSAFE_NO_ADMISSION_WEBHOOKS") == "true",
        help="UNSAFE, development only: run without --webhook-port, provisioning on creators nobody verified",
    )
    parser.add_argument(
        "--require-profile",
        action="store_true",
        default=env("AGENT_IDENTITY_REQUIRE_PROFILE") == "true",
        help="refuse identities that name no profile (and get no --default-profile)",
    )
    parser.add_argument(
        "--operator-namespace",
        default=env("AGENT_IDENTITY_OPERATOR_NAMESPACE") or env("POD_NAMESPACE") or "agent-identity-system",
        help="the operator's own namespace: its seal keys live here, and no identity is provisioned here",
    )
    parser.add_argument(
        "--webhook-host",
        default=env("AGENT_IDENTITY_WEBHOOK_HOST", "127.0.0.1"),
        help="the name or IP the API server reaches the webhooks at (in the serving certificate)",
    )
    parser.add_argument(
        "--webhook-listen", default=env("AGENT_IDENTITY_WEBHOOK_LISTEN"), help="address to listen on (default: --webhook-host)"
    )
    parser.add_argument(
        "--signing-namespace",
        default=env("AGENT_IDENTITY_SIGNING_NAMESPACE") or env("POD_NAMESPACE"),
        help="namespace of the signing-key Secret and JWKS ConfigMap; unset: no assertions",
    )
    parser.add_argument(
        "--issuer",
        default=env("AGENT_IDENTITY_ISSUER", "https://agent-identity-operator"),
        help="iss of delegation assertions (where /.well-known/jwks.json is served)",
    )
    parser.add_argument(
        "--trust-domain",
        default=env("AGENT_IDENTITY_TRUST_DOMAIN", "cluster.local"),
        help="trust domain of agent URIs (spiffe://<domain>/ns/<ns>/agent/<name>)",
    )
    parser.add_argument("--key-rotation", default=env("AGENT_IDENTITY_KEY_ROTATION", "24h"), help="signing key lifetime")
    parser.add_argument(
        "--http-port",
        type=int,
        default=int(env("AGENT_IDENTITY_HTTP_PORT", "0")),
        help="serve /metrics, /healthz, /readyz (and the JWKS when signing) here (default 0: off)",
    )
    parser.add_argument(
        "--http-listen",
        default=env("AGENT_IDENTITY_HTTP_LISTEN", "0.0.0.0"),  # noqa: S104
        help="address for --http-port",
    )
    parser.add_argument(
        "--leader-election",
        action="store_true",
        default=env("AGENT_IDENTITY_LEADER_ELECTION") == "true",
        help="active/standby replicas: only the holder of the Lease reconciles",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default=env("AGENT_IDENTITY_LEADER_ELECTION_NAMESPACE") or env("POD_NAMESPACE"),
        help="namespace of the Lease (default: POD_NAMESPACE, else default)",
    )
    parser.add_argument(
        "--lease-name",
        default=env("AGENT_IDENTITY_LEASE_NAME", "agent-identity-operator"),
        help="Lease name; give each shard its own",
    )
    parser.add_argument(
        "--lease-duration",
        default=env("AGENT_IDENTITY_LEASE_DURATION", "15s"),
        help="a standby takes over once the lease has not been renewed for this long",
    )
    parser.add_argument(
        "--shard-selector",
        default=env("AGENT_IDENTITY_SHARD_SELECTOR"),
        help="label selector: serve only AgentIdentities matching it (e.g. shard=a)",
    )
    parser.add_argument(
        "--resync-period",
        default=env("AGENT_IDENTITY_RESYNC_PERIOD", "1h"),
        help="list and verify every identity this often, and at once after a gap in a watch (default 1h)",
    )
    parser.add_argument(
        "--webhook-cert-dir",
        default=env("AGENT_IDENTITY_WEBHOOK_CERT_DIR"),
        help="tls.crt, tls.key and ca.crt: used if present, else generated here",
    )
    args = parser.parse_args(argv)
    if args.webhook_port <= 0 and not args.unsafe_no_admission_webhooks:
        parser.error(
            "--webhook-port is required: without its admission webhooks the operator cannot verify who created an "
            "identity (pass --unsafe-no-admission-webhooks to run without them anyway, for development only)"
        )
    return OperatorConfig(
        namespaces=tuple(args.namespace),
        workers=args.workers,
        retain_for=parse_duration(args.retain_for),
        cluster_server=args.cluster_server,
        kubeconfig=args.kubeconfig,
        liveness_endpoint=args.liveness,
        default_profile=args.default_profile,
        webhook_port=args.webhook_port,
        unsafe_no_webhooks=args.unsafe_no_admission_webhooks,
        require_profile=args.require_profile,
        operator_namespace=args.operator_namespace,
        webhook_host=args.webhook_host,
        webhook_listen=args.webhook_listen,
        webhook_cert_dir=args.webhook_cert_dir,
        signing_namespace=args.signing_namespace,
        issuer=args.issuer,
        trust_domain=args.trust_domain,
        key_rotation=parse_duration(args.key_rotation),
        http_port=args.http_port,
        http_listen=args.http_listen,
        leader_election=args.leader_election,
        leader_election_namespace=args.leader_election_namespace or "default",
        lease_name=args.lease_name,
        lease_duration=parse_duration(args.lease_duration),
        shard_selector=args.shard_selector,
        resync_period=parse_duration(args.resync_period),
    )
