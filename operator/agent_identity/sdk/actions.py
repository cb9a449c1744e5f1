"""What an agent did, from the API server's audit log, tied to the identity that did it: the
Python API behind ``kubectl agent trail NAME``. Pure apart from reading the files given.

The join is on the ServiceAccount's uid (``user.uid`` of every request made with a
ServiceAccount token), which the identity records in ``status.serviceAccountUID``: a name reused
by a later identity, or another agent's ServiceAccount, never matches. Each request says its
credential (``authentication.kubernetes.io/credential-id``, ``JTI=...``) and, for a pod-bound
token, the pod. A request answered 403 is the agent trying outside its scope; a request received
after the identity retired (its Expired or Revoked condition) is a token still used after the
end, which stands out whatever its answer.

The audit log needs a policy that records ServiceAccount requests at Metadata level (see
``AUDIT_POLICY`` in local/controlplane.py); the file backend is read, every JSON line one event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agent_identity.api.durations import parse_timestamp

CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"
POD_NAME = "authentication.kubernetes.io/pod-name"
RETIRED_CONDITIONS = ("Expired", "Revoked")


@dataclass(frozen=True)
class Request:
    """One request the agent made, as the API server recorded it."""

    time: str
    verb: str
    target: str  # [group/]resource[/subresource] [namespace/]name, as far as the request named them
    uri: str
    code: int
    allowed: bool
    forbidden: bool  # 403: outside the identity's scope
    after_retirement: bool
    credential: str | None
    pod: str | None


@dataclass(frozen=True)
class Trail:
    namespace: str
    name: str
    service_account_uid: str
    task: str
    delegator: str | None
    delegation_chain: list[str]
    retired_at: str | None
    requests: list[Request]

    @property
    def forbidden(self) -> int:
        return sum(1 for request in self.requests if request.forbidden)

    @property
    def after_retirement(self) -> int:
        return sum(1 for request in self.requests if request.after_retirement)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["forbidden"], document["afterRetirement"] = self.forbidden, self.after_retirement
        return document


def retired_at(identity: Mapping[str, Any]) -> datetime | None:
    """When the identity retired: its Expired or Revoked condition turned True."""
    for condition in (identity.get("status") or {}).get("conditions") or []:
        if condition.get("type") in RETIRED_CONDITIONS and condition.get("status") == "True":
            return parse_timestamp(condition["lastTransitionTime"])
    return None


def _target(event: Mapping[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    resource = "/".join(part for part in (ref.get("apiGroup"), ref.get("resource"), ref.get("subresource")) if part)
    name = "/".join(part for part in (ref.get("namespace"), ref.get("name")) if part)
    return f"{resource} {name}".strip()


def requests_of(events: Iterable[Mapping[str, Any]], *, service_account_uid: str, retired: datetime | None) -> list[Request]:
    """The requests made with the ServiceAccount ``service_account_uid``'s credentials, in the order received."""
    found: list[tuple[datetime, Request]] = []
    for event in events:
        user = event.get("user") or {}
        if user.get("uid") != service_account_uid or event.get("stage") not in (None, "ResponseComplete", "Panic"):
            continue
        extra = user.get("extra") or {}
        received = parse_timestamp(str(event["requestReceivedTimestamp"]))
        code = int((event.get("responseStatus") or {}).get("code", 0))
        found.append(
            (
                received,
                Request(
                    time=str(event["requestReceivedTimestamp"]),
                    verb=str(event.get("verb")),
                    target=_target(event),
                    uri=str(event.get("requestURI")),
                    code=code,
                    allowed=0 < code < 400,
                    forbidden=code == 403,
                    after_retirement=retired is not None and received > retired,
                    credential=(extra.get(CREDENTIAL_ID) or [None])[0],
                    pod=(extra.get(POD_NAME) or [None])[0],
                ),
            )
        )
    return [request for _, request in sorted(found, key=lambda pair: pair[0])]


def read_events(files: Iterable[Path]) -> Iterable[dict[str, Any]]:
    """The audit events of the API server's log files (JSON lines; other lines skipped)."""
    for file in files:
        with file.open(encoding="utf-8", errors="replace") as stream:
            for line in stream:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict) and event.get("kind") == "Event":
                    yield event


def trail_of(identity: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> Trail:
    """Every request the identity's agent made, with who it was for and what it was meant to do.
    ``ValueError`` when the identity records no ServiceAccount (never provisioned)."""
    metadata, spec, status = identity["metadata"], identity.get("spec") or {}, identity.get("status") or {}
    uid = status.get("serviceAccountUID")
    if not uid:
        raise ValueError(f"{metadata['namespace']}/{metadata['name']} records no ServiceAccount uid: it was never provisioned")
    retired = retired_at(identity)
    chain = list(status.get("delegationChain") or [])
    return Trail(
        namespace=metadata["namespace"],
        name=metadata["name"],
        service_account_uid=uid,
        task=str(spec.get("task", "")),
        delegator=chain[0] if chain else None,
        delegation_chain=chain,
        retired_at=retired.isoformat() if retired else None,
        requests=requests_of(events, service_account_uid=uid, retired=retired),
    )
