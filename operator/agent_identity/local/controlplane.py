"""A real Kubernetes control plane on loopback, for the tests and ``make demo``.

etcd, kube-apiserver and kube-controller-manager, built from the official Go modules by
``scripts/build-control-plane.sh`` and started here with RBAC, TokenRequest, the admission plugins
and the controllers (as their own ServiceAccounts, like kubeadm's) working as in a real cluster. No
kubelet and no scheduler: pods are admitted and stored, and stay Pending.

Everything started is stopped on exit, including when the parent dies: each process is started
with ``PR_SET_PDEATHSIG`` so that even a ``kill -9`` of the test runner leaves nothing behind.

Usage as a program: ``python -m agent_identity.local.controlplane --kubeconfig out.yaml`` starts the
control plane, writes an admin kubeconfig and runs until interrupted.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes import client
from kubernetes.client.rest import ApiException

from agent_identity import GROUP, PLURAL, VERSION
from agent_identity.admission.configurations import CONFIGURATION_NAME, webhook_configurations
from agent_identity.admission.pods import POD_GUARD, pod_guard_policy
from agent_identity.keys import certs
from agent_identity.plan.children import ANNOTATION_CREATOR

REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-control-plane.sh"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
READY_TIMEOUT_S = 90.0
# Who wrote what, from the API server's own records (the tests count each replica's writes): one
# line per write request at Metadata level (user, verb, object, response code; no bodies), none
# for other reads, which are most requests. Every request of a ServiceAccount outside kube-system
# (an agent's, with its uid and credential-id: kubectl agent trail) at Metadata level too.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or started; the message says what to do."""


# ---------------------------------------------------------------------------------------------
# Certificates and keys (cryptography only)


def write_pki(directory: Path) -> dict[str, Path]:
    """CA, apiserver serving cert, admin client cert, service-account signing key pair."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = certs.new_authority("agent-identity-local-ca")
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    apiserver = certs.issue(
        ca, common_name="kube-apiserver", server_names=["localhost", "kubernetes.default.svc", "127.0.0.1", "10.0.0.1"]
    )
    admin = certs.issue(ca, common_name="admin", organization="system:masters")
    # The controller manager as kubeadm runs it: its own user, and one ServiceAccount per controller
    # (--use-service-account-credentials), so its requests carry the users a real cluster's do.
    controller_manager = certs.issue(ca, common_name="system:kube-controller-manager")
    files = {
        "ca.crt": ca.cert_pem,
        "ca.key": ca.key_pem,
        "sa.key": sa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        "sa.pub": sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "apiserver.crt": apiserver.cert_pem,
        "apiserver.key": apiserver.key_pem,
        "admin.crt": admin.cert_pem,
        "admin.key": admin.key_pem,
        "controller-manager.crt": controller_manager.cert_pem,
        "controller-manager.key": controller_manager.key_pem,
    }
    return {name: certs.write_private(directory / name, content) for name, content in files.items()}


WEBHOOK_CLIENT_CA = "ca.crt"  # in write_webhook_client's directory
WEBHOOK_ADMISSION_CONFIGURATION = "admission.yaml"


def write_webhook_client(directory: Path, *, mounted_at: Path | None = None) -> Path:
    """What an API server shows admission webhooks: a client certificate from an authority of its
    own (so a webhook trusting that authority answers this API server and nobody else), and the
    AdmissionConfiguration (``--admission-control-config-file``) that presents it to every webhook.

    Writes ``ca.crt``, ``client.crt``, ``client.key``, ``kubeconfig.yaml`` and ``admission.yaml``
    into ``directory``; the files name each other by ``mounted_at`` (default: ``directory``), where
    the API server finds them (a kind node's mount, for one). Returns the CA's path."""
    directory.mkdir(parents=True, exist_ok=True)
    at = mounted_at or directory
    authority = certs.new_authority("agent-identity-webhook-client-ca")
    client = certs.issue(authority, common_name="kube-apiserver-webhook-client")
    user = {"client-certificate": str(at / "client.crt"), "client-key": str(at / "client.key")}
    kubeconfig = {"apiVersion": "v1", "kind": "Config", "users": [{"name": "*", "user": user}]}
    webhooks = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "WebhookAdmissionConfiguration",
        "kubeConfigFile": str(at / "kubeconfig.yaml"),
    }
    configuration = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [
            {"name": plugin, "configuration": webhooks} for plugin in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")
        ],
    }
    files = {
        WEBHOOK_CLIENT_CA: authority.cert_pem,
        "client.crt": client.cert_pem,
        "client.key": client.key_pem,
        "kubeconfig.yaml": yaml.safe_dump(kubeconfig).encode(),
        WEBHOOK_ADMISSION_CONFIGURATION: yaml.safe_dump(configuration).encode(),
    }
    for name, content in files.items():
        certs.write_private(directory / name, content)
    return directory / WEBHOOK_CLIENT_CA


def client_kubeconfig(*, server: str, pki: dict[str, Path], user: str = "admin") -> dict[str, object]:
    """A kubeconfig for the client certificate ``pki[<user>.crt]``."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(pki["ca.crt"])}}],
        "users": [
            {
                "name": user,
                "user": {"client-certificate": str(pki[f"{user}.crt"]), "client-key": str(pki[f"{user}.key"])},
            }
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }


# ---------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    """A loopback port nobody listens on now (the control plane's, the webhook server's in tests and the demo)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    """Something accepts connections on this loopback port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child must not dlopen after fork
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: ask the kernel to SIGKILL it when its parent dies."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def terminate(process: subprocess.Popen[bytes], *, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``; a no-op if it already has."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def build_binaries() -> Path:
    """The cached bin directory, building it first if needed (``AIO_CONTROL_PLANE_BIN`` overrides)."""
    override = os.environ.get("AIO_CONTROL_PLANE_BIN")
    if override:
        return Path(override)
    if shutil.which("go") is None and not _cached_bin_dirs():
        raise ControlPlaneError(
            "the Go toolchain is missing and no cached control plane exists: install Go >= 1.24 "
            "(e.g. 'apt-get install golang-go'), then run 'make control-plane'"
        )
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise ControlPlaneError(f"{BUILD_SCRIPT.name} failed (exit {result.returncode}); its output above says why")
    return Path(result.stdout.strip().splitlines()[-1])


def _cached_bin_dirs() -> list[Path]:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agent-identity-operator" / "control-plane"
    return list(root.glob("*/bin")) if root.exists() else []


@dataclass
class LocalControlPlane:
    """Start with :meth:`start`, always :meth:`stop` (or use :func:`running`)."""

    bin_dir: Path
    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="aio-cp-")))
    log_dir: Path | None = None
    audit: bool = False  # kube-apiserver writes an audit log of every write request (see AUDIT_POLICY)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    arguments: dict[str, list[str]] = field(default_factory=dict)
    etcd_url: str = field(init=False, default="")
    kubeconfig_path: Path = field(init=False)
    server: str = field(init=False)
    audit_log: Path | None = field(init=False, default=None)  # JSON lines, when ``audit``
    webhook_client_ca: Path = field(init=False)  # signs the certificate the API server shows webhooks

    def __post_init__(self) -> None:
        self.kubeconfig_path = self.work_dir / "admin.kubeconfig"
        self.log_dir = self.log_dir or self.work_dir / "logs"

    def start(self) -> None:
        assert self.log_dir is not None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        pki = write_pki(self.work_dir / "pki")
        self.webhook_client_ca = write_webhook_client(self.work_dir / "webhook-client")
        admission = self.work_dir / "webhook-client" / WEBHOOK_ADMISSION_CONFIGURATION
        etcd_port, etcd_peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = self.etcd_url = f"http://127.0.0.1:{etcd_port}"
        self.server = f"https://127.0.0.1:{api_port}"
        self.kubeconfig_path.write_text(yaml.safe_dump(client_kubeconfig(server=self.server, pki=pki)))
        self.kubeconfig_path.chmod(0o600)
        controller_manager = self.work_dir / "controller-manager.kubeconfig"
        controller_manager.write_text(yaml.safe_dump(client_kubeconfig(server=self.server, pki=pki, user="controller-manager")))
        controller_manager.chmod(0o600)

        self._spawn(
            "etcd",
            [
                f"--data-dir={self.work_dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{etcd_peer_port}",
                "--unsafe-no-fsync",  # a throwaway test store: durability buys nothing here
                "--log-level=warn",
            ],
        )
        self._wait_http(f"{etcd_url}/health", "etcd")
        audit: list[str] = []
        if self.audit:
            policy = self.work_dir / "audit-policy.yaml"
            policy.write_text(yaml.safe_dump(AUDIT_POLICY))
            self.audit_log = self.log_dir / "audit.log"
            audit = [
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=200",  # MB, then audit-<time>.log beside it
                "--audit-log-maxbackup=2",
            ]
        self._spawn(
            "kube-apiserver",
            [
                *audit,
                f"--admission-control-config-file={admission}",
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={self.work_dir / 'apiserver-certs'}",
                f"--tls-cert-file={pki['apiserver.crt']}",
                f"--tls-private-key-file={pki['apiserver.key']}",
                f"--client-ca-file={pki['ca.crt']}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki['sa.pub']}",
                f"--service-account-signing-key-file={pki['sa.key']}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=0",
            ],
        )
        self._wait_ready()
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={controller_manager}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--root-ca-file={pki['ca.crt']}",
                # As every real cluster: the token controller runs, and fills legacy token Secrets.
                f"--service-account-private-key-file={pki['sa.key']}",
                "--secure-port=0",
                "--controllers=*,-nodeipam,-nodelifecycle,-route,-service,-cloud-node-lifecycle",
                "--concurrent-gc-syncs=20",
                "--v=0",
            ],
        )
        self._wait_controllers()

    def _spawn(self, binary: str, args: list[str]) -> None:
        assert self.log_dir is not None
        self.arguments[binary] = args
        log = open(self.log_dir / f"{binary}.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.processes[binary] = subprocess.Popen(
            [str(self.bin_dir / binary), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - one async-signal-safe syscall, library preloaded
        )

    def restart(self, binary: str) -> None:
        """Stops one component and starts it again with the same arguments (chaos scenarios)."""
        self.stop_component(binary)
        self.start_component(binary)

    def stop_component(self, binary: str) -> None:
        terminate(self.processes.pop(binary), timeout=20)

    def start_component(self, binary: str) -> None:
        self._spawn(binary, self.arguments[binary])
        if binary == "kube-apiserver":
            self._wait_ready()

    def _etcd(self, path: str, body: dict[str, object]) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - our own loopback etcd
            f"{self.etcd_url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our own loopback etcd
            return dict(json.loads(response.read()))

    def compact_etcd(self) -> int:
        """Compacts etcd to its current revision, so watches resuming from older resourceVersions
        get 410 Gone and must relist; returns the revision."""
        revision = int(self._etcd("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})["header"]["revision"])
        self._etcd("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    def delete_from_etcd(self, key: str) -> None:
        """Deletes one object behind the API server's back (it is stopped): a change no watch sees."""
        self._etcd("/v3/kv/deleterange", {"key": base64.b64encode(key.encode()).decode()})

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                assert self.log_dir is not None
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise ControlPlaneError(f"{name} exited with {process.returncode}; last log lines:\n{tail}")

    def _wait(self, what: str, ready: Callable[[], bool]) -> None:
        """Polls ``ready`` (connection errors count as not ready) while every process stays alive."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(OSError):
                if ready():
                    return
            time.sleep(0.2)
        raise ControlPlaneError(f"{what} within {READY_TIMEOUT_S:.0f}s")

    def _wait_http(self, url: str, what: str) -> None:
        def healthy() -> bool:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                return bool(response.status == 200)

        self._wait(f"{what} did not become ready", healthy)

    def _admin_ssl_context(self) -> ssl.SSLContext:
        pki = self.work_dir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return context

    def _get(self, path: str) -> tuple[int, bytes]:
        request = urllib.request.Request(self.server + path)  # noqa: S310 - our own https loopback server
        try:
            with urllib.request.urlopen(request, timeout=3, context=self._admin_ssl_context()) as response:  # noqa: S310
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, b""

    def _wait_ready(self) -> None:
        self._wait("kube-apiserver was not ready", lambda: self._get("/readyz")[0] == 200)

    def _wait_controllers(self) -> None:
        """The ServiceAccount controller creating ``default/default`` proves the controller manager
        runs; the garbage collector starts with it."""
        self._wait(
            "kube-controller-manager did not start its controllers",
            lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
        )

    def stop(self) -> None:
        """Stops in reverse order, SIGTERM then SIGKILL; removes the work directory."""
        for name in reversed(list(self.processes)):
            terminate(self.processes[name], timeout=10)
        self.processes.clear()
        shutil.rmtree(self.work_dir, ignore_errors=True)


@contextlib.contextmanager
def running(*, log_dir: Path | None = None, audit: bool = False) -> Iterator[LocalControlPlane]:
    plane = LocalControlPlane(bin_dir=build_binaries(), log_dir=log_dir, audit=audit)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


# -- the operator's webhooks, served on loopback -------------------------------------------------


def register_webhooks(api: Any, *, url: str, ca_bundle: bytes, exclude_namespace: str | None = None) -> None:
    """Registers the operator's webhooks (served at ``url``) and waits until the API server calls them."""
    registration = client.AdmissionregistrationV1Api(api)
    mutating, validating = webhook_configurations(ca_bundle=ca_bundle, url=url, exclude_namespace=exclude_namespace)
    _delete_webhook_configurations(registration)
    policy, binding = pod_guard_policy()
    registration.create_validating_admission_policy(policy)
    registration.create_validating_admission_policy_binding(binding)
    registration.create_mutating_webhook_configuration(mutating)
    registration.create_validating_webhook_configuration(validating)
    wait_webhooks(api, active=True)


def unregister_webhooks(api: Any) -> None:
    """Removes both configurations (and the pod guard) and waits until the API server has stopped
    calling them."""
    if _delete_webhook_configurations(client.AdmissionregistrationV1Api(api)):
        wait_webhooks(api, active=False)


def _delete_webhook_configurations(registration: Any) -> bool:
    """The validating configuration first: while the API server still calls it without the
    mutating one, it refuses every unstamped create (wait_webhooks' probes included, and each such
    refusal counts in the API server's own rejection metrics)."""
    deleted = False
    for delete, name in (
        (registration.delete_validating_webhook_configuration, CONFIGURATION_NAME),
        (registration.delete_mutating_webhook_configuration, CONFIGURATION_NAME),
        (registration.delete_validating_admission_policy_binding, POD_GUARD),
        (registration.delete_validating_admission_policy, POD_GUARD),
    ):
        try:
            delete(name)
            deleted = True
        except ApiException as error:
            if error.status != 404:
                raise
    return deleted


def wait_webhooks(api: Any, *, active: bool, namespace: str = "default", timeout: float = 20.0) -> None:
    """The API server picks up webhook configurations asynchronously: probe with a dry-run create
    of a valid identity until the creator stamp of the mutating webhook appears (or is gone).
    A valid probe leaves no denial behind in anyone's metrics."""
    custom = client.CustomObjectsApi(api)
    probe = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentIdentity",
        "metadata": {"name": f"webhook-probe-{os.getpid()}", "namespace": namespace},
        "spec": {
            "task": "probe",
            "ttl": "1m",
            "scopes": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        },
    }
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, probe, dry_run="All")
            stamped = ANNOTATION_CREATOR in ((created.get("metadata") or {}).get("annotations") or {})
        except ApiException as error:  # refused by our webhook (a --require-profile operator): it is called
            if "AgentIdentity refused" not in str(error.body):
                raise
            stamped = True
        if stamped == active:
            time.sleep(0.3)  # the validating configuration arrives alongside the mutating one
            return
        time.sleep(0.1)
    raise ControlPlaneError(f"the webhooks did not become {'active' if active else 'inactive'} within {timeout:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kubeconfig", type=Path, required=True, help="where to write the admin kubeconfig")
    parser.add_argument("--log-dir", type=Path, default=None, help="where the components write their logs")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        with running(log_dir=args.log_dir) as plane:
            shutil.copyfile(plane.kubeconfig_path, args.kubeconfig)
            print(f"control plane ready at {plane.server}; kubeconfig: {args.kubeconfig}", flush=True)
            while True:
                time.sleep(1)
                plane._check_alive()
    except KeyboardInterrupt:
        pass
    except ControlPlaneError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
