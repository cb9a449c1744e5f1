"""``kubectl agent``: issue, inspect, verify and revoke agent identities (console script
``kubectl-agent``, so kubectl finds it as a plugin). Human-readable by default, ``-o json`` or
``-o yaml`` for scripts, as kubectl does; the global flags (``-n``, ``--kubeconfig``, ``-o``) go before or
after the verb, as kubectl's do. Errors go to stderr with exit code 1.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from agent_identity.api.durations import format_duration, parse_timestamp
from agent_identity.keys.signing import InsecureVerification, InvalidAssertion, verify
from agent_identity.keys.subjects import SECRET_NAME as SUBJECTS_SECRET
from agent_identity.keys.subjects import SubjectKey, is_person, key_field, reveal
from agent_identity.keys.trail import Line, parse_lines, verify_trail
from agent_identity.kube.client import Kube, KubeError, load_client_configuration
from agent_identity.sdk.actions import read_events, trail_of
from agent_identity.sdk.client import AgentIdentities, Credentials, IdentityRefused, done, heartbeat


class CommandError(Exception):
    """A user-facing failure: printed as ``error: ...``, exit code 1."""


def parse_scope(text: str) -> dict[str, Any]:
    """``get,list:configmaps,pods[:apps][:name1,name2]`` -> one RBAC rule."""
    parts = text.split(":")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise CommandError(f"--scope {text!r}: expected VERBS:RESOURCES[:GROUP[:NAMES]], e.g. get,list:configmaps")
    rule: dict[str, Any] = {
        "verbs": parts[0].split(","),
        "resources": parts[1].split(","),
        "apiGroups": [parts[2] if len(parts) > 2 else ""],
    }
    if len(parts) > 3 and parts[3]:
        rule["resourceNames"] = parts[3].split(",")
    return rule


def parse_delegator(text: str) -> dict[str, str]:
    """``user:alice``, ``agent:planner`` or ``serviceaccount:ns/name``."""
    kind, _, name = text.partition(":")
    kinds = {"user": "User", "agent": "AgentIdentity", "serviceaccount": "ServiceAccount", "sa": "ServiceAccount"}
    if kind not in kinds or not name:
        raise CommandError(f"--delegator {text!r}: expected user:NAME, agent:NAME or serviceaccount:NAMESPACE/NAME")
    if kinds[kind] == "ServiceAccount":
        namespace, _, account = name.partition("/")
        if not account:
            raise CommandError(f"--delegator {text!r}: a ServiceAccount is serviceaccount:NAMESPACE/NAME")
        return {"kind": "ServiceAccount", "namespace": namespace, "name": account}
    return {"kind": kinds[kind], "name": name}


def time_left(expires_at: str | None, now: datetime) -> str:
    if not expires_at:
        return "-"
    left = parse_timestamp(expires_at) - now
    return format_duration(left) if left.total_seconds() > 0 else "expired"


def emit(document: Any, output: str | None, human: str) -> None:
    if output == "json":
        print(json.dumps(document, indent=2, default=str))
    elif output == "yaml":
        print(yaml.safe_dump(document, sort_keys=False, default_flow_style=False), end="")
    else:
        print(human)


# -- commands ---------------------------------------------------------------------------------------


def cmd_issue(args: argparse.Namespace, agents: AgentIdentities) -> None:
    try:
        credentials = agents.issue(
            task=args.task,
            ttl=args.ttl,
            scopes=[parse_scope(scope) for scope in args.scope],
            delegator=parse_delegator(args.delegator) if args.delegator else None,
            name=args.name,
            audiences=args.audience or None,
            profile=args.profile,
            timeout=args.wait,
        )
    except IdentityRefused as refused:
        raise CommandError(str(refused)) from None
    kubeconfig_path = Path(args.kubeconfig_out or f"{credentials.name}.kubeconfig")
    with os.fdopen(os.open(kubeconfig_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(credentials.kubeconfig)  # created private: it holds the token
    if args.output == "env":
        print(f"export KUBECONFIG={kubeconfig_path.resolve()}")
        print(f"export AGENT_TOKEN={credentials.token}")
        if credentials.assertion:
            print(f"export AGENT_ASSERTION={credentials.assertion}")
        return
    document = _credentials_document(credentials, kubeconfig_path)
    human = (
        f"{credentials.namespace}/{credentials.name} Ready, expires {document['expiresAt']}\n"
        f"  chain: {' -> '.join([*credentials.delegation_chain, credentials.name])}\n"
        f"  kubeconfig: {kubeconfig_path} (mode 0600)"
    )
    emit(document, args.output, human)


def _credentials_document(credentials: Credentials, kubeconfig_path: Path) -> dict[str, Any]:
    return {
        "namespace": credentials.namespace,
        "name": credentials.name,
        "expiresAt": credentials.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "delegationChain": list(credentials.delegation_chain),
        "kubeconfigPath": str(kubeconfig_path),
        "token": credentials.token,
        "assertion": credentials.assertion,
    }


def cmd_tree(args: argparse.Namespace, agents: AgentIdentities) -> None:
    items = agents.kube.list_identities(args.namespace)
    by_parent: dict[str | None, list[dict[str, Any]]] = {}
    names = {item["metadata"]["name"] for item in items}
    for item in sorted(items, key=lambda i: i["metadata"]["name"]):
        delegator = item["spec"].get("delegator") or {}
        parent = delegator.get("name") if delegator.get("kind") == "AgentIdentity" and delegator.get("name") in names else None
        by_parent.setdefault(parent, []).append(item)
    now = datetime.now(UTC)
    roots = [i for i in by_parent.get(None, []) if not args.name or i["metadata"]["name"] == args.name]
    if args.name and not roots:
        roots = [i for i in items if i["metadata"]["name"] == args.name]
        if not roots:
            raise CommandError(f"AgentIdentity {args.namespace}/{args.name} not found")

    def node(item: dict[str, Any]) -> dict[str, Any]:
        status = item.get("status") or {}
        delegator = item["spec"].get("delegator") or {}
        return {
            "name": item["metadata"]["name"],
            "phase": status.get("phase", "Pending"),
            "timeLeft": time_left(status.get("expiresAt"), now),
            "delegator": f"{delegator.get('kind', '-')}/{delegator.get('name', '-')}",
            "delegates": [node(child) for child in by_parent.get(item["metadata"]["name"], [])],
        }

    tree = [node(root) for root in roots]
    lines: list[str] = []

    def draw(entry: dict[str, Any], prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└── " if last else "├── ")
        lines.append(
            f"{prefix}{branch}{entry['name']}  {entry['phase']}  {entry['timeLeft']}"
            + (f"  (for {entry['delegator']})" if top else "")
        )
        child_prefix = prefix + ("" if top else ("    " if last else "│   "))
        for index, child in enumerate(entry["delegates"]):
            draw(child, child_prefix, index == len(entry["delegates"]) - 1, False)

    for root in tree:
        draw(root, "", True, True)
    emit(tree, args.output, "\n".join(lines) or f"no AgentIdentities in {args.namespace}")


def cmd_revoke(args: argparse.Namespace, agents: AgentIdentities) -> None:
    if not agents.revoke(args.name):
        raise CommandError(f"AgentIdentity {args.namespace}/{args.name} not found")
    emit(
        {"revoked": f"{args.namespace}/{args.name}"},
        args.output,
        f"{args.namespace}/{args.name} revoked: its credentials and its delegates' are being deleted",
    )


def cmd_done(args: argparse.Namespace, agents: AgentIdentities) -> None:
    """Without a name: the identity of the credential in use (inside an agent's pod, its own)."""
    try:
        if args.name:
            agents.done(args.name)
            namespace, name = agents.namespace, args.name
        else:
            namespace, name = done(agents.kube)
    except IdentityRefused as error:
        raise CommandError(str(error)) from None
    emit(
        {"done": f"{namespace}/{name}"},
        args.output,
        f"{namespace}/{name} done: its credentials and its delegates' are being retired",
    )


def cmd_heartbeat(args: argparse.Namespace, agents: AgentIdentities) -> None:
    """The identity of the credential in use (inside an agent's pod, its own) is alive."""
    try:
        namespace, name = heartbeat(agents.kube)
    except IdentityRefused as error:
        raise CommandError(str(error)) from None
    emit({"renewed": f"{namespace}/{name}"}, args.output, f"{namespace}/{name}: heartbeat renewed")


def _read_input(value: str) -> str:
    """``-`` is stdin, an existing file is read, anything else is the value itself."""
    if value == "-":
        return sys.stdin.read().strip()
    try:
        return Path(value).read_text().strip()
    except OSError:  # not a file (a token is often longer than a file name may be)
        return value.strip()


def _load_jwks(source: str) -> dict[str, Any]:
    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=10) as response:  # noqa: S310 - the user's own URL
                return dict(json.loads(response.read()))
        return dict(json.loads(Path(source).read_text()))
    except (OSError, ValueError) as error:
        raise CommandError(f"cannot read the JWKS from {source}: {error}") from None


def _verify_expectations(args: argparse.Namespace) -> None:
    """``--issuer`` and ``--audience`` are required unless their ``--insecure-any-*`` opt-out is given."""
    if not args.issuer and not args.insecure_any_issuer:
        raise CommandError(
            "verify needs --issuer, the iss you trust (the operator's --issuer URL); without it an assertion"
            " for any issuer signed by a key in the JWKS would pass. --insecure-any-issuer skips the check"
        )
    if not args.audience and not args.insecure_any_audience:
        raise CommandError(
            "verify needs --audience, the aud you expect (your service, as in spec.token.audiences); without it"
            " an assertion issued for another service would pass. --insecure-any-audience skips the check"
        )


def cmd_verify(args: argparse.Namespace, agents: AgentIdentities | None) -> None:
    _verify_expectations(args)  # before reading anything, so a forgotten flag is said first
    token = _read_input(args.assertion)
    try:
        claims = verify(
            token,
            jwks=_load_jwks(args.jwks),
            issuer=args.issuer,
            audience=args.audience,
            insecure_any_issuer=args.insecure_any_issuer,
            insecure_any_audience=args.insecure_any_audience,
        )
    except InsecureVerification as misuse:
        raise CommandError(str(misuse)) from None
    except InvalidAssertion as invalid:
        raise CommandError(f"assertion rejected: {invalid}") from None
    now = datetime.now(UTC)
    left = format_duration(datetime.fromtimestamp(claims["exp"], UTC) - now)
    kube = claims.get("kubernetes", {})
    document = {
        "valid": True,
        "agent": (claims.get("act") or {}).get("sub", claims["sub"]),
        "onBehalfOf": claims["sub"],
        "delegationChain": claims.get("delegation_chain", []),
        "scope": claims.get("scope", ""),
        "task": claims.get("task"),
        "profile": claims.get("profile"),
        "timeLeft": left,
        "claims": claims,
    }
    human = (
        f"valid assertion for {kube.get('namespace')}/{kube.get('name')}\n"
        f"  agent:       {document['agent']}\n  on behalf of: {claims['sub']}\n"
        f"  chain:       {' -> '.join(document['delegationChain'])}\n  scope:       {document['scope']}\n"
        f"  task:        {claims.get('task')}\n  time left:   {left}"
    )
    emit(document, args.output, human)


def cmd_whoami(args: argparse.Namespace, agents: AgentIdentities) -> None:
    token = _read_input(args.token)
    status = agents.kube.token_review(token, args.audience or None)
    if not status.get("authenticated"):
        raise CommandError(f"token rejected by the API server: {status.get('error') or 'not authenticated'}")
    username = str(status.get("user", {}).get("username", ""))
    document: dict[str, Any] = {"username": username, "authenticated": True}
    prefix = "system:serviceaccount:"
    namespace, _, account = username.removeprefix(prefix).partition(":")
    if username.startswith(prefix) and account.startswith("aid-"):
        identity = agents.kube.get_identity(namespace, account.removeprefix("aid-"))
        if identity:
            document.update(_provenance(identity))
    human = f"{username}" + (
        f"\n  identity: {document['namespace']}/{document['name']}  {document['phase']}  {document['timeLeft']} left"
        f"\n  chain:    {' -> '.join(document['delegationChain'])}\n  task:     {document['task']}"
        if "name" in document
        else ""
    )
    emit(document, args.output, human)


def _provenance(identity: dict[str, Any]) -> dict[str, Any]:
    status, metadata = identity.get("status") or {}, identity["metadata"]
    creator = (metadata.get("annotations") or {}).get("agentidentity.dev/creator")
    return {
        "namespace": metadata["namespace"],
        "name": metadata["name"],
        "uid": metadata["uid"],
        "creator": json.loads(creator) if creator else None,
        "delegator": identity["spec"].get("delegator"),
        "delegationChain": status.get("delegationChain") or [],
        "task": identity["spec"]["task"],
        "profile": status.get("profile") or identity["spec"].get("profile"),
        "riskLevel": status.get("riskLevel"),
        "scopes": identity["spec"]["scopes"],
        "phase": status.get("phase", "Pending"),
        "createdAt": metadata["creationTimestamp"],
        "issuedAt": status.get("issuedAt"),
        "expiresAt": status.get("expiresAt"),
        "timeLeft": time_left(status.get("expiresAt"), datetime.now(UTC)),
    }


def cmd_audit(args: argparse.Namespace, agents: AgentIdentities) -> None:
    identity = agents.kube.get_identity(args.namespace, args.name)
    if identity is None:
        raise CommandError(f"AgentIdentity {args.namespace}/{args.name} not found")
    document = _provenance(identity)
    creator = document["creator"] or {}
    human = "\n".join(
        f"{key + ':':<16}{value}"
        for key, value in (
            ("identity", f"{document['namespace']}/{document['name']} ({document['uid']})"),
            ("creator", creator.get("username", "not recorded (no admission webhook)")),
            ("chain", " -> ".join(document["delegationChain"]) or "-"),
            ("task", document["task"]),
            ("profile", f"{document['profile'] or '-'} (risk {document['riskLevel'] or '-'})"),
            ("phase", document["phase"]),
            ("created", document["createdAt"]),
            ("issued", document["issuedAt"] or "-"),
            ("expires", f"{document['expiresAt'] or '-'} ({document['timeLeft']})"),
        )
    )
    emit(document, args.output, human)


def _stored_checkpoints(value: str) -> list[str]:
    """``--checkpoint``: a checkpoint (JWS), a shard's field of the ConfigMap agent-identity-audit,
    or that whole ConfigMap as JSON (``kubectl get configmap agent-identity-audit -o json``)."""
    text = _read_input(value)
    if not text.startswith("{"):
        return [text]
    try:
        document = json.loads(text)
    except ValueError as error:
        raise CommandError(f"--checkpoint {value}: not JSON: {error}") from None
    fields = [json.loads(field) for field in (document.get("data") or {}).values()] if "data" in document else [document]
    return [str(field["checkpoint"]) for field in fields if field.get("checkpoint")]


def _trail_lines(files: list[str]) -> Iterator[Line]:
    """The files' lines, one at a time (a trail may be larger than memory)."""
    for file in files:
        try:
            with Path(file).open(encoding="utf-8", errors="replace") as stream:
                yield from (Line(f"{file}:{number}", text) for number, text in enumerate(stream, 1))
        except OSError as error:
            raise CommandError(f"cannot read {file}: {error}") from None


def cmd_audit_verify(args: argparse.Namespace, agents: AgentIdentities | None) -> None:
    """Exit 1 naming the first break of the trail; the notes (unsigned tail, a writer that took
    over) are printed either way."""
    latest = [token for value in args.checkpoint or [] for token in _stored_checkpoints(value)]
    report = verify_trail(_trail_lines(args.files), jwks=_load_jwks(args.jwks), latest=latest)
    shards = {shard: {"records": count, "signedUpTo": report.signed.get(shard, 0)} for shard, count in report.records.items()}
    document = {
        "verified": report.ok,
        "shards": shards,
        "problems": [vars(problem) for problem in report.problems],
        "notes": [vars(note) for note in report.notes],
    }
    summary = [f"shard {shard}: {v['records']} records, signed up to seq {v['signedUpTo']}" for shard, v in shards.items()]
    notes = [f"note: {note.where}: {note.message}" for note in report.notes]
    if not report.ok:
        if args.output:
            emit(document, args.output, "")
        problem = report.problems[0]
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise CommandError(f"trail NOT verified: {problem.where}: {problem.message}{more}")
    emit(document, args.output, "\n".join(["trail verified", *summary, *notes]))


def _subjects_secret(agents: AgentIdentities | None, namespace: str) -> dict[str, Any]:
    assert agents is not None
    secret = agents.kube.get_stored("Secret", namespace, SUBJECTS_SECRET)
    if secret is None:
        raise CommandError(f"no Secret {namespace}/{SUBJECTS_SECRET}: no person was recorded (or --operator-namespace is wrong)")
    return secret


def cmd_audit_forget(args: argparse.Namespace, agents: AgentIdentities | None) -> None:
    """Destroys the person's key: their records stay as written (the chain verifies), unreadable."""
    if not is_person(args.principal):
        raise CommandError(f"{args.principal!r}: only people (user:NAME) are pseudonymised and can be forgotten")
    assert agents is not None
    field = key_field(args.principal)
    for _ in range(5):
        secret = _subjects_secret(agents, args.operator_namespace)
        data = secret.get("data") or {}
        if field not in data:
            raise CommandError(f"{args.principal} has no key (never recorded, or forgotten already)")
        subject = SubjectKey.from_json(base64.b64decode(data[field]).decode())
        secret["data"] = {name: value for name, value in data.items() if name != field}
        try:
            agents.kube.store(secret)  # at the resourceVersion read: a 409 reads again
        except KubeError as error:
            if error.conflict:
                continue
            raise
        document = {"forgotten": args.principal, "subject": f"subject:{subject.id}"}
        emit(document, args.output, f"{args.principal} forgotten: the key of subject:{subject.id} is destroyed")
        return
    raise CommandError(f"the Secret {SUBJECTS_SECRET} keeps changing: try again")


def cmd_audit_reveal(args: argparse.Namespace, agents: AgentIdentities | None) -> None:
    """The records of a trail with each person whose key is kept written out (needs read access to
    the operator's Secret agent-identity-audit-subjects); forgotten ones stay unreadable."""
    data = _subjects_secret(agents, args.operator_namespace).get("data") or {}
    kept = [SubjectKey.from_json(base64.b64decode(value).decode()) for value in data.values()]
    keys = {subject.id: subject for subject in kept}
    for _, record in parse_lines(_trail_lines(args.files)):
        print(json.dumps(reveal(record, keys), separators=(",", ":")))


def cmd_trail(args: argparse.Namespace, agents: AgentIdentities | None) -> None:
    """What the agent did, from the API server's audit log: 403s and requests after retirement marked."""
    assert agents is not None
    identity = agents.kube.get_identity(args.namespace, args.name)
    if identity is None:
        raise CommandError(f"AgentIdentity {args.namespace}/{args.name} not found (retired and no longer retained?)")
    try:
        trail = trail_of(identity, read_events(Path(file) for file in args.audit_log))
    except (ValueError, OSError) as error:
        raise CommandError(str(error)) from None
    lines = [
        f"identity:  {trail.namespace}/{trail.name} (ServiceAccount uid {trail.service_account_uid})",
        f"task:      {trail.task}",
        f"chain:     {' -> '.join(trail.delegation_chain) or '-'}",
        f"retired:   {trail.retired_at or '-'}",
        f"requests:  {len(trail.requests)}, {trail.forbidden} refused (403), {trail.after_retirement} after retirement",
    ]
    for request in trail.requests:
        marks = [mark for mark, on in (("REFUSED", request.forbidden), ("AFTER RETIREMENT", request.after_retirement)) if on]
        flag = f"  <-- {', '.join(marks)}" if marks else ""
        lines.append(f"{request.time}  {request.code}  {request.verb:<7} {request.target}{flag}")
    emit(trail.to_json(), args.output, "\n".join(lines))


def _add_global_flags(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The flags kubectl takes anywhere on the line. The top-level parser holds their defaults;
    each verb's parser accepts them too (``default=SUPPRESS``: absent, they leave the value given
    before the verb alone; given after it, they win, as in kubectl)."""

    def default(value: str | None) -> str | None:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--kubeconfig", default=default(None), help="kubeconfig (default: $KUBECONFIG, then ~/.kube/config)")
    parser.add_argument("-n", "--namespace", default=default("default"), help="the namespace (default: default)")
    parser.add_argument("-o", "--output", default=default(None), choices=["json", "yaml", "env"], help="machine-readable output")


def _add_audit_verbs(commands: Any, global_flags: argparse.ArgumentParser) -> None:
    """``audit verify``, ``audit forget`` and ``audit reveal``: the trail's verbs."""
    trail = commands.add_parser(
        "audit verify", help="verify an audit trail offline: hash chain, signed checkpoints", parents=[global_flags]
    )
    trail.add_argument(
        "files", nargs="+", metavar="FILE", help="the trail, oldest file first (audit.log.2 audit.log.1 audit.log)"
    )
    trail.add_argument("--jwks", required=True, help="URL or file of the operator's JWKS")
    trail.add_argument(
        "--checkpoint",
        action="append",
        help="the latest checkpoint kept in the cluster (file, - or the value; the ConfigMap agent-identity-audit as JSON"
        " will do): a tail cut after the trail's last checkpoint shows only against it",
    )
    trail.set_defaults(run=cmd_audit_verify, offline=True)

    home = argparse.ArgumentParser(add_help=False)
    home.add_argument(
        "--operator-namespace",
        default="agent-identity-system",
        help="where the operator keeps its keys (default agent-identity-system)",
    )
    forget = commands.add_parser(
        "audit forget", help="crypto-shred a person: destroy their audit key (GDPR Art. 17)", parents=[global_flags, home]
    )
    forget.add_argument("principal", help="user:NAME")
    forget.set_defaults(run=cmd_audit_forget)
    shown = commands.add_parser(
        "audit reveal", help="print a trail's records with the people whose keys are kept", parents=[global_flags, home]
    )
    shown.add_argument("files", nargs="+", metavar="FILE")
    shown.set_defaults(run=cmd_audit_reveal)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl agent", description="Just-in-time identities for AI agents.")
    _add_global_flags(parser, defaults=True)
    global_flags = argparse.ArgumentParser(add_help=False)
    _add_global_flags(global_flags, defaults=False)
    commands = parser.add_subparsers(dest="command", required=True)

    def verb(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, parents=[global_flags])

    issue = verb("issue", "create an AgentIdentity, wait until Ready, print or write its credentials")
    issue.add_argument("--task", required=True)
    issue.add_argument("--ttl", help="e.g. 90s, 10m (default: the profile's defaultTTL)")
    issue.add_argument("--scope", action="append", required=True, help="VERBS:RESOURCES[:GROUP[:NAMES]], repeatable")
    issue.add_argument("--delegator", help="user:NAME, agent:NAME or serviceaccount:NAMESPACE/NAME")
    issue.add_argument("--audience", action="append", help="token audience, repeatable")
    issue.add_argument("--profile")
    issue.add_argument("--name", help="default: agent-<random>")
    issue.add_argument("--kubeconfig-out", help="where to write the agent's kubeconfig (default ./NAME.kubeconfig)")
    issue.add_argument("--wait", type=float, default=30.0, help="seconds to wait for Ready")
    issue.set_defaults(run=cmd_issue)

    tree = verb("tree", "the delegation tree of a namespace, or below one identity")
    tree.add_argument("name", nargs="?")
    tree.set_defaults(run=cmd_tree)

    revoke = verb("revoke", "retire an identity (and so its delegates) now")
    revoke.add_argument("name")
    revoke.set_defaults(run=cmd_revoke)

    finished = verb("done", "the task is over: retire my identity now (inside an agent's pod: its own, with its token)")
    finished.add_argument("name", nargs="?", help="default: the identity of the credential in use")
    finished.set_defaults(run=cmd_done)

    alive = verb("heartbeat", "renew my identity's heartbeat Lease (spec.heartbeat), with the credential in use")
    alive.set_defaults(run=cmd_heartbeat)

    check = verb("verify", "verify a delegation assertion against a JWKS, offline")
    check.add_argument("assertion", help="the JWT, a file holding it, or - for stdin")
    check.add_argument("--jwks", required=True, help="URL or file of the operator's JWKS")
    issuer = check.add_mutually_exclusive_group()
    issuer.add_argument("--issuer", help="the issuer you trust: the operator's --issuer URL (required)")
    issuer.add_argument(
        "--insecure-any-issuer", action="store_true", help="INSECURE: accept an assertion from any issuer in the JWKS"
    )
    audience = check.add_mutually_exclusive_group()
    audience.add_argument("--audience", help="the audience you expect: your service, as in spec.token.audiences (required)")
    audience.add_argument(
        "--insecure-any-audience", action="store_true", help="INSECURE: accept an assertion issued for any audience"
    )
    check.set_defaults(run=cmd_verify, offline=True)

    whoami = verb("whoami", "who a Kubernetes token belongs to (TokenReview), and its identity")
    whoami.add_argument("token", help="the token, a file holding it, or - for stdin")
    whoami.add_argument("--audience", action="append")
    whoami.set_defaults(run=cmd_whoami)

    audit = verb("audit", "the provenance of one identity")
    audit.add_argument("name")
    audit.set_defaults(run=cmd_audit)

    _add_audit_verbs(commands, global_flags)

    trail = verb("trail", "every request an identity's agent made, from the API server's audit log")
    trail.add_argument("name")
    trail.add_argument("--audit-log", action="append", required=True, help="the API server's audit log (JSON lines), repeatable")
    trail.set_defaults(run=cmd_trail)
    return parser


_AUDIT_VERBS = ("verify", "forget", "reveal")


def _join_audit_verbs(argv: list[str]) -> list[str]:
    """``audit verify ...`` is one verb (``audit NAME`` stays the provenance of identity NAME)."""
    for index, word in enumerate(argv[:-1]):
        if word == "audit" and argv[index + 1] in _AUDIT_VERBS:
            return [*argv[:index], f"audit {argv[index + 1]}", *argv[index + 2 :]]
    return argv


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_join_audit_verbs(sys.argv[1:] if argv is None else argv))
    try:
        agents = (
            None
            if getattr(args, "offline", False)
            else AgentIdentities(namespace=args.namespace, kube=Kube(load_client_configuration(args.kubeconfig)))
        )
        args.run(args, agents)
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KubeError as error:
        print(f"error: {error.message or error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
