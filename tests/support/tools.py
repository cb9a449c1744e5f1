"""The pinned tools the tests use (Helm, checkov, Prometheus), provided by the repo's install
scripts, and the chart rendered by that Helm. One place, so every test gets them the same way."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "agent-identity-operator"


def script_output(script: str, what: str, *, timeout: float) -> list[str]:
    """The lines a ``scripts/`` installer prints (its last lines are the tools' paths)."""
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / script)], check=False, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/{script} could not provide {what}:\n{result.stderr[-4000:]}")
    return result.stdout.strip().splitlines()


@functools.cache
def helm_binary() -> str:
    """The pinned Helm, built by scripts/install-helm.sh on first use."""
    path = script_output("install-helm.sh", "helm", timeout=1800)[-1]
    assert Path(path).is_file(), f"install-helm.sh printed {path!r}, which is not a file"
    return path


@functools.cache
def checkov_binary() -> str:
    """The pinned checkov, installed by scripts/install-checkov.sh into its own virtualenv on first use."""
    path = script_output("install-checkov.sh", "checkov", timeout=1200)[-1]
    assert Path(path).is_file(), f"install-checkov.sh printed {path!r}, which is not a file"
    return path


def render_chart(
    *args: str, release: str = "agent-identity-operator", namespace: str = "agent-identity-system"
) -> list[dict[str, Any]]:
    """``helm template`` of the chart with ``args``: the rendered objects."""
    result = subprocess.run(
        [helm_binary(), "template", release, str(CHART), "--namespace", namespace, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
