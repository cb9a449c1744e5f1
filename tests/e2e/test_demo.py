"""`make demo`, the main job, run to its end: three identities Ready, retired on time, the old
token refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.cluster import Cluster, local_plane

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_runs_to_its_end(cluster: Cluster) -> None:
    local_plane(cluster, "make demo starts one of its own (built from its cached binaries), whatever cluster the suite runs on")
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py")],
        env={**os.environ, "DEMO_EXIT_WHEN_DONE": "1"},
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Every identity has expired, holds no credentials, and the old token is refused." in done.stdout
    final = done.stdout.rsplit("\x1b[2J", 1)[-1]  # the last screen
    assert final.count("Expired") == 3
    assert "list configmaps (in scope)     -> 401 Unauthorized" in final
