"""Pod Security of served namespaces: the pure rule (policy/pod_security.py), and the check that
warns once per namespace while it stays unenforced (engine/pod_security.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest

from agent_identity.engine.pod_security import REASON, PodSecurityCheck
from agent_identity.kube.client import Kube
from agent_identity.policy.pod_security import (
    ENFORCE_LABEL,
    Level,
    enforced_level,
    fix,
    keeps_nodes_out,
    namespaces_to_check,
    warning,
)


@pytest.mark.parametrize(
    ("labels", "level"),
    [
        (None, Level.PRIVILEGED),
        ({}, Level.PRIVILEGED),
        ({"team": "a"}, Level.PRIVILEGED),
        ({ENFORCE_LABEL: "privileged"}, Level.PRIVILEGED),
        ({ENFORCE_LABEL: "baseline"}, Level.BASELINE),
        ({ENFORCE_LABEL: "restricted"}, Level.RESTRICTED),
        ({"pod-security.kubernetes.io/warn": "restricted"}, Level.PRIVILEGED),  # warn and audit enforce nothing
        ({"pod-security.kubernetes.io/audit": "baseline"}, Level.PRIVILEGED),
        ({ENFORCE_LABEL: "Baseline"}, Level.RESTRICTED),  # no level: the API server enforces restricted
    ],
)
def test_the_enforce_label_names_the_level(labels: dict[str, str] | None, level: Level) -> None:
    assert enforced_level(labels) is level


def test_without_the_label_the_cluster_default_applies_and_a_label_overrides_it() -> None:
    assert enforced_level({}, cluster_default=Level.BASELINE) is Level.BASELINE
    assert enforced_level({ENFORCE_LABEL: "privileged"}, cluster_default=Level.RESTRICTED) is Level.PRIVILEGED


def test_only_privileged_lets_nodes_in() -> None:
    assert [level for level in Level if not keeps_nodes_out(level)] == [Level.PRIVILEGED]


def test_the_served_namespaces_are_checked_else_those_with_identities_never_the_operators() -> None:
    def never() -> list[str]:
        raise AssertionError("asked for the identities' namespaces while serving a list")

    assert namespaces_to_check(served=["a", "b", "home"], with_identities=never, operator_namespace="home") == {"a", "b"}
    found = namespaces_to_check(served=[], with_identities=lambda: ["c", "c", "home"], operator_namespace="home")
    assert found == {"c"}


def test_the_warning_says_why_and_gives_the_exact_fix() -> None:
    assert fix("agents") == f"kubectl label namespace agents {ENFORCE_LABEL}=baseline --overwrite"
    text = warning("agents", Level.PRIVILEGED)
    assert fix("agents") in text and "privileged or hostPath pod" in text and "--pod-security-default" in text
    assert len(text) <= 1024  # an Event's message


class FakeKube:
    def __init__(self) -> None:
        self.labels: dict[str, dict[str, str] | None] = {}
        self.events: list[tuple[str, str, str]] = []
        self.leader = True

    def get_namespace(self, name: str) -> dict[str, Any] | None:
        if name not in self.labels:
            return None
        metadata = {"name": name, "uid": f"uid-{name}", "labels": self.labels[name]}
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}

    def may_write(self) -> bool:
        return self.leader

    def record_event(self, *, involved: dict[str, Any], event_type: str, reason: str, message: str, now: datetime) -> None:
        self.events.append((involved["metadata"]["name"], event_type, reason))


def checker(kube: FakeKube, namespaces: list[str], default: Level = Level.PRIVILEGED) -> PodSecurityCheck:
    return PodSecurityCheck(
        cast(Kube, kube), namespaces=lambda: namespaces, cluster_default=default, clock=lambda: datetime(2025, 1, 1, tzinfo=UTC)
    )


def test_an_unenforced_namespace_is_warned_about_once_and_again_after_it_was_fixed_in_between() -> None:
    kube = FakeKube()
    kube.labels = {"open": None, "closed": {ENFORCE_LABEL: "restricted"}}
    check = checker(kube, ["open", "closed", "not-yet"])
    check.step()
    check.step()
    assert kube.events == [("open", "Warning", REASON)]
    assert check.enforcement() == {"open": False, "closed": True}
    kube.labels["open"] = {ENFORCE_LABEL: "baseline"}
    check.step()
    assert check.enforcement()["open"] is True and len(kube.events) == 1
    kube.labels["open"] = {ENFORCE_LABEL: "privileged"}
    check.step()
    assert kube.events == [("open", "Warning", REASON)] * 2


def test_a_standby_reports_but_leaves_the_warning_to_the_leader() -> None:
    kube = FakeKube()
    kube.labels = {"open": {}}
    kube.leader = False
    check = checker(kube, ["open"])
    check.step()
    assert kube.events == [] and check.enforcement() == {"open": False}
    kube.leader = True
    check.step()
    assert kube.events == [("open", "Warning", REASON)]


def test_the_cluster_default_silences_unlabelled_namespaces_only() -> None:
    kube = FakeKube()
    kube.labels = {"unlabelled": {}, "opted-out": {ENFORCE_LABEL: "privileged"}}
    check = checker(kube, ["unlabelled", "opted-out"], default=Level.BASELINE)
    check.step()
    assert check.enforcement() == {"unlabelled": True, "opted-out": False}
    assert [name for name, _, _ in kube.events] == ["opted-out"]


def test_a_namespace_no_longer_served_leaves_the_metrics() -> None:
    kube = FakeKube()
    kube.labels = {"a": {}, "b": {}}
    served = ["a", "b"]
    check = PodSecurityCheck(cast(Kube, kube), namespaces=lambda: served, cluster_default=Level.PRIVILEGED, clock=datetime.now)
    check.step()
    served.remove("b")
    del kube.labels["a"]  # deleted
    check.step()
    assert check.enforcement() == {}
