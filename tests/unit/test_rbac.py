"""The escalation check against upstream's semantics (component-helpers ``Covers``), table-driven."""

from __future__ import annotations

import pytest

from agent_identity.api.v1alpha1 import PolicyRule
from agent_identity.policy.rbac import (
    DANGERS,
    MAX_PERMISSION_ATOMS,
    Permission,
    atom_count,
    atoms,
    atoms_within_cap,
    covers,
    dangerous,
    dangerous_permissions,
    uncovered,
)


def rule(groups: list[str], resources: list[str], verbs: list[str], names: list[str] | None = None) -> PolicyRule:
    body: dict[str, object] = {"apiGroups": groups, "resources": resources, "verbs": verbs}
    if names is not None:
        body["resourceNames"] = names
    return PolicyRule.model_validate(body)


def perm(group: str, resource: str, verb: str, name: str | None = None) -> Permission:
    return Permission(api_group=group, resource=resource, verb=verb, resource_name=name)


CORE = ""
APPS = "apps"
RBAC = "rbac.authorization.k8s.io"

# (owner rules, requested rules, the requested atoms left uncovered, in order)
COVER_CASES: dict[str, tuple[list[PolicyRule], list[PolicyRule], list[Permission]]] = {
    "exact match": (
        [rule([CORE], ["configmaps"], ["get"])],
        [rule([CORE], ["configmaps"], ["get"])],
        [],
    ),
    "subset of verbs": (
        [rule([CORE], ["configmaps"], ["get", "list", "watch"])],
        [rule([CORE], ["configmaps"], ["get", "list"])],
        [],
    ),
    "superset of verbs leaves the extra verbs": (
        [rule([CORE], ["configmaps"], ["get"])],
        [rule([CORE], ["configmaps"], ["get", "delete", "update"])],
        [perm(CORE, "configmaps", "delete"), perm(CORE, "configmaps", "update")],
    ),
    "different resource": (
        [rule([CORE], ["configmaps"], ["get"])],
        [rule([CORE], ["secrets"], ["get"])],
        [perm(CORE, "secrets", "get")],
    ),
    "no owner rules covers nothing": (
        [],
        [rule([CORE], ["configmaps"], ["get"])],
        [perm(CORE, "configmaps", "get")],
    ),
    "nothing requested is covered": (
        [],
        [],
        [],
    ),
    "owner verb wildcard covers specific verbs": (
        [rule([CORE], ["pods"], ["*"])],
        [rule([CORE], ["pods"], ["get", "delete", "escalate"])],
        [],
    ),
    "owner resource wildcard covers specific resources": (
        [rule([CORE], ["*"], ["get"])],
        [rule([CORE], ["pods", "secrets", "configmaps"], ["get"])],
        [],
    ),
    "owner resource wildcard covers subresources": (
        [rule([CORE], ["*"], ["create"])],
        [rule([CORE], ["pods/exec", "serviceaccounts/token"], ["create"])],
        [],
    ),
    "owner group wildcard covers core and named groups": (
        [rule(["*"], ["deployments", "pods"], ["get"])],
        [rule([CORE, APPS, "batch"], ["deployments"], ["get"])],
        [],
    ),
    "owner full wildcard covers a full wildcard": (
        [rule(["*"], ["*"], ["*"])],
        [rule(["*"], ["*"], ["*"])],
        [],
    ),
    "requested verb wildcard not covered by enumerated verbs": (
        [rule([CORE], ["pods"], ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"])],
        [rule([CORE], ["pods"], ["*"])],
        [perm(CORE, "pods", "*")],
    ),
    "requested resource wildcard not covered by enumerated resources": (
        [rule([CORE], ["pods", "configmaps", "secrets"], ["get"])],
        [rule([CORE], ["*"], ["get"])],
        [perm(CORE, "*", "get")],
    ),
    "requested group wildcard not covered by enumerated groups": (
        [rule([CORE, APPS], ["deployments"], ["get"])],
        [rule(["*"], ["deployments"], ["get"])],
        [perm("*", "deployments", "get")],
    ),
    "owner pods does not cover pods/log": (
        [rule([CORE], ["pods"], ["get"])],
        [rule([CORE], ["pods/log"], ["get"])],
        [perm(CORE, "pods/log", "get")],
    ),
    "owner pods/log does not cover pods": (
        [rule([CORE], ["pods/log"], ["get"])],
        [rule([CORE], ["pods"], ["get"])],
        [perm(CORE, "pods", "get")],
    ),
    "owner pods/* is a literal, not a wildcard for pods/log": (
        [rule([CORE], ["pods/*"], ["get"])],
        [rule([CORE], ["pods/log", "pods/exec"], ["get"])],
        [perm(CORE, "pods/log", "get"), perm(CORE, "pods/exec", "get")],
    ),
    "owner pods/* covers a literal request for pods/*": (
        [rule([CORE], ["pods/*"], ["get"])],
        [rule([CORE], ["pods/*"], ["get"])],
        [],
    ),
    "owner */scale covers any resource's scale": (
        [rule([APPS], ["*/scale"], ["update"])],
        [rule([APPS], ["deployments/scale", "statefulsets/scale"], ["update"])],
        [],
    ),
    "owner */scale does not cover the parent resource": (
        [rule([APPS], ["*/scale"], ["update"])],
        [rule([APPS], ["deployments"], ["update"])],
        [perm(APPS, "deployments", "update")],
    ),
    "owner */scale does not cover another subresource": (
        [rule([APPS], ["*/scale"], ["update"])],
        [rule([APPS], ["deployments/status"], ["update"])],
        [perm(APPS, "deployments/status", "update")],
    ),
    "owner deployments/scale does not cover a requested */scale": (
        [rule([APPS], ["deployments/scale", "statefulsets/scale", "replicasets/scale"], ["update"])],
        [rule([APPS], ["*/scale"], ["update"])],
        [perm(APPS, "*/scale", "update")],
    ),
    "owner without names covers requested names": (
        [rule([CORE], ["configmaps"], ["get"])],
        [rule([CORE], ["configmaps"], ["get"], names=["a", "b"])],
        [],
    ),
    "owner with names does not cover requested without names": (
        [rule([CORE], ["configmaps"], ["get"], names=["a"])],
        [rule([CORE], ["configmaps"], ["get"])],
        [perm(CORE, "configmaps", "get")],
    ),
    "owner with names covers a subset of those names": (
        [rule([CORE], ["configmaps"], ["get"], names=["a", "b", "c"])],
        [rule([CORE], ["configmaps"], ["get"], names=["c", "a"])],
        [],
    ),
    "owner with names leaves the other names": (
        [rule([CORE], ["configmaps"], ["get", "update"], names=["a"])],
        [rule([CORE], ["configmaps"], ["update"], names=["a", "b"])],
        [perm(CORE, "configmaps", "update", "b")],
    ),
    "empty resourceNames list means every name, like no list": (
        [rule([CORE], ["configmaps"], ["get"], names=[])],
        [rule([CORE], ["configmaps"], ["get"], names=["a"]), rule([CORE], ["configmaps"], ["get"])],
        [],
    ),
    "two owner rules jointly cover one requested rule": (
        [rule([APPS], ["deployments"], ["get", "list"]), rule([APPS], ["deployments"], ["delete"])],
        [rule([APPS], ["deployments"], ["get", "list", "delete"])],
        [],
    ),
    "owner rules split by group jointly cover a multi-group rule": (
        [rule([CORE], ["pods"], ["get"]), rule([APPS], ["deployments"], ["get"])],
        [rule([CORE, APPS], ["pods", "deployments"], ["get"])],
        [perm(CORE, "deployments", "get"), perm(APPS, "pods", "get")],
    ),
    "owner rules jointly miss one combination": (
        [rule([APPS], ["deployments"], ["get"]), rule([APPS], ["replicasets"], ["delete"])],
        [rule([APPS], ["deployments", "replicasets"], ["get", "delete"])],
        [perm(APPS, "deployments", "delete"), perm(APPS, "replicasets", "get")],
    ),
    "core group does not cover apps": (
        [rule([CORE], ["deployments"], ["get"])],
        [rule([APPS], ["deployments"], ["get"])],
        [perm(APPS, "deployments", "get")],
    ),
    "apps does not cover the core group": (
        [rule([APPS], ["pods"], ["get"])],
        [rule([CORE], ["pods"], ["get"])],
        [perm(CORE, "pods", "get")],
    ),
    "a requested rule without API groups has no atoms": (
        [],
        [rule([], ["pods"], ["get"])],
        [],
    ),
    "duplicates are reported once, in request order": (
        [rule([CORE], ["configmaps"], ["get"])],
        [rule([CORE], ["secrets", "configmaps"], ["list", "get"]), rule([CORE], ["secrets"], ["list"])],
        [perm(CORE, "secrets", "list"), perm(CORE, "secrets", "get"), perm(CORE, "configmaps", "list")],
    ),
}


@pytest.mark.parametrize(("owner", "requested", "expected"), list(COVER_CASES.values()), ids=list(COVER_CASES))
def test_uncovered_matches_upstream(owner: list[PolicyRule], requested: list[PolicyRule], expected: list[Permission]) -> None:
    assert uncovered(owner, requested) == expected
    assert covers(owner, requested) is (not expected)


def test_atoms_break_a_rule_down_group_resource_verb_name() -> None:
    assert atoms(rule([CORE, APPS], ["pods"], ["get", "list"], names=["x", "y"])) == [
        perm(CORE, "pods", "get", "x"),
        perm(CORE, "pods", "get", "y"),
        perm(CORE, "pods", "list", "x"),
        perm(CORE, "pods", "list", "y"),
        perm(APPS, "pods", "get", "x"),
        perm(APPS, "pods", "get", "y"),
        perm(APPS, "pods", "list", "x"),
        perm(APPS, "pods", "list", "y"),
    ]
    assert atoms(rule([CORE], ["pods", "pods/log"], ["get"])) == [perm(CORE, "pods", "get"), perm(CORE, "pods/log", "get")]


@pytest.mark.parametrize(
    ("permission", "text"),
    [
        (perm(CORE, "configmaps", "get", "x"), 'get configmaps (core group) named "x"'),
        (perm(CORE, "pods/exec", "create"), "create pods/exec (core group)"),
        (perm(APPS, "deployments", "list"), "list deployments.apps"),
        (perm(APPS, "deployments/scale", "update"), "update deployments/scale (apps group)"),
        (perm(APPS, "*", "get"), "get every resource (apps group)"),
        (perm("*", "secrets", "*"), "every verb on secrets (every group)"),
        (perm(RBAC, "roles", "bind", "admin"), 'bind roles.rbac.authorization.k8s.io named "admin"'),
    ],
)
def test_describe_reads_like_a_sentence(permission: Permission, text: str) -> None:
    assert permission.describe() == text


def test_uncovered_atoms_describe_what_is_missing() -> None:
    missing = uncovered([rule([CORE], ["configmaps"], ["get"])], [rule([CORE], ["configmaps"], ["get", "delete"], names=["x"])])
    assert [atom.describe() for atom in missing] == ['delete configmaps (core group) named "x"']


SECRETS_REASON = "reading secrets exposes credentials, including tokens"
EXEC_REASON = "exec or attach runs as the pod's service account"
IMPERSONATE_REASON = "impersonate lets it act as someone else"

DANGER_CASES: dict[str, tuple[list[PolicyRule], list[tuple[Permission, str]]]] = {
    "plain reads are fine": (
        [rule([CORE], ["configmaps", "pods", "pods/log"], ["get", "list", "watch"]), rule([APPS], ["deployments"], ["*"])],
        [],
    ),
    "reading secrets": (
        [rule([CORE], ["secrets"], ["get", "list", "create"])],
        [(perm(CORE, "secrets", "get"), SECRETS_REASON), (perm(CORE, "secrets", "list"), SECRETS_REASON)],
    ),
    "reading one named secret is still reading secrets": (
        [rule([CORE], ["secrets"], ["get"], names=["db"])],
        [(perm(CORE, "secrets", "get", "db"), SECRETS_REASON)],
    ),
    "secrets in another group are not the core secrets": (
        [rule(["example.com"], ["secrets"], ["get"])],
        [],
    ),
    "exec and attach": (
        [rule([CORE], ["pods/exec", "pods/attach", "pods/log"], ["create"])],
        [(perm(CORE, "pods/exec", "create"), EXEC_REASON), (perm(CORE, "pods/attach", "create"), EXEC_REASON)],
    ),
    "a wildcard verb on secrets is caught once": (
        [rule([CORE], ["secrets"], ["*"])],
        [(perm(CORE, "secrets", "*"), SECRETS_REASON)],
    ),
    "a */exec subresource wildcard is caught": (
        [rule([CORE], ["*/exec"], ["create"])],
        [(perm(CORE, "*/exec", "create"), EXEC_REASON)],
    ),
    "impersonating a user": (
        [rule([CORE], ["users"], ["impersonate"], names=["admin"])],
        [(perm(CORE, "users", "impersonate", "admin"), IMPERSONATE_REASON)],
    ),
}


@pytest.mark.parametrize(("requested", "expected"), list(DANGER_CASES.values()), ids=list(DANGER_CASES))
def test_dangerous_flags_escalation_paths(requested: list[PolicyRule], expected: list[tuple[Permission, str]]) -> None:
    assert dangerous(requested) == expected


def test_a_full_wildcard_is_flagged_for_every_family() -> None:
    flagged = dangerous([rule(["*"], ["*"], ["*"])])
    assert {atom for atom, _ in flagged} == {perm("*", "*", "*")}
    assert [reason for _, reason in flagged] == list(dict.fromkeys(danger.reason for danger in DANGERS))


@pytest.mark.parametrize(
    "permission",
    [
        perm("rbac.authorization.k8s.io", "roles", "escalate"),
        perm("rbac.authorization.k8s.io", "clusterroles", "bind"),
        perm(CORE, "serviceaccounts", "impersonate"),
        perm(CORE, "serviceaccounts/token", "create"),
        perm(CORE, "secrets", "watch"),
        perm(CORE, "pods/attach", "create"),
        perm("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "create"),
        perm("admissionregistration.k8s.io", "validatingwebhookconfigurations", "patch"),
    ],
    ids=lambda p: p.describe(),
)
def test_each_named_escalation_path_is_in_the_table(permission: Permission) -> None:
    assert permission in {probe for probe, _ in dangerous_permissions()}
    requested = rule([permission.api_group], [permission.resource], [permission.verb])
    assert [atom for atom, _ in dangerous([requested])] == [permission]


# --- admission cost: how many atoms (one SubjectAccessReview each) a spec expands to --------------


def names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{index}" for index in range(count)]


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([rule([CORE], ["configmaps"], ["get", "list"])], 2),
        ([rule([CORE, APPS], ["configmaps", "deployments"], ["get", "list", "watch"])], 12),
        ([rule([APPS], ["deployments"], ["get", "patch"], ["web", "api", "db"])], 6),
        ([rule([CORE], ["pods"], ["get"], [])], 1),  # empty resourceNames: every name, one atom, as upstream
        ([rule([CORE], ["pods"], ["get"]), rule([CORE], ["pods"], ["get"])], 2),  # duplicates count, as in CEL
        ([rule(["*"], ["*"], ["*"])], 1),  # a wildcard is one atom: one review asking for everything
        ([rule(["*", CORE], ["*", "pods"], ["*"])], 4),
        ([], 0),
    ],
    ids=["two-verbs", "product", "names", "empty-names", "duplicates", "wildcards", "wildcards-and-literals", "none"],
)
def test_atom_count_is_the_number_of_atoms(rules: list[PolicyRule], expected: int) -> None:
    assert atom_count(rules) == expected == sum(len(atoms(r)) for r in rules)


def test_atom_count_does_not_build_the_atoms() -> None:
    # Far beyond what the schema admits (model_construct skips validation): 10^12 atoms, counted at once.
    huge = PolicyRule.model_construct(
        api_groups=names("g", 1000), resources=names("r", 1000), verbs=names("v", 1000), resource_names=names("n", 1000)
    )
    assert atom_count([huge, huge]) == 2 * 10**12


def test_a_spec_at_the_cap_passes() -> None:
    assert MAX_PERMISSION_ATOMS == 64
    at_cap = [rule([CORE, APPS], names("r", 4), names("v", 4)), rule(["*"], ["*"], ["*"])]
    assert atom_count(at_cap) == 33
    assert atoms_within_cap(at_cap) is None
    exactly = [rule([CORE], names("r", 8), names("v", 8))]
    assert atom_count(exactly) == 64 and atoms_within_cap(exactly) is None


def test_one_atom_over_the_cap_is_refused() -> None:
    over = [rule([CORE], names("r", 8), names("v", 8)), rule(["*"], ["*"], ["*"])]
    assert atoms_within_cap(over) == (
        "spec.scopes: expands to 65 permissions (verbs x resources x apiGroups x resourceNames);"
        " at most 64 are allowed per identity: split the task or name fewer verbs/resources"
    )


def test_an_over_wide_spec_is_refused_with_the_count() -> None:
    wide = [rule(names("g", 4), names("r", 4), names("v", 16), names("n", 16))]  # the schema's per-list maxima
    assert atoms_within_cap(wide) == (
        "spec.scopes: expands to 4,096 permissions (verbs x resources x apiGroups x resourceNames);"
        " at most 64 are allowed per identity: split the task or name fewer verbs/resources"
    )
