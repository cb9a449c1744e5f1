"""Builders and the per-child diff: what each child must look like, and what to do when it doesn't."""

import base64
import copy
import json
from datetime import timedelta

import pytest
import yaml

from agent_identity.plan import children
from agent_identity.plan.children import ChildKind, IssuedToken, Provenance
from agent_identity.plan.drift import ChildAction, TokenVerdict, diff_child, merged_for_update, plan_children, token_verdict

from .factories import CREATED, identity

PROVENANCE = Provenance(
    delegator="user:alice", task="collect incident notes", chain=("user:alice",), expires_at=CREATED + timedelta(seconds=90)
)
TOKEN = "eyJhbGciOiJSUzI1NiJ9.payload.signature"
ISSUED = IssuedToken(token=TOKEN, issued_at=CREATED, expires_at=CREATED + timedelta(minutes=10))
ACCESS = {"server": "https://127.0.0.1:6443", "ca_cert": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}


def observed(desired: dict, **changes: object) -> dict:
    """``desired`` as the API server would return it: with uid and resourceVersion."""
    actual = copy.deepcopy(desired)
    actual["metadata"].update(uid="child-uid", resourceVersion="7")
    actual.update(changes)
    return actual


def test_every_child_is_labelled_annotated_and_owned() -> None:
    agent = identity()
    for child in (
        children.service_account(agent, PROVENANCE),
        children.role(agent, PROVENANCE),
        children.role_binding(agent, PROVENANCE),
        children.token_secret(agent, PROVENANCE),
    ):
        metadata = child["metadata"]
        # The ServiceAccount also carries its deadline, in Unix seconds (2026-11-28T12:01:30Z).
        hint = {"agentidentity.dev/expires": "1795867290"} if child["kind"] == "ServiceAccount" else {}
        assert metadata["labels"] == {
            "app.kubernetes.io/managed-by": "agent-identity-operator",
            "agentidentity.dev/identity": "crawler",
            **hint,
        }
        assert metadata["annotations"]["agentidentity.dev/delegator"] == "user:alice"
        assert metadata["annotations"]["agentidentity.dev/task"] == "collect incident notes"
        assert metadata["annotations"]["agentidentity.dev/expires-at"] == "2026-11-28T12:01:30Z"
        assert json.loads(metadata["annotations"]["agentidentity.dev/delegation-chain"]) == ["user:alice"]
        assert metadata["ownerReferences"] == [
            {
                "apiVersion": "agentidentity.dev/v1alpha1",
                "kind": "AgentIdentity",
                "name": "crawler",
                "uid": "uid-crawler",
                "controller": True,
                "blockOwnerDeletion": False,
            }
        ]


def test_role_holds_exactly_the_scopes_and_patch_of_its_own_identity() -> None:
    agent = identity(scopes=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["notes"]}])
    assert children.role(agent, PROVENANCE)["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["notes"]},
        # kubectl agent done: patch (spec.done), of this one AgentIdentity by name, and nothing else
        {"apiGroups": ["agentidentity.dev"], "resources": ["agentidentities"], "verbs": ["patch"], "resourceNames": ["crawler"]},
    ]


def test_service_account_mounts_nothing_and_binding_binds_only_it() -> None:
    agent = identity()
    assert children.service_account(agent, PROVENANCE)["automountServiceAccountToken"] is False
    binding = children.role_binding(agent, PROVENANCE)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "aid-crawler"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "aid-crawler", "namespace": "support"}]


def test_token_request_is_bound_to_the_secret() -> None:
    request = children.token_request(audiences=["vault"], expiration_seconds=600, secret_name="s", secret_uid="u")
    assert request["spec"]["boundObjectRef"] == {"apiVersion": "v1", "kind": "Secret", "name": "s", "uid": "u"}
    assert request["spec"]["audiences"] == ["vault"]


def test_the_kubeconfig_uses_exactly_the_token_in_the_identity_namespace() -> None:
    data = children.token_secret_data(identity=identity(), issued=ISSUED, **ACCESS)
    document = yaml.safe_load(data["kubeconfig"])
    assert document["users"][0]["user"] == {"token": TOKEN}
    assert document["contexts"][0]["context"]["namespace"] == "support"
    assert base64.b64decode(document["clusters"][0]["cluster"]["certificate-authority-data"]).decode() == ACCESS["ca_cert"]
    assert data["namespace"] == "support" and data["ca.crt"] == ACCESS["ca_cert"]


def test_an_issued_token_never_shows_in_its_repr() -> None:
    assert TOKEN not in repr(ISSUED)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: None, ChildAction.CREATE),
        (observed, ChildAction.KEEP),
        (lambda d: {**observed(d), "metadata": {**observed(d)["metadata"], "ownerReferences": []}}, ChildAction.CONFLICT),
        (lambda d: observed(d, rules=[{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]), ChildAction.UPDATE),
        (lambda d: {**observed(d), "metadata": {**observed(d)["metadata"], "labels": {}}}, ChildAction.UPDATE),
    ],
    ids=["missing", "as-desired", "not-ours", "rules-widened", "labels-stripped"],
)
def test_diff_of_a_role(mutate, expected: ChildAction) -> None:  # type: ignore[no-untyped-def]
    desired = children.role(identity(), PROVENANCE)
    assert diff_child(desired, mutate(desired), owner_uid="uid-crawler") is expected


def test_a_rebound_rolebinding_is_recreated_because_roleref_is_immutable() -> None:
    desired = children.role_binding(identity(), PROVENANCE)
    actual = observed(desired, roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"})
    assert diff_child(desired, actual, owner_uid="uid-crawler") is ChildAction.RECREATE


def test_a_service_account_that_starts_automounting_is_updated() -> None:
    desired = children.service_account(identity(), PROVENANCE)
    assert (
        diff_child(desired, observed(desired, automountServiceAccountToken=True), owner_uid="uid-crawler") is ChildAction.UPDATE
    )


def test_updates_keep_what_others_and_the_token_wrote() -> None:
    desired = children.token_secret(identity(), PROVENANCE)
    actual = observed(desired, data={"token": "dG9r"})
    actual["metadata"]["annotations"]["agentidentity.dev/token-sha256"] = "abc"
    actual["metadata"]["labels"]["team"] = "support"
    merged = merged_for_update(desired, actual)
    assert merged["data"] == {"token": "dG9r"}
    assert merged["metadata"]["resourceVersion"] == "7"
    assert merged["metadata"]["labels"]["team"] == "support"
    assert merged["metadata"]["annotations"]["agentidentity.dev/token-sha256"] == "abc"


def secret_holding(data: dict[str, str], issued: IssuedToken = ISSUED) -> dict:
    secret = observed(children.token_secret(identity(), PROVENANCE))
    secret["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    secret["metadata"]["annotations"].update(children.token_annotations(issued))
    return secret


def test_token_verdicts() -> None:
    expected = children.token_secret_data(identity=identity(), issued=ISSUED, **ACCESS)
    deadline = PROVENANCE.expires_at

    def verdict(secret: dict, expected_data: dict | None = expected) -> TokenVerdict:
        return token_verdict(secret, expected_data=expected_data, now=CREATED, identity_expires_at=deadline)

    assert verdict(secret_holding(expected)) is TokenVerdict.VALID
    assert verdict(observed(children.token_secret(identity(), PROVENANCE)), None) is TokenVerdict.MISSING
    assert verdict(secret_holding({**expected, "token": "forged"})) is TokenVerdict.ALTERED
    assert verdict(secret_holding({**expected, "namespace": "other"})) is TokenVerdict.ALTERED
    capped = IssuedToken(token=TOKEN, issued_at=CREATED - timedelta(minutes=9), expires_at=CREATED + timedelta(minutes=1))
    long_lived = token_verdict(
        secret_holding(expected, capped), expected_data=expected, now=CREATED, identity_expires_at=CREATED + timedelta(hours=2)
    )
    assert long_lived is TokenVerdict.REFRESH


def test_the_children_plan_is_a_value_conflicts_found_before_any_write() -> None:
    agent = identity()
    desired = {
        ChildKind.SERVICE_ACCOUNT: children.service_account(agent, PROVENANCE),
        ChildKind.ROLE: children.role(agent, PROVENANCE),
        ChildKind.ROLE_BINDING: children.role_binding(agent, PROVENANCE),
    }
    ours = {**desired[ChildKind.SERVICE_ACCOUNT], "metadata": {**desired[ChildKind.SERVICE_ACCOUNT]["metadata"], "uid": "sa-1"}}
    foreign_role = {"kind": "Role", "metadata": {"name": "aid-crawler", "uid": "someone-else"}, "rules": []}
    drifted = {**desired[ChildKind.ROLE_BINDING], "subjects": [{"kind": "User", "name": "mallory"}]}
    plan = plan_children(
        agent, desired, {ChildKind.SERVICE_ACCOUNT: ours, ChildKind.ROLE: foreign_role, ChildKind.ROLE_BINDING: drifted}
    )
    assert [(step.kind, step.action) for step in plan.steps] == [
        (ChildKind.SERVICE_ACCOUNT, ChildAction.KEEP),
        (ChildKind.ROLE, ChildAction.CONFLICT),
        (ChildKind.ROLE_BINDING, ChildAction.UPDATE),
    ]
    assert [step.kind for step in plan.conflicts] == [ChildKind.ROLE]
    assert [step.kind for step in plan.repairs] == [ChildKind.ROLE_BINDING]
    # Not observed (a never-provisioned identity): every child is created, nothing is repaired.
    unseen = plan_children(agent, desired, {})
    assert {step.action for step in unseen.steps} == {ChildAction.CREATE} and not unseen.repairs


def test_the_deadline_hint_on_the_service_account_is_never_enforced() -> None:
    """A ServiceAccount made before the hint existed (an upgrade) or whose hint someone changed is
    kept as it is: the hint only orders a take-over's work, and rewriting 100,000 accounts after
    an upgrade would cost 100,000 writes."""
    desired = children.service_account(identity(), PROVENANCE)
    for hint in (None, "0"):
        actual = observed(desired)
        if hint is None:
            del actual["metadata"]["labels"]["agentidentity.dev/expires"]
        else:
            actual["metadata"]["labels"]["agentidentity.dev/expires"] = hint
        assert diff_child(desired, actual, owner_uid="uid-crawler") is ChildAction.KEEP
    other_label_removed = observed(desired)
    del other_label_removed["metadata"]["labels"]["agentidentity.dev/identity"]
    assert diff_child(desired, other_label_removed, owner_uid="uid-crawler") is ChildAction.UPDATE
