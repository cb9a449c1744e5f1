"""Generates the AgentIdentity and AgentProfile CustomResourceDefinitions from the pydantic models in ``api``.

Run ``python -m agent_identity.api.crd crds`` (``make crds``); a unit test fails when a committed
file differs from what this writes, so the schema the API server enforces and the models the operator parses cannot drift apart.

Kubernetes wants a *structural* schema: no ``$ref``, no ``anyOf`` with null, no
``additionalProperties: false`` beside ``properties`` (a map's value schema stays). This module rewrites pydantic's JSON Schema
into that form and nothing else.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agent_identity import GROUP, KIND, PLURAL, VERSION
from agent_identity.api.v1alpha1 import AgentIdentity, AgentIdentitySpec, AgentIdentityStatus, AgentProfile, AgentProfileSpec

_DROPPED_KEYS = {"title"}


def _structural(schema: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(schema, list):
        return [_structural(item, definitions) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        target = definitions[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _structural(merged, definitions)
    if "anyOf" in schema:
        # Optional[X] is anyOf [X, null]; absence already means "not set" in Kubernetes.
        variants = [variant for variant in schema["anyOf"] if variant.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"cannot express a union of {len(variants)} types structurally: {schema}")
        rest = {k: v for k, v in schema.items() if k not in {"anyOf", "default"}}
        return _structural({**variants[0], **rest}, definitions)
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED_KEYS or (key == "default" and value is None):
            continue
        if key == "additionalProperties" and isinstance(value, bool):
            continue  # extra="forbid"/"allow": the schema's properties already say it; a map keeps its value schema
        if key == "properties":
            result[key] = {name: _structural(prop, definitions) for name, prop in value.items()}
        elif key == "const":
            result["enum"] = [value]
        else:
            result[key] = _structural(value, definitions)
    return result


def _schema_of(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation", ref_template="#/$defs/{model}")
    definitions = raw.pop("$defs", {})
    return dict(_structural(raw, definitions))


@dataclass(frozen=True)
class Resource:
    """One custom resource: its names, scope, schema sources and printer columns."""

    kind: str
    plural: str
    short_name: str
    scope: str
    spec: type[Any]
    status: type[Any] | None
    root: type[Any]
    columns: tuple[tuple[str, str, str], ...]  # (name, type, jsonPath)
    selectable: tuple[str, ...] = ()  # jsonPaths field selectors may use

    @property
    def file_name(self) -> str:
        return f"{GROUP}_{self.plural}.yaml"


AGENT_IDENTITY = Resource(
    kind=KIND,
    plural=PLURAL,
    short_name="aid",  # another project's AgentIdentity already uses "agid"
    scope="Namespaced",
    spec=AgentIdentitySpec,
    status=AgentIdentityStatus,
    root=AgentIdentity,
    columns=(
        ("Phase", "string", ".status.phase"),
        ("Profile", "string", ".status.profile"),
        ("Risk", "string", ".status.riskLevel"),
        ("Delegator", "string", ".spec.delegator.name"),
        ("Expires", "string", ".status.expiresAt"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ),
    # `--field-selector status.phase=Ready` for people; for the operator, a restart lists the
    # identities that are not settled before all the others, and the delegates of one retired
    # before the listing reached them (engine/informer.py).
    selectable=(".status.phase", ".spec.delegator.name"),
)
AGENT_PROFILE = Resource(
    kind="AgentProfile",
    plural="agentprofiles",
    short_name="aprof",
    scope="Cluster",
    spec=AgentProfileSpec,
    status=None,
    root=AgentProfile,
    columns=(
        ("Risk", "string", ".spec.riskLevel"),
        ("Max TTL", "string", ".spec.maxTTL"),
        ("Depth", "integer", ".spec.maxDelegationDepth"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ),
)
RESOURCES = (AGENT_IDENTITY, AGENT_PROFILE)


def openapi_schema(resource: Resource) -> dict[str, Any]:
    """The openAPIV3Schema of one custom resource."""
    root_rules = resource.root.model_config.get("json_schema_extra") or {}
    assert isinstance(root_rules, dict)
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": _schema_of(resource.spec),
    }
    if resource.status is not None:
        properties["status"] = _schema_of(resource.status)
    return {"type": "object", "required": ["spec"], "properties": properties, **root_rules}


def custom_resource_definition(resource: Resource) -> dict[str, Any]:
    version: dict[str, Any] = {"name": VERSION, "served": True, "storage": True}
    if resource.status is not None:
        version["subresources"] = {"status": {}}
    version["additionalPrinterColumns"] = [
        {"name": name, "type": type_, "jsonPath": path} for name, type_, path in resource.columns
    ]
    if resource.selectable:
        version["selectableFields"] = [{"jsonPath": path} for path in resource.selectable]
    version["schema"] = {"openAPIV3Schema": openapi_schema(resource)}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{resource.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": resource.scope,
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.kind.lower(),
                "shortNames": [resource.short_name],
                "categories": ["agentidentity"],
            },
            "versions": [version],
        },
    }


HEADER = "# Generated by `python -m agent_identity.api.crd` from operator/agent_identity/api/v1alpha1.py. DO NOT EDIT.\n"


def render(resource: Resource) -> str:
    return HEADER + yaml.safe_dump(custom_resource_definition(resource), sort_keys=False, width=120)


def main() -> None:
    """Writes every CRD into the directory given as the only argument (``crds/``)."""
    directory = Path(sys.argv[1])
    for resource in RESOURCES:
        (directory / resource.file_name).write_text(render(resource))


if __name__ == "__main__":
    main()
