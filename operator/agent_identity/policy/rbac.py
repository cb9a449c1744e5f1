"""Does one set of namespaced RBAC rules cover another? The operator's escalation check.

An AgentIdentity asks for RBAC rules on behalf of a delegator. Before the operator writes a Role
holding them, it must know that the delegator already holds every one of them, or the operator
would be a way to escalate privileges. The API server runs the same check when anyone creates a
Role (``ConfirmNoEscalation``); this module reproduces it so that a refusal can be explained on the
AgentIdentity before anything is written, and so that it can be tested without a cluster.

The semantics follow upstream exactly (``k8s.io/component-helpers/auth/rbac/validation``
``Covers``/``BreakdownRule``/``ruleCovers``): each requested rule is broken into atoms of one API
group, one resource, one verb and at most one resource name, and each atom must be covered by a
single owner rule. ``"*"`` in an owner rule matches anything in that field; ``"*/scale"`` matches
the ``scale`` subresource of any resource. A requested ``"*"`` is just a literal to be matched, so
only an owner ``"*"`` covers it; ``"pods/*"`` is a literal too (RBAC has no ``resource/*``
wildcard). An owner rule without resourceNames covers every name; one with names never covers a
request for all names.

Pure by contract: no I/O, no clock, no kopf, no kubernetes client. It must never widen an answer:
when in doubt, an atom is uncovered, and a requested rule is never "simplified" before the check.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agent_identity.api import v1alpha1 as api
from agent_identity.api.v1alpha1 import PolicyRule

ALL = "*"
"""The RBAC wildcard, for verbs, API groups and resources alike."""

MAX_PERMISSION_ATOMS: int = api.MAX_PERMISSION_ATOMS
"""The most atoms one AgentIdentity's scopes may expand to, summed over its rules: 64. Defined in
``api.v1alpha1`` beside the CRD's CEL rule that enforces the same cap (the comment there says why 64);
:func:`atoms_within_cap` enforces it in the webhook and the reconciler."""

RBAC_GROUP = "rbac.authorization.k8s.io"
ADMISSION_GROUP = "admissionregistration.k8s.io"


@dataclass(frozen=True)
class Permission:
    """One atom of a rule: one API group, one resource, one verb and at most one object name."""

    api_group: str
    resource: str
    verb: str
    resource_name: str | None = None

    def describe(self) -> str:
        """A human string: ``get configmaps (core group) named "x"``, ``list deployments.apps``."""
        verb = "every verb on" if self.verb == ALL else self.verb
        resource = "every resource" if self.resource == ALL else self.resource
        if self.api_group == "":
            target = f"{resource} (core group)"
        elif self.api_group == ALL:
            target = f"{resource} (every group)"
        elif self.resource == ALL or "/" in self.resource:
            target = f"{resource} ({self.api_group} group)"
        else:
            target = f"{resource}.{self.api_group}"
        named = "" if self.resource_name is None else f" named {json.dumps(self.resource_name, ensure_ascii=False)}"
        return f"{verb} {target}{named}"


def atoms(rule: PolicyRule) -> list[Permission]:
    """Break a rule into atoms in upstream's order: group, then resource, then verb, then name.

    A rule with no API groups, resources or verbs has no atoms: it grants nothing, as upstream.
    """
    names: Sequence[str | None] = rule.resource_names or [None]
    return [
        Permission(api_group=group, resource=resource, verb=verb, resource_name=name)
        for group in rule.api_groups
        for resource in rule.resources
        for verb in rule.verbs
        for name in names
    ]


def atom_count(rules: Iterable[PolicyRule]) -> int:
    """How many atoms :func:`atoms` would yield for these rules, without building them.

    Per rule the product apiGroups x resources x verbs x resourceNames (no resourceNames counts
    once: the rule is for every name), summed over the rules. Duplicates are counted, as the CRD's
    CEL rule counts them, so this is an upper bound of the distinct atoms. A wildcard ``"*"`` is
    one atom like any other entry: the SubjectAccessReview for it asks for everything in that
    field (and is granted only to a creator who holds ``"*"`` there), so it costs one review.
    """
    return sum(
        len(rule.api_groups) * len(rule.resources) * len(rule.verbs) * (len(rule.resource_names or ()) or 1) for rule in rules
    )


def atoms_within_cap(rules: Sequence[PolicyRule]) -> str | None:
    """``None`` when the rules expand to at most :data:`MAX_PERMISSION_ATOMS` atoms, else why not.

    The first check of the admission chain, before any SubjectAccessReview (one per atom) is
    asked. The CRD's CEL rule on spec.scopes enforces the same cap; this repeats it for the
    webhook's message and for clusters whose CRD is older than the operator. Pure and cheap:
    nothing is materialised, whatever the size of the spec.
    """
    count = atom_count(rules)
    if count <= MAX_PERMISSION_ATOMS:
        return None
    return (
        f"spec.scopes: expands to {count:,} permissions (verbs x resources x apiGroups x resourceNames);"
        f" at most {MAX_PERMISSION_ATOMS} are allowed per identity: split the task or name fewer verbs/resources"
    )


def _resource_covers(owner_resources: Sequence[str], resource: str) -> bool:
    """Upstream ``resourceCoversAll`` for one resource: ``*``, exact, or ``*/<subresource>``."""
    if ALL in owner_resources or resource in owner_resources:
        return True
    if "/" not in resource:
        return False
    subresource = resource.split("/", 1)[1]
    return f"*/{subresource}" in owner_resources


def _rule_covers(owner: PolicyRule, atom: Permission) -> bool:
    """Upstream ``ruleCovers``: does this single owner rule cover this one atom?"""
    verb_matches = ALL in owner.verbs or atom.verb in owner.verbs
    group_matches = ALL in owner.api_groups or atom.api_group in owner.api_groups
    resource_matches = _resource_covers(owner.resources, atom.resource)
    if not owner.resource_names:
        name_matches = True
    else:
        name_matches = atom.resource_name is not None and atom.resource_name in owner.resource_names
    return verb_matches and group_matches and resource_matches and name_matches


def _grants(atom: Permission, probe: Permission) -> bool:
    """Whether ``atom``, taken as a rule without resource names, covers ``probe``."""
    return (
        atom.verb in (ALL, probe.verb)
        and atom.api_group in (ALL, probe.api_group)
        and _resource_covers([atom.resource], probe.resource)
    )


def _unique(permissions: Iterable[Permission]) -> list[Permission]:
    return list(dict.fromkeys(permissions))


def uncovered(owner: Sequence[PolicyRule], requested: Sequence[PolicyRule]) -> list[Permission]:
    """The requested atoms no owner rule covers, deduplicated, in request order; empty means covered."""
    return _unique(
        atom for rule in requested for atom in atoms(rule) if not any(_rule_covers(owner_rule, atom) for owner_rule in owner)
    )


def covers(owner: Sequence[PolicyRule], requested: Sequence[PolicyRule]) -> bool:
    """Whether the owner rules cover every requested rule (upstream ``Covers``)."""
    return not uncovered(owner, requested)


@dataclass(frozen=True)
class Danger:
    """A family of permissions that leads to more privilege than it names, and why."""

    api_group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    reason: str


DANGERS: tuple[Danger, ...] = (
    Danger(RBAC_GROUP, ("roles", "clusterroles"), ("escalate",), "escalate lets it grant permissions it does not hold"),
    Danger(RBAC_GROUP, ("roles", "clusterroles"), ("bind",), "bind lets it bind roles with permissions it does not hold"),
    Danger("", ("users", "groups", "serviceaccounts"), ("impersonate",), "impersonate lets it act as someone else"),
    Danger("authentication.k8s.io", ("uids",), ("impersonate",), "impersonate lets it act as someone else"),
    Danger("", ("serviceaccounts/token",), ("create",), "minting service account tokens lets it act as them"),
    Danger("", ("secrets",), ("get", "list", "watch"), "reading secrets exposes credentials, including tokens"),
    Danger("", ("pods/exec", "pods/attach"), ("create", "get"), "exec or attach runs as the pod's service account"),
    Danger(
        ADMISSION_GROUP,
        ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"),
        ("create", "update", "patch", "delete"),
        "admission webhooks can rewrite or wave through every request",
    ),
)
"""Escalation paths, as data. Each expands to concrete permissions probed with the cover check."""


def dangerous_permissions() -> list[tuple[Permission, str]]:
    """Every concrete dangerous permission with its reason, in table order."""
    return [
        (Permission(api_group=danger.api_group, resource=resource, verb=verb), danger.reason)
        for danger in DANGERS
        for resource in danger.resources
        for verb in danger.verbs
    ]


def dangerous(requested: Sequence[PolicyRule]) -> list[tuple[Permission, str]]:
    """Each requested atom that would grant a dangerous permission, with a one-line reason.

    An atom is dangerous when, taken as a rule, it covers a dangerous permission, so wildcards
    are caught (``* secrets`` grants ``get secrets``). Resource names are ignored: reading one
    named secret, or impersonating one named user, is still that escalation path. An atom
    matching several families is listed once per distinct reason.
    """
    probes = dangerous_permissions()
    found: dict[tuple[Permission, str], None] = {}
    for rule in requested:
        for atom in atoms(rule):
            for probe, reason in probes:
                if _grants(atom, probe):
                    found.setdefault((atom, reason), None)
    return list(found)
