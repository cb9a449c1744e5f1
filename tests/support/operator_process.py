"""The operator as a child process: started, killed, restarted and read like the real thing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from agent_identity.local.controlplane import terminate

REPO = Path(__file__).resolve().parents[2]


# The CA of the certificate the API server shows webhooks (set by the cluster fixture: the local
# control plane's, or AGENT_IDENTITY_WEBHOOK_CLIENT_CA on a given cluster; None: it shows none).
WEBHOOK_CLIENT_CA: Path | None = None


class OperatorProcess:
    def __init__(
        self,
        *,
        kubeconfig: Path,
        namespace: str,
        log_dir: Path,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_dir = log_dir
        self.extra_args = extra_args or []
        self.env = env or {}  # on top of this process's environment
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / "operator.log"

    def start(self, *, failpoint: str | None = None, extra_args: list[str] | None = None) -> None:
        assert self.process is None or self.process.poll() is not None, "operator already running"
        env = {**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        if WEBHOOK_CLIENT_CA is not None:  # its webhooks answer only the API server's client certificate
            env.setdefault("AGENT_IDENTITY_WEBHOOK_CLIENT_CA", str(WEBHOOK_CLIENT_CA))
        env.pop("AGENT_IDENTITY_FAILPOINT", None)
        if failpoint:
            env["AGENT_IDENTITY_FAILPOINT"] = failpoint
        self.runs += 1
        log = self.log_path.open("ab")
        args = [*self.extra_args, *(extra_args or [])]
        if "--webhook-port" not in args:
            # The lifecycle suites judge provisioning, not admission: they run the documented unsafe
            # mode. The admission and hostile suites run the operator with its webhooks.
            args.append("--unsafe-no-admission-webhooks")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent_identity", "--namespace", self.namespace, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: no clean-up, like a node dying under the operator."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process:
            terminate(self.process, timeout=15)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def audit_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.output().splitlines():
            if line.startswith('{"audit"') and '"action":"checkpoint"' not in line:  # records, not checkpoints
                lines.append(json.loads(line))
        return lines
