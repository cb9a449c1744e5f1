"""Whether Pod Security keeps node access out of a served namespace. Pure.

An agent pod's projected token is a file on its node. Wherever Pod Security admits privileged or
``hostPath`` pods, whoever may create pods there can read every agent token on that node, and no
admission check of the operator's sees it. So each namespace the operator serves must enforce the
``baseline`` or ``restricted`` level (the ``pod-security.kubernetes.io/enforce`` label).

The rule mirrors the API server's PodSecurity admission:

- the label names the level: ``privileged`` is not enforcement, ``baseline`` and ``restricted`` are;
- without the label, the cluster's default applies: the ``defaults.enforce`` of the API server's
  PodSecurity admission configuration, which the operator cannot read, so it is told
  (``--pod-security-default``; Kubernetes' own default is ``privileged``);
- a label value that is no level makes the API server enforce ``restricted``, so it counts as
  enforced.

Namespaces exempted in that admission configuration are not enforced whatever their labels say;
the operator cannot see exemptions either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"


class Level(StrEnum):
    PRIVILEGED = "privileged"
    BASELINE = "baseline"
    RESTRICTED = "restricted"


def enforced_level(labels: Mapping[str, str] | None, *, cluster_default: Level = Level.PRIVILEGED) -> Level:
    """The level the API server enforces on pods of a namespace with these labels."""
    value = (labels or {}).get(ENFORCE_LABEL)
    if value is None:
        return cluster_default
    try:
        return Level(value)
    except ValueError:
        return Level.RESTRICTED  # the API server's answer to a value that is no level


def keeps_nodes_out(level: Level) -> bool:
    """Whether a namespace enforcing ``level`` refuses privileged and ``hostPath`` pods."""
    return level is not Level.PRIVILEGED


def namespaces_to_check(
    *, served: Iterable[str], with_identities: Callable[[], Iterable[str]], operator_namespace: str
) -> frozenset[str]:
    """The namespaces whose Pod Security matters: the served ones when the operator serves a list,
    else those where identities exist (asked only then); never the operator's own (it provisions
    nothing there)."""
    listed = frozenset(served)
    return (listed or frozenset(with_identities())) - {operator_namespace}


def fix(namespace: str) -> str:
    """The command that makes a namespace enforce ``baseline``."""
    return f"kubectl label namespace {namespace} {ENFORCE_LABEL}={Level.BASELINE} --overwrite"


def warning(namespace: str, level: Level) -> str:
    """Why a served namespace without enforcement matters, and the fix."""
    return (
        f"Pod Security is not enforced in namespace {namespace} (level {level}): whoever may create pods here can run a "
        "privileged or hostPath pod and read every agent token on its node, projected tokens included. "
        f"Fix: {fix(namespace)} (or restricted). If the API server's PodSecurity admission configuration enforces a "
        "default level, label the namespace with it or start the operator with --pod-security-default=<level>."
    )
