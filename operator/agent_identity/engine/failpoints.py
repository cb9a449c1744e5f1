"""Crash points for the convergence tests, as etcd's gofail does it.

``AGENT_IDENTITY_FAILPOINT=<name>`` makes the process exit abruptly (no clean-up, no flush) the
first time it passes that point, exactly like a ``kill -9`` at the worst moment. Unset in
production, this is one dictionary lookup per point.
"""

from __future__ import annotations

import os

_ARMED = os.environ.get("AGENT_IDENTITY_FAILPOINT", "")
EXIT_CODE = 86


def hit(name: str) -> None:
    if name == _ARMED:
        os._exit(EXIT_CODE)
