"""Fault points for the convergence tests, as etcd's gofail does it.

``AGENT_IDENTITY_FAILPOINT=<name>`` makes the process exit abruptly (no clean-up, no flush) the
first time it passes that point, exactly like a ``kill -9`` at the worst moment.
``AGENT_IDENTITY_FAILPOINT=<name>=sleep(<seconds>)`` makes every pass through it wait that long
instead: a slow API server, say, where the tests cannot make one. Unset in production, this is
one comparison per point.
"""

from __future__ import annotations

import os
import re
import time

_ARMED, _, _ACTION = os.environ.get("AGENT_IDENTITY_FAILPOINT", "").partition("=")
_SLEEP = re.fullmatch(r"sleep\((\d+(?:\.\d+)?)\)", _ACTION)
if _ACTION and _SLEEP is None:
    raise ValueError(f"AGENT_IDENTITY_FAILPOINT: {_ACTION!r} is not an action (exit, or sleep(<seconds>))")
EXIT_CODE = 86


def hit(name: str) -> None:
    if name != _ARMED:
        return
    if _SLEEP is not None:
        time.sleep(float(_SLEEP.group(1)))
    else:
        os._exit(EXIT_CODE)
