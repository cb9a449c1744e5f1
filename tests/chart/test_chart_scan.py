"""An off-the-shelf scanner on the chart: checkov's Kubernetes checks on the chart rendered with
default values. Every check that fails must be one that the chart README justifies, row by row, in
its "Chart scan (checkov)" table, and every check that table justifies must still fail, so the
table never keeps an excuse for something already fixed. `make chart-scan` runs the same scan.

checkov comes from scripts/install-checkov.sh: a pinned version in a virtualenv of its own, under
~/.cache/agent-identity-operator/, installed on first use (about a minute on a fresh machine) and
reused after that. Helm comes from scripts/install-helm.sh, as for tests/chart/test_chart.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.tools import CHART, checkov_binary, render_chart

README = CHART / "README.md"
SECTION = "### Chart scan (checkov)"
ROW = re.compile(r"^\| `(?P<check>CKV2?_K8S_\d+)` \|(?P<wants>[^|]*)\|(?P<why>[^|]*)\|$")


def justified_checks() -> dict[str, str]:
    """The check IDs the chart README's table justifies, each with its justification."""
    text = README.read_text()
    assert SECTION in text, f"{README} has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `CKV")]
    justified: dict[str, str] = {}
    for line in rows:
        match = ROW.match(line)
        assert match, f"a malformed row in the README's checkov table: {line}"
        assert match["wants"].strip() and match["why"].strip(), f"{match['check']} is not justified"
        assert match["check"] not in justified, f"{match['check']} is listed twice"
        justified[match["check"]] = match["why"].strip()
    return justified


def scan(rendered: Path) -> dict[str, Any]:
    """checkov's JSON report of one file, Kubernetes checks only, nothing fetched from anywhere."""
    command = [checkov_binary(), "--file", str(rendered), "--framework", "kubernetes", "--quiet", "--compact"]
    result = subprocess.run(
        [*command, "--skip-download", "--output", "json"], check=False, capture_output=True, text=True, timeout=600
    )
    assert result.returncode in {0, 1}, f"checkov failed to run ({result.returncode}):\n{result.stderr[-4000:]}"
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    (kubernetes,) = [r for r in reports if r.get("check_type") == "kubernetes"]
    assert isinstance(kubernetes, dict)
    return kubernetes


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    objects = render_chart()
    rendered = tmp_path_factory.mktemp("chart-scan") / "chart.yaml"
    rendered.write_text(yaml.safe_dump_all(objects))
    return scan(rendered)


def test_checkov_scanned_every_rendered_object(report: dict[str, Any]) -> None:
    summary = report["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] >= len(render_chart())  # (it counts the Deployment's Pod template too)
    assert summary["passed"] > 100  # the checks ran: pod security, RBAC, probes, resources, ...


def test_every_failed_check_is_justified_in_the_chart_readme_and_no_more(report: dict[str, Any]) -> None:
    failed: dict[str, set[str]] = {}
    for check in report["results"]["failed_checks"]:
        failed.setdefault(check["check_id"], set()).add(check["resource"])
    justified = justified_checks()
    unjustified = {check: sorted(resources) for check, resources in failed.items() if check not in justified}
    assert unjustified == {}, f"fix these in the chart, or justify them in the README's {SECTION!r} table"
    stale = sorted(set(justified) - set(failed))
    assert stale == [], f"these pass now: remove them from the README's {SECTION!r} table"
    # Each justified finding concerns the operator's Deployment, nothing else, but for the Role and
    # RoleBinding that let it record Events about Namespaces in default (CKV_K8S_21).
    events_role = {f"{kind}.default.agent-identity-operator-events" for kind in ("Role", "RoleBinding")}
    assert failed.pop("CKV_K8S_21", set()) == events_role
    assert {resource for resources in failed.values() for resource in resources} <= {
        "Deployment.agent-identity-system.agent-identity-operator"
    }
