"""--audit-file: the records go to a file rotated by size, not stdout, and the rotated files, read
oldest first, verify as one trail."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent_identity.app import main as entry
from agent_identity.app.config import parse_args
from agent_identity.keys.signing import KeySet, new_key
from agent_identity.keys.trail import AUDIT_VERSION, Head, Line, checkpoint_line, link, sign_checkpoint, verify_trail
from agent_identity.ops import audit


@pytest.fixture
def audit_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger(audit.LOGGER_NAME)
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield logger
    for handler in logger.handlers:
        handler.close()
    logger.handlers[:], logger.level, logger.propagate = saved


def test_the_file_sink_rotates_and_its_files_verify_oldest_first(
    audit_logger: logging.Logger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.log"
    config = parse_args(
        ["--unsafe-no-admission-webhooks", "--audit-file", str(path), "--audit-file-max-size", "1", "--audit-file-backups", "3"],
        {},
    )
    entry._configure_logging(config)
    now = datetime(2026, 12, 7, tzinfo=UTC)
    key = new_key(now)
    head, previous = Head("a"), None
    for n in range(1, 4001):  # about 2.4 MiB: two rotations
        linked, head = link(
            {"audit": AUDIT_VERSION, "action": "provisioned", "name": f"a-{n}", "pad": "x" * 500}, head=head, writer="w"
        )
        audit.write(linked)
        if n % 500 == 0:
            previous = sign_checkpoint(head, writer="w", now=now, previous=previous, key=key)
            audit.write(checkpoint_line(previous))
    assert capsys.readouterr().out == ""  # nothing on stdout
    files = [tmp_path / "audit.log.2", tmp_path / "audit.log.1", path]
    assert all(file.exists() for file in files) and not (tmp_path / "audit.log.3").exists()
    assert all(file.stat().st_size <= 1024 * 1024 for file in files)
    lines = [Line(f"{file.name}:{i}", text) for file in files for i, text in enumerate(file.read_text().splitlines(), 1)]
    report = verify_trail(lines, jwks=KeySet((key,)).jwks())
    assert report.ok and report.records == {"a": 4000} and report.signed == {"a": 4000}
    swapped = [line for file in (files[1], files[0], files[2]) for line in lines if line.where.startswith(f"{file.name}:")]
    assert verify_trail(swapped, jwks=KeySet((key,)).jwks()).problems[0].kind == "reordered"  # given in the wrong order
