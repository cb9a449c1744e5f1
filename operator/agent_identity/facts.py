"""Gathers what the policy checks need from the API server: the profile, the delegating identity,
and one SubjectAccessReview per requested permission of the creator. Used by the validating
webhook and by the reconciler alike, so both judge an identity on the same facts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from .api import AgentIdentity, AgentProfile
from .kube import Kube
from .policy import Creator, Facts, delegator_username, requested_permissions
from .rbac import Permission

ProfileLookup = Callable[[str], dict[str, Any] | None]


def load_profile(lookup: ProfileLookup, name: str | None) -> AgentProfile | None:
    """The named profile, or None when it is absent or does not parse (the checks say so)."""
    if not name:
        return None
    body = lookup(name)
    if body is None:
        return None
    try:
        return AgentProfile.model_validate(body)
    except ValidationError:
        return None


def _attributes(permission: Permission, namespace: str) -> dict[str, str]:
    resource, _, subresource = permission.resource.partition("/")
    attributes = {"namespace": namespace, "verb": permission.verb, "group": permission.api_group, "resource": resource}
    if subresource:
        attributes["subresource"] = subresource
    if permission.resource_name is not None:
        attributes["name"] = permission.resource_name
    return attributes


def _creator_may(kube: Kube, creator: Creator, attributes: dict[str, str]) -> bool:
    return kube.may(user=creator.username, groups=creator.groups, uid=creator.uid, extra=creator.extra, attributes=attributes)


def gather(
    kube: Kube,
    identity: AgentIdentity,
    *,
    profile: AgentProfile | None,
    delegator: AgentIdentity | None,
    creator: Creator | None,
    require_creator: bool,
    created_at: datetime,
) -> Facts:
    namespace = identity.metadata.namespace
    lacks: tuple[Permission, ...] = ()
    may_act_as_delegator = False
    if creator is not None:
        lacks = tuple(
            permission
            for permission in requested_permissions(identity.spec.scopes)
            if not _creator_may(kube, creator, _attributes(permission, namespace))
        )
        spec_delegator = identity.spec.delegator
        if (
            spec_delegator is not None
            and spec_delegator.kind != "AgentIdentity"
            and creator.username != delegator_username(spec_delegator, namespace)
        ):
            if spec_delegator.kind == "User":
                target = {"verb": "impersonate", "group": "", "resource": "users", "name": spec_delegator.name}
            else:
                target = {
                    "verb": "impersonate",
                    "group": "",
                    "resource": "serviceaccounts",
                    "namespace": spec_delegator.namespace or namespace,
                    "name": spec_delegator.name,
                }
            may_act_as_delegator = _creator_may(kube, creator, target)
    return Facts(
        identity=identity,
        created_at=created_at,
        profile=profile,
        delegator=delegator,
        creator=creator,
        require_creator=require_creator,
        creator_lacks=lacks,
        creator_may_act_as_delegator=may_act_as_delegator,
    )
