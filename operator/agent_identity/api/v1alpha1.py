"""The AgentIdentity API as pydantic models: the single source of truth for the CRD schema.

``crd.py`` turns these models into the CustomResourceDefinition in ``crds/``; a unit test
regenerates it and fails on any drift. The reconciler parses every object through
:class:`AgentIdentity` as well, so what the API server accepts and what the operator reads are
the same shape. Pure: no I/O, no kopf.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, PrivateAttr

from agent_identity.api.durations import MAX_TTL, MIN_TTL, TTL_PATTERN, format_duration

JsonDict = dict[str, JsonValue]

DelegatorKind = Literal["User", "ServiceAccount", "AgentIdentity"]
RiskLevel = Literal["low", "medium", "high", "critical"]


class Phase(StrEnum):
    """Where the AgentIdentity is in its life: Pending, Ready, Expired, Revoked, Denied or Failed."""

    PENDING = "Pending"  # not provisioned yet (waiting for a delegator, or an API error)
    READY = "Ready"
    EXPIRED = "Expired"  # its TTL passed, or its delegator retired
    REVOKED = "Revoked"  # its delegator was deleted
    DENIED = "Denied"  # refused by policy; nothing was provisioned
    FAILED = "Failed"  # could not be provisioned (a name conflict): retried


RETIRED_PHASES: frozenset[str] = frozenset({Phase.EXPIRED, Phase.REVOKED})
FINAL_PHASES: frozenset[str] = RETIRED_PHASES | {Phase.DENIED}  # nothing will ever be provisioned again
# Nothing to do until something changes: what a client waits for, and what a listing only re-verifies.
SETTLED_PHASES: frozenset[str] = FINAL_PHASES | {Phase.READY}

_DNS_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
Name = Annotated[str, Field(min_length=1, max_length=253)]
ShortText = Annotated[str, Field(min_length=1, max_length=253)]


# Admission cost is bounded by the schema, before any webhook runs. The validating webhook asks one
# SubjectAccessReview per permission atom (one verb x one API group x one resource x at most one
# resource name; see rbac.atoms), one after another, inside a 5 s webhook timeout. Before these
# bounds, 32 rules of 16 x 32 x 16 x 64 entries could expand to over 16 million reviews.
#
# A task that needs more than MAX_PERMISSION_ATOMS is split into several identities (why 64:
# docs/design/0006-permission-atom-cap.md).
MAX_PERMISSION_ATOMS = 64
"""The most permission atoms one AgentIdentity's spec.scopes may expand to (summed over its rules)."""
MAX_SCOPES = 16
"""The most rules in spec.scopes (each rule also bounds its own lists, below)."""
MAX_RULE_ITEMS = 16
"""The most entries in each of a rule's apiGroups, resources, verbs and resourceNames. Besides
keeping specs small, these bounds let the API server estimate the CEL rules' cost (it refuses a CRD
whose worst case is unbounded)."""

_RULE_ATOMS = (
    "size(r.apiGroups) * size(r.resources) * size(r.verbs)"
    " * (has(r.resourceNames) && size(r.resourceNames) > 0 ? size(r.resourceNames) : 1)"
)
"""CEL: the atoms of one rule ``r``, as ``rbac.atom_count`` counts them (no resourceNames: one)."""
_SCOPES_ATOMS = f"self.map(r, {_RULE_ATOMS}).sum()"
"""CEL: the atoms of all of spec.scopes (``sum()`` is the Kubernetes CEL list library's)."""


def _cel(rule: str, message: str, **extra: str) -> JsonDict:
    """One ``x-kubernetes-validations`` entry: a CEL rule and the message users see."""
    rule_entry: JsonDict = {"rule": rule, "message": message}
    rule_entry.update(extra)
    return rule_entry


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class PolicyRule(_Model):
    """One RBAC rule of a namespaced Role; nonResourceURLs have no meaning there and are refused."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("size(self.resources) > 0", "each scope must name at least one resource"),
                _cel("size(self.verbs) > 0", "each scope must name at least one verb"),
                _cel("size(self.apiGroups) > 0", 'each scope must name at least one API group ("" is the core group)'),
            ]
        }
    )

    api_groups: list[Annotated[str, Field(max_length=253)]] = Field(
        alias="apiGroups", max_length=MAX_RULE_ITEMS, description='API groups, "" for the core group.'
    )
    resources: list[ShortText] = Field(max_length=MAX_RULE_ITEMS, description="Resources, e.g. configmaps or pods/log.")
    verbs: list[ShortText] = Field(max_length=MAX_RULE_ITEMS, description="Verbs, e.g. get, list, watch.")
    resource_names: list[Name] | None = Field(
        default=None,
        alias="resourceNames",
        max_length=MAX_RULE_ITEMS,
        description="Restrict the rule to these object names.",
    )


class Delegator(_Model):
    """Who authorized the agent: a person, a workload, or another agent it acts for."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.kind != 'ServiceAccount' || has(self.namespace)",
                    "a ServiceAccount delegator needs a namespace",
                ),
                _cel(
                    "self.kind != 'User' || !has(self.namespace)",
                    "a User delegator has no namespace",
                ),
            ]
        }
    )

    kind: DelegatorKind
    name: Name
    namespace: Annotated[str, Field(min_length=1, max_length=63, pattern=_DNS_NAME)] | None = Field(
        default=None, description="For a ServiceAccount; an AgentIdentity delegator must be in the same namespace."
    )

    def namespace_problem(self, identity_namespace: str) -> str | None:
        """Why this delegator cannot delegate to an identity in ``identity_namespace``, if it cannot:
        an agent delegates only within its own namespace. The one statement of that rule; the
        policy check, the decision and the chain walk all ask it."""
        if self.kind != "AgentIdentity" or self.namespace in (None, identity_namespace):
            return None
        return f"spec.delegator: an AgentIdentity delegator must be in namespace {identity_namespace!r}, not {self.namespace!r}"

    def principal(self, *, identity_namespace: str) -> str:
        """The delegator as one entry of a delegation chain: ``user:alice``,
        ``serviceaccount:ci/deployer``, ``agent:support/planner``."""
        if self.kind == "User":
            return f"user:{self.name}"
        prefix = "serviceaccount" if self.kind == "ServiceAccount" else "agent"
        return f"{prefix}:{self.namespace or identity_namespace}/{self.name}"


class TokenDelivery(StrEnum):
    """How the agent gets its token."""

    SECRET = "Secret"  # the operator mints it (TokenRequest) into the Secret aid-<name>-token
    PROJECTED = "Projected"  # only pods get tokens, from their kubelet: nothing at rest, no Secret


class TokenSpec(_Model):
    audiences: list[ShortText] | None = Field(
        default=None,
        max_length=16,
        description="Token audiences; empty means the API server's own, which the kubeconfig needs.",
    )
    delivery: TokenDelivery | None = Field(
        default=None,
        description=(
            "Secret (the default): the operator mints a token into the Secret aid-<name>-token, with a kubeconfig."
            " Projected: no Secret and no token at rest; pods labelled agentidentity.dev/identity=<name> get"
            " kubelet-projected tokens that the kubelet rotates."
        ),
    )


_TTL_BOUNDS = (
    f"duration(self) >= duration('{format_duration(MIN_TTL)}') && duration(self) <= duration('{format_duration(MAX_TTL)}')"
)


def _duration_rules(field: str) -> list[JsonValue]:
    """CEL rules for a TTL-like field: the syntax ``durations.parse_ttl`` accepts, and its bounds."""
    return [
        _cel(f"self.matches('{TTL_PATTERN}') && self != ''", f"{field} must be a duration such as 90s, 10m or 1h30m"),
        _cel(
            f"!self.matches('{TTL_PATTERN}') || self == '' || ({_TTL_BOUNDS})",
            f"{field} must be between {format_duration(MIN_TTL)} and {format_duration(MAX_TTL)}",
        ),
    ]


class BindingKind(StrEnum):
    """What an identity is bound to: its task ends when that workload does."""

    JOB = "Job"  # the Job named spec.boundTo.name completed or failed (or was deleted)
    POD = "Pod"  # the pod named spec.boundTo.name terminated (or was deleted)
    AGENT_PODS = "AgentPods"  # every pod running as the agent terminated or is gone, after at least one ran


class WorkloadBinding(_Model):
    """The workload whose end is the task's end. Counted only if it runs as this agent (a pod of
    its ServiceAccount, which only a pod admitted for its creator, delegator or itself can be; a
    Job labelled for it and judged for this identity's uid by the workload webhook)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.kind == 'AgentPods' ? !has(self.name) : has(self.name)",
                    "boundTo: a Job or Pod binding names its workload; an AgentPods binding names none",
                ),
            ]
        }
    )

    kind: BindingKind
    name: Annotated[str, Field(min_length=1, max_length=253, pattern=_DNS_NAME)] | None = None


class AgentIdentitySpec(_Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "has(self.profile) == has(oldSelf.profile) && (!has(self.profile) || self.profile == oldSelf.profile)",
                    "profile is immutable",
                    fieldPath=".profile",
                ),
                _cel(
                    "has(self.delegator) == has(oldSelf.delegator)"
                    " && (!has(self.delegator) || self.delegator == oldSelf.delegator)",
                    "delegator is immutable",
                    fieldPath=".delegator",
                ),
                _cel(
                    "has(self.token) == has(oldSelf.token) && (!has(self.token) || self.token == oldSelf.token)",
                    "token is immutable",
                    fieldPath=".token",
                ),
                _cel(
                    "has(self.ttl) == has(oldSelf.ttl) && (!has(self.ttl) || self.ttl == oldSelf.ttl)",
                    "ttl is immutable",
                    fieldPath=".ttl",
                ),
                _cel(
                    "has(self.boundTo) == has(oldSelf.boundTo) && (!has(self.boundTo) || self.boundTo == oldSelf.boundTo)",
                    "boundTo is immutable",
                    fieldPath=".boundTo",
                ),
                _cel(
                    "has(self.heartbeat) == has(oldSelf.heartbeat)"
                    " && (!has(self.heartbeat) || self.heartbeat == oldSelf.heartbeat)",
                    "heartbeat is immutable",
                    fieldPath=".heartbeat",
                ),
                _cel(
                    "!has(oldSelf.done) || !oldSelf.done || (has(self.done) && self.done)",
                    "done cannot be undone: a retired identity stays retired",
                    fieldPath=".done",
                ),
            ]
        }
    )

    task: str = Field(
        min_length=1,
        max_length=1024,
        description="What the agent is for, recorded with every action.",
        json_schema_extra={"x-kubernetes-validations": [_cel("self == oldSelf", "task is immutable")]},
    )
    ttl: str | None = Field(
        default=None,
        max_length=24,
        description=(
            f"How long the identity lives from creation, {format_duration(MIN_TTL)} to {format_duration(MAX_TTL)}"
            " (e.g. 90s, 10m, 1h30m); defaults to the profile's defaultTTL."
        ),
        json_schema_extra={"x-kubernetes-validations": _duration_rules("ttl")},
    )
    profile: Annotated[str, Field(min_length=1, max_length=253, pattern=_DNS_NAME)] | None = Field(
        default=None, description="AgentProfile that bounds this identity."
    )
    delegator: Delegator | None = None
    scopes: list[PolicyRule] = Field(
        min_length=1,
        max_length=MAX_SCOPES,
        description=(
            "The RBAC rules this task needs, in this namespace only; together they may expand to at most"
            f" {MAX_PERMISSION_ATOMS} permissions (verbs x resources x apiGroups x resourceNames, summed over the rules)."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("self == oldSelf", "scopes are immutable"),
                # The total bounds every rule too, so no separate per-rule rule (it would only repeat
                # this message). Checked by the API server, so an over-wide spec never reaches the webhook.
                _cel(
                    f"{_SCOPES_ATOMS} <= {MAX_PERMISSION_ATOMS}",
                    f"expands to more than {MAX_PERMISSION_ATOMS} permissions (verbs x resources x apiGroups x"
                    f" resourceNames, summed over the scopes); at most {MAX_PERMISSION_ATOMS} are allowed per"
                    " identity: split the task or name fewer verbs/resources",
                    # No messageExpression with the count: the API server estimates string(int)
                    # concatenation as unbounded and refuses the CRD (over its cost budget 100x).
                ),
            ]
        },
    )
    token: TokenSpec | None = None
    bound_to: WorkloadBinding | None = Field(
        default=None,
        alias="boundTo",
        description=(
            "Retire the identity when this workload ends (reason TaskCompleted), not only at its TTL:"
            " a Job (complete or failed), a Pod (terminated), or AgentPods (the last pod running as the agent"
            " terminated, after at least one ran). Sealed at admission; immutable."
        ),
    )
    heartbeat: str | None = Field(
        default=None,
        max_length=24,
        description=(
            "A dead-man's switch: the agent renews its Lease aid-<name>-heartbeat at least this often"
            " (kubectl agent heartbeat, heartbeat() in the Python API); a period without a renewal retires the"
            " identity (reason HeartbeatLost). Time the API server was unreachable does not count. Immutable."
        ),
        json_schema_extra={"x-kubernetes-validations": _duration_rules("heartbeat")},
    )
    done: bool | None = Field(
        default=None,
        description=(
            "true: the task is over and the identity is retired now (reason SelfRetired), its delegates with it."
            " The agent may set it with its own token (its Role grants patch on this AgentIdentity alone, and"
            " the webhook lets the agent change nothing else); once true it stays true."
        ),
    )

    @property
    def delivery(self) -> TokenDelivery:
        return (self.token.delivery if self.token else None) or TokenDelivery.SECRET

    @property
    def audiences(self) -> list[str]:
        """The token audiences asked for; empty: the API server's own."""
        return list(self.token.audiences or []) if self.token else []


class Condition(_Model):
    type: ShortText
    status: Literal["True", "False", "Unknown"]
    reason: ShortText
    message: str = Field(max_length=4096)
    last_transition_time: str = Field(alias="lastTransitionTime", max_length=64)
    observed_generation: int | None = Field(default=None, alias="observedGeneration")


class AgentIdentityStatus(_Model):
    phase: Phase | None = None
    profile: str | None = Field(default=None, max_length=253)
    risk_level: RiskLevel | None = Field(default=None, alias="riskLevel")
    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    service_account_name: str | None = Field(default=None, alias="serviceAccountName", max_length=253)
    # Revocation deletes exactly this ServiceAccount, in one request (no read first).
    service_account_uid: str | None = Field(default=None, alias="serviceAccountUID", max_length=64)
    token_secret_name: str | None = Field(default=None, alias="tokenSecretName", max_length=253)
    # Every child's uid by kind: revocation deletes exactly these, even if someone stripped their
    # ownerReferences or labels, and drift repair puts a stripped ownerReference back.
    child_uids: dict[str, Annotated[str, Field(max_length=64)]] | None = Field(default=None, alias="childUIDs", max_length=4)
    # The operator's HMAC binding the creator seal to this object's uid (keys.seal.binding): a copy
    # on another object does not hold for its uid.
    seal_binding: str | None = Field(default=None, alias="sealBinding", max_length=64)
    # The uid of the bound workload (spec.boundTo) once it was seen: gone or replaced, the task
    # ended. Believed only to end an identity, never to keep one alive.
    bound_workload_uid: str | None = Field(default=None, alias="boundWorkloadUID", max_length=64)
    issued_at: str | None = Field(default=None, alias="issuedAt", max_length=64, json_schema_extra={"format": "date-time"})
    expires_at: str | None = Field(default=None, alias="expiresAt", max_length=64, json_schema_extra={"format": "date-time"})
    token_expires_at: str | None = Field(
        default=None, alias="tokenExpiresAt", max_length=64, json_schema_extra={"format": "date-time"}
    )
    delegation_chain: list[Annotated[str, Field(max_length=600)]] | None = Field(
        default=None, alias="delegationChain", max_length=32
    )
    conditions: list[Condition] | None = Field(default=None, max_length=16)


class AgentProfileSpec(_Model):
    """A standard, enforceable identity profile: the most any agent of this kind may be."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.defaultTTL) || duration(self.defaultTTL) <= duration(self.maxTTL)",
                    "defaultTTL must not exceed maxTTL",
                    fieldPath=".defaultTTL",
                ),
            ]
        }
    )

    risk_level: RiskLevel = Field(alias="riskLevel", description="Recorded on every identity of this profile.")
    max_ttl: str = Field(
        alias="maxTTL",
        max_length=24,
        description="Longest TTL allowed.",
        json_schema_extra={"x-kubernetes-validations": _duration_rules("maxTTL")},
    )
    default_ttl: str | None = Field(
        default=None,
        alias="defaultTTL",
        max_length=24,
        description="TTL for identities that set none.",
        json_schema_extra={"x-kubernetes-validations": _duration_rules("defaultTTL")},
    )
    max_delegation_depth: int = Field(
        default=1, alias="maxDelegationDepth", ge=0, le=16, description="Longest delegation chain above an identity."
    )
    permission_ceiling: list[PolicyRule] = Field(
        alias="permissionCeiling", min_length=1, max_length=64, description="The most any identity of this profile may hold."
    )
    audiences: list[ShortText] | None = Field(
        default=None, max_length=16, description="Token audiences allowed besides the API server's own."
    )
    require_delegator: bool = Field(default=False, alias="requireDelegator", description="Refuse identities without a delegator.")
    retain_for: str | None = Field(
        default=None,
        alias="retainFor",
        max_length=24,
        pattern=TTL_PATTERN,
        description="How long expired records are kept (default: the operator's --retain-for).",
    )
    namespaces: list[Annotated[str, Field(min_length=1, max_length=63, pattern=_DNS_NAME)]] | None = Field(
        default=None, max_length=256, description="Namespaces that may use this profile (default: all)."
    )


class AgentProfile(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: dict[str, Any]
    spec: AgentProfileSpec

    @property
    def name(self) -> str:
        return str(self.metadata["name"])


class ObjectMeta(BaseModel):
    """The metadata fields the operator reads; everything else passes through untouched."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    name: str
    namespace: str
    uid: str
    generation: int = 1
    creation_timestamp: str = Field(alias="creationTimestamp")
    deletion_timestamp: str | None = Field(default=None, alias="deletionTimestamp")
    annotations: dict[str, str] = Field(default_factory=dict)


class AgentIdentity(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        frozen=True,
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("size(self.metadata.name) <= 240", "metadata.name must be at most 240 characters"),
            ]
        },
    )

    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: ObjectMeta
    spec: AgentIdentitySpec
    status: AgentIdentityStatus = Field(default_factory=AgentIdentityStatus)
    _body: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_body(cls, body: Any) -> AgentIdentity:
        identity = cls.model_validate(dict(body))
        identity._body = dict(body)
        return identity

    @property
    def body(self) -> dict[str, Any]:
        """The object as the API server sent it, unknown fields and all (status writes compare
        against it, Events reference it)."""
        return self._body or self.model_dump(by_alias=True, exclude_none=True)
