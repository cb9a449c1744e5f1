"""The generated reference pages (docs/reference: CRD fields, flags, metrics) say what the code does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_reference_pages_are_what_the_code_generates() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "docs_reference.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{result.stderr.strip()}: run `make docs` and commit docs/reference/"
