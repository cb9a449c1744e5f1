"""make bench-audit-verify: how fast a trail is written (linked) and verified offline, for
BENCH_AUDIT_RECORDS records (default 1,000,000) with a checkpoint every BENCH_AUDIT_EVERY
(default 1,000). Prints figures; asserts nothing."""

from __future__ import annotations

import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from agent_identity.keys.signing import KeySet, new_key
from agent_identity.keys.trail import Head, Line, checkpoint_line, link, sign_checkpoint, verify_trail

RECORDS = int(os.environ.get("BENCH_AUDIT_RECORDS", "1000000"))
EVERY = int(os.environ.get("BENCH_AUDIT_EVERY", "1000"))


def record(n: int) -> dict[str, object]:
    """A record shaped like the operator's (ops/audit.py), its person already a subject id."""
    return {
        "audit": "agentidentity.dev/v1",
        "time": "2026-12-07T20:00:00Z",
        "action": "provisioned",
        "reason": "Provisioned",
        "uid": f"00000000-0000-0000-0000-{n:012d}",
        "namespace": "team",
        "name": f"agent-{n}",
        "task": "summarise the open tickets",
        "delegator": "subject:0123456789abcdef",
        "delegationChain": ["subject:0123456789abcdef"],
        "createdAt": "2026-12-07T20:00:00Z",
        "expiresAt": "2026-12-07T20:10:00Z",
        "profile": "read-only",
        "riskLevel": "low",
    }


def main() -> None:
    now = datetime.now(UTC)
    key = new_key(now)
    jwks = KeySet((key,)).jwks()
    path = Path(tempfile.mkdtemp()) / "audit.log"
    head, previous = Head("bench"), None
    started = time.perf_counter()
    with path.open("w") as out:
        for n in range(1, RECORDS + 1):
            linked, head = link(record(n), head=head, writer="bench")
            out.write(json.dumps(linked, separators=(",", ":")) + "\n")
            if n % EVERY == 0:
                previous = sign_checkpoint(head, writer="bench", now=now, previous=previous, key=key)
                out.write(json.dumps(checkpoint_line(previous), separators=(",", ":")) + "\n")
    written = time.perf_counter() - started
    size = path.stat().st_size
    started = time.perf_counter()
    with path.open() as stream:
        report = verify_trail((Line(f"audit.log:{i}", text) for i, text in enumerate(stream, 1)), jwks=jwks)
    verified = time.perf_counter() - started
    assert report.ok, report.problems[:1]
    print(f"records: {RECORDS:,}, checkpoints every {EVERY:,}, file {size / 2**20:.0f} MiB")
    print(f"write (link + serialise + sign): {written:.1f} s, {RECORDS / written:,.0f} records/s")
    print(f"verify: {verified:.1f} s, {RECORDS / verified:,.0f} records/s")
    path.unlink()


if __name__ == "__main__":
    main()
