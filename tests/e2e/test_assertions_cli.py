"""Verifiable delegation end to end: assertions signed by the operator, verified against the JWKS
it serves, across a key rotation and a restart; every CLI command; the Python API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest

from agent_identity.keys.signing import KeySet, new_key, sign
from agent_identity.kube.client import Kube, load_client_configuration
from agent_identity.sdk.client import AgentIdentities, IdentityRefused, user
from support.cluster import Cluster, make_identity, wait_for
from support.operator_process import OperatorProcess
from support.webhooks import free_port

REPO = Path(__file__).resolve().parents[2]
CM_GET_LIST = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]


class Signing:
    def __init__(self, operator: OperatorProcess, port: int, namespace: str) -> None:
        self.operator, self.port, self.namespace = operator, port, namespace
        self.issuer = f"http://127.0.0.1:{port}"

    def jwks(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.issuer}/.well-known/jwks.json", timeout=5) as response:
            return dict(json.loads(response.read()))


@pytest.fixture
def signing(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Signing]:
    port = free_port()
    process = OperatorProcess(
        kubeconfig=cluster.kubeconfig,
        namespace=namespace,
        log_dir=tmp_path,
        extra_args=[
            "--signing-namespace",
            namespace,
            "--http-port",
            str(port),
            "--http-listen",
            "127.0.0.1",
            "--issuer",
            f"http://127.0.0.1:{port}",
            "--trust-domain",
            "example.org",
            "--key-rotation",
            "20s",
        ],
    )
    process.start()
    current = Signing(process, port, namespace)
    wait_for("the JWKS served", lambda: _try(current.jwks))
    yield current
    process.stop()


def _try(call: Any) -> Any:
    try:
        return call()
    except OSError:
        return None


def assertion_of(cluster: Cluster, namespace: str, name: str) -> str:
    return cluster.token_secret(namespace, name)["assertion"]


def verify_with_pyjwt(token: str, jwks: dict[str, Any], audience: str, issuer: str) -> dict[str, Any]:
    """What any third-party verifier does, with plain pyjwt: signature, issuer, audience, required claims."""
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    required = {"require": ["exp", "iat", "nbf", "iss", "aud", "sub"]}
    return dict(jwt.decode(token, key.key, algorithms=["ES256"], audience=audience, issuer=issuer, options=required))


def test_assertions_verify_against_the_served_jwks_across_rotation_and_restart(
    cluster: Cluster, namespace: str, signing: Signing
) -> None:
    cluster.create_identity(make_identity("before", namespace, ttl="10m", token={"audiences": ["vault"]}))
    cluster.wait_phase(namespace, "before", "Ready")
    first = assertion_of(cluster, namespace, "before")
    first_kid = jwt.get_unverified_header(first)["kid"]
    claims = verify_with_pyjwt(first, signing.jwks(), "vault", signing.issuer)
    identity = cluster.get_identity(namespace, "before")
    assert identity is not None
    assert claims["exp"] == int(
        __import__("datetime").datetime.fromisoformat(identity["status"]["expiresAt"].replace("Z", "+00:00")).timestamp()
    )
    assert claims["iss"] == signing.issuer and claims["sub"] == "user:alice"
    assert claims["act"] == {"sub": f"spiffe://example.org/ns/{namespace}/agent/before"}

    # the 20 s rotation publishes a second key, which signs after its publish-ahead (2 s)
    wait_for("a second key published", lambda: len(signing.jwks()["keys"]) >= 2, timeout=40, interval=0.5)
    time.sleep(3)
    cluster.create_identity(make_identity("after", namespace, ttl="10m", token={"audiences": ["vault"]}))
    cluster.wait_phase(namespace, "after", "Ready")
    second = assertion_of(cluster, namespace, "after")
    assert jwt.get_unverified_header(second)["kid"] != first_kid
    jwks = signing.jwks()
    for token in (first, second):  # the retired key stays published
        assert verify_with_pyjwt(token, jwks, "vault", signing.issuer)["task"].startswith("test task for")

    # the ConfigMap mirror matches what is served
    mirror = cluster.core.read_namespaced_config_map("agent-identity-jwks", namespace)
    assert json.loads(mirror.data["jwks.json"]) == jwks

    # keys survive a restart: same kids served again, old assertions still verify
    signing.operator.stop()
    signing.operator.start()
    wait_for("the JWKS served again", lambda: _try(signing.jwks))
    assert {k["kid"] for k in signing.jwks()["keys"]} >= {k["kid"] for k in jwks["keys"]}
    assert verify_with_pyjwt(first, signing.jwks(), "vault", signing.issuer)["sub"] == "user:alice"
    discovery = json.loads(urllib.request.urlopen(f"{signing.issuer}/.well-known/openid-configuration", timeout=5).read())
    assert discovery["jwks_uri"] == f"{signing.issuer}/.well-known/jwks.json"


def test_the_act_chain_of_a_three_level_delegation_matches_the_identity_chain(
    cluster: Cluster, namespace: str, signing: Signing
) -> None:
    cluster.create_identity(make_identity("planner", namespace, ttl="10m"))
    cluster.wait_phase(namespace, "planner", "Ready")
    cluster.create_identity(make_identity("crawler", namespace, ttl="5m", delegator={"kind": "AgentIdentity", "name": "planner"}))
    cluster.wait_phase(namespace, "crawler", "Ready")
    cluster.create_identity(
        make_identity(
            "fetcher",
            namespace,
            ttl="1m",
            delegator={"kind": "AgentIdentity", "name": "crawler"},
            scopes=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        )
    )
    status = cluster.wait_phase(namespace, "fetcher", "Ready")["status"]
    claims = jwt.decode(assertion_of(cluster, namespace, "fetcher"), options={"verify_signature": False})
    agent = f"spiffe://example.org/ns/{namespace}/agent"
    assert status["delegationChain"] == ["user:alice", f"agent:{namespace}/planner", f"agent:{namespace}/crawler"]
    assert claims["sub"] == "user:alice"
    assert claims["act"] == {"sub": f"{agent}/fetcher", "act": {"sub": f"{agent}/crawler", "act": {"sub": f"{agent}/planner"}}}
    assert claims["delegation_chain"] == status["delegationChain"]
    assert claims["scope"] == "configmaps:get"


def kubectl_agent(
    cluster: Cluster, *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: PLW1510 - the tests read returncode themselves
        [sys.executable, "-m", "agent_identity.sdk.cli", "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=cwd,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO / "operator")},
    )


def test_every_cli_command_end_to_end(cluster: Cluster, namespace: str, signing: Signing, tmp_path: Path) -> None:
    ns = ["-n", namespace]
    issued = kubectl_agent(
        cluster,
        *ns,
        "issue",
        "--name",
        "cli-planner",
        "--task",
        "triage",
        "--ttl",
        "10m",
        "--scope",
        "get,list:configmaps",
        "--delegator",
        "user:alice",
        "--audience",
        "vault",
        cwd=tmp_path,
    )
    assert issued.returncode == 0, issued.stderr
    assert f"{namespace}/cli-planner Ready" in issued.stdout and "user:alice -> cli-planner" in issued.stdout
    kubeconfig = tmp_path / "cli-planner.kubeconfig"
    assert kubeconfig.stat().st_mode & 0o777 == 0o600
    as_json = kubectl_agent(
        cluster,
        *ns,
        "-o",
        "json",
        "issue",
        "--name",
        "cli-crawler",
        "--task",
        "fetch",
        "--ttl",
        "1m",
        "--scope",
        "get:configmaps",
        "--delegator",
        "agent:cli-planner",
        "--audience",
        "vault",
        cwd=tmp_path,
    )
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["delegationChain"] == ["user:alice", f"agent:{namespace}/cli-planner"]
    env_lines = kubectl_agent(
        cluster,
        *ns,
        "-o",
        "env",
        "issue",
        "--name",
        "cli-env",
        "--task",
        "env",
        "--ttl",
        "1m",
        "--scope",
        "get:configmaps",
        cwd=tmp_path,
    )
    assert env_lines.stdout.startswith("export KUBECONFIG=") and "export AGENT_TOKEN=" in env_lines.stdout

    tree = kubectl_agent(cluster, *ns, "tree")
    assert tree.returncode == 0 and "cli-planner  Ready" in tree.stdout and "└── cli-crawler  Ready" in tree.stdout
    tree_json = json.loads(kubectl_agent(cluster, *ns, "-o", "json", "tree", "cli-planner").stdout)
    assert tree_json[0]["delegates"][0]["name"] == "cli-crawler"
    after_the_verb = kubectl_agent(cluster, "tree", "cli-planner", "-n", namespace, "-o", "json")  # as kubectl takes them
    assert after_the_verb.returncode == 0, after_the_verb.stderr
    assert [node["name"] for node in json.loads(after_the_verb.stdout)] == ["cli-planner"]

    audit = kubectl_agent(cluster, *ns, "-o", "yaml", "audit", "cli-crawler")
    assert "task: fetch" in audit.stdout and f"agent:{namespace}/cli-planner" in audit.stdout

    wrong_audience = kubectl_agent(cluster, "whoami", "-", stdin=document["token"])
    assert wrong_audience.returncode == 1 and 'token audiences ["vault"] is invalid' in wrong_audience.stderr
    whoami = kubectl_agent(cluster, "whoami", "-", "--audience", "vault", stdin=document["token"])
    assert whoami.returncode == 0, whoami.stderr
    assert f"system:serviceaccount:{namespace}:aid-cli-crawler" in whoami.stdout and "chain:" in whoami.stdout

    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(signing.jwks()))
    served = f"{signing.issuer}/.well-known/jwks.json"
    expected = ["--issuer", signing.issuer, "--audience", "vault"]
    verified = kubectl_agent(cluster, "verify", document["assertion"], "--jwks", served, *expected)
    assert verified.returncode == 0, verified.stderr
    assert "valid assertion" in verified.stdout and "on behalf of: user:alice" in verified.stdout
    for insecure in (
        ["--insecure-any-issuer", "--audience", "vault"],
        ["--issuer", signing.issuer, "--insecure-any-audience"],
        ["--insecure-any-issuer", "--insecure-any-audience"],
    ):
        opted_out = kubectl_agent(cluster, "verify", document["assertion"], "--jwks", str(jwks_file), *insecure)
        assert opted_out.returncode == 0 and "valid assertion" in opted_out.stdout, (insecure, opted_out.stderr)

    header, payload, signature = document["assertion"].split(".")
    known = KeySet((new_key(datetime.now(UTC)),))  # a key set the verifier trusts, for an expired assertion
    known_file = tmp_path / "jwks-known.json"
    known_file.write_text(json.dumps(known.jwks()))
    stale = {"sub": "x", "iss": signing.issuer, "aud": "vault", "exp": 1, "iat": 0, "nbf": 0}
    bad_cases = {
        "assertion rejected: bad signature": [f"{header}.{payload[:-4]}AAAA.{signature}", "--jwks", str(jwks_file), *expected],
        "assertion rejected: wrong audience": [
            document["assertion"],
            "--jwks",
            str(jwks_file),
            "--issuer",
            signing.issuer,
            "--audience",
            "elsewhere",
        ],
        "assertion rejected: wrong issuer": [
            document["assertion"],
            "--jwks",
            str(jwks_file),
            "--issuer",
            "https://elsewhere.example",
            "--audience",
            "vault",
        ],
        "assertion rejected: unknown signing key": [sign(stale, new_key(datetime.now(UTC))), "--jwks", str(jwks_file), *expected],
        "assertion rejected: expired": [sign(stale, known.keys[0]), "--jwks", str(known_file), *expected],
        "cannot read the JWKS": [document["assertion"], "--jwks", str(tmp_path / "missing.json"), *expected],
        "verify needs --issuer": [document["assertion"], "--jwks", served, "--audience", "vault"],
        "verify needs --audience": [document["assertion"], "--jwks", served, "--issuer", signing.issuer],
    }
    for words, arguments in bad_cases.items():
        rejected = kubectl_agent(cluster, "verify", *arguments)
        assert rejected.returncode == 1 and words in rejected.stderr, (words, rejected.stderr)

    forged = kubectl_agent(cluster, "whoami", "not-a-token")
    assert forged.returncode == 1 and "token rejected by the API server" in forged.stderr

    revoked = kubectl_agent(cluster, *ns, "revoke", "cli-planner")
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    wait_for("the delegate gone with its delegator", lambda: cluster.get_identity(namespace, "cli-crawler") is None, timeout=20)
    missing = kubectl_agent(cluster, *ns, "revoke", "cli-planner")
    assert missing.returncode == 1 and f"AgentIdentity {namespace}/cli-planner not found" in missing.stderr
    bad_scope = kubectl_agent(cluster, *ns, "issue", "--task", "x", "--ttl", "1m", "--scope", "configmaps")
    assert bad_scope.returncode == 1 and "expected VERBS:RESOURCES" in bad_scope.stderr
    bad_ttl = kubectl_agent(cluster, *ns, "issue", "--task", "x", "--ttl", "1d", "--scope", "get:configmaps")
    assert bad_ttl.returncode == 1 and "ttl must be a duration" in bad_ttl.stderr


def test_the_python_api_issues_delegates_and_revokes_on_exit(cluster: Cluster, namespace: str, signing: Signing) -> None:
    agents = AgentIdentities(namespace=namespace, kube=Kube(load_client_configuration(str(cluster.kubeconfig))))
    with agents.identity(task="plan", ttl="5m", delegator=user("alice"), scopes=CM_GET_LIST) as planner:
        assert cluster.token_review(planner.token)["authenticated"] is True
        assert planner.assertion and "token" not in repr(planner)
        with agents.delegated(
            planner, task="fetch", ttl="1m", scopes=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
        ) as crawler:
            assert crawler.delegation_chain == ("user:alice", f"agent:{namespace}/{planner.name}")
        assert cluster.get_identity(namespace, crawler.name) is None or wait_for(
            "crawler revoked", lambda: cluster.get_identity(namespace, crawler.name) is None
        )
        with pytest.raises(IdentityRefused, match=r"delegate-within-delegator"):
            agents.delegate(
                planner, task="greedy", ttl="1m", scopes=[{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
            )
    wait_for("planner revoked", lambda: cluster.get_identity(namespace, planner.name) is None)


def test_the_orchestrator_example_runs(cluster: Cluster, namespace: str, signing: Signing) -> None:
    result = subprocess.run(  # noqa: PLW1510 - the test reads returncode itself
        [sys.executable, str(REPO / "examples" / "python_orchestrator.py"), namespace],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PYTHONPATH": str(REPO / "operator")},
    )
    assert result.returncode == 0, result.stderr
    assert "crawler sees configmaps: ['agent-identity-jwks', 'kube-root-ca.crt']" in result.stdout
    assert "planner" in result.stdout and "revoked" in result.stdout
