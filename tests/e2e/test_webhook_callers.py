"""The webhooks answer the API server, not whoever reaches their port.

Any pod that can reach the webhook port could otherwise POST AdmissionReviews of its own making:
get seals for any creator it claims, learn other users' RBAC from refusal texts, and keep the
review workers busy. Given ``--webhook-client-ca``, the operator completes a TLS handshake only
with a client holding a certificate that CA signed, which the API server shows (its
AdmissionConfiguration; the local control plane gives it one, as scripts/kind-e2e.sh gives kind's,
and every operator in this suite requires it).
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import uuid
from pathlib import Path

import pytest
import yaml

from agent_identity.keys import certs
from support import operator_process
from support.cluster import GROUP, PLURAL, VERSION, Cluster, make_identity
from support.webhooks import WEBHOOK_HOST, operator_with_webhooks

pytestmark = pytest.mark.e2e


def crafted_review(namespace: str) -> bytes:
    identity = make_identity("crafted", namespace, delegator={"kind": "User", "name": "root"})
    request = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": GROUP, "version": VERSION, "kind": "AgentIdentity"},
        "resource": {"group": GROUP, "version": VERSION, "resource": PLURAL},
        "operation": "CREATE",
        "namespace": namespace,
        "name": "crafted",
        "userInfo": {"username": "root", "groups": ["system:masters", "system:authenticated"]},
        "object": identity,
    }
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}).encode()


def post(port: int, body: bytes, client_cert: tuple[Path, Path] | None) -> int:
    """POSTs ``body`` to the mutating webhook as a client of our own; the HTTP status."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    if client_cert is not None:
        context.load_cert_chain(*client_cert)
    connection = http.client.HTTPSConnection(WEBHOOK_HOST, port, context=context, timeout=10)
    try:
        connection.request("POST", "/mutate-identity", body, {"Content-Type": "application/json"})
        return connection.getresponse().status
    finally:
        connection.close()


def kubeconfig_certificate(kubeconfig: Path, directory: Path) -> tuple[Path, Path]:
    """The cluster admin's client certificate and key (signed by the cluster's CA), as files."""
    (entry,) = yaml.safe_load(kubeconfig.read_text())["users"][:1]
    user = entry["user"]
    paths = []
    for field in ("client-certificate", "client-key"):
        if field in user:
            paths.append(Path(user[field]))
        else:
            paths.append(certs.write_private(directory / field, base64.b64decode(user[f"{field}-data"])))
    return paths[0], paths[1]


def test_a_review_from_anyone_but_the_api_server_is_never_answered(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    """Attack: a pod posts a crafted review claiming ``system:masters``, with no client certificate,
    with one of its own CA's, and with one the cluster's own CA signed (a user's)."""
    if operator_process.WEBHOOK_CLIENT_CA is None:
        pytest.skip("this cluster's API server shows webhooks no client certificate (AGENT_IDENTITY_WEBHOOK_CLIENT_CA unset)")
    own = certs.new_authority("mallory-ca")
    mallory = certs.issue(own, common_name="kube-apiserver-webhook-client")
    user = kubeconfig_certificate(cluster.kubeconfig, tmp_path)
    own_cert = (
        certs.write_private(tmp_path / "m.crt", mallory.cert_pem),
        certs.write_private(tmp_path / "m.key", mallory.key_pem),
    )
    with operator_with_webhooks(cluster, namespace, tmp_path) as process:
        port = int(process.extra_args[process.extra_args.index("--webhook-port") + 1])
        for client_cert in (None, own_cert, user):
            with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
                post(port, crafted_review(namespace), client_cert)
        # The API server's own calls are answered: the identity is stamped with its creator.
        stored = cluster.create_identity(make_identity("genuine", namespace))
        assert "agentidentity.dev/creator" in stored["metadata"]["annotations"]
