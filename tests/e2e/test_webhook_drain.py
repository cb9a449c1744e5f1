"""A stopping operator keeps admitting while it drains (--webhook-drain), on the real API server:
told to stop (SIGTERM), it still answers the API server's admission requests, each answer closing
its connection, and stops listening only once the drain is over. Without the drain the create made
after SIGTERM is refused (failurePolicy Fail, the webhook unreachable or its connection closed
under the request).
"""

from __future__ import annotations

import signal
from pathlib import Path

from agent_identity.plan.children import ANNOTATION_CREATOR
from support.cluster import Cluster, make_identity, wait_for
from support.webhooks import listening, operator_with_webhooks

DRAIN_S = 10


def test_a_stopping_operator_admits_through_its_drain_and_then_stops_listening(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    args = ["--webhook-drain", f"{DRAIN_S}s"]
    with operator_with_webhooks(cluster, namespace, tmp_path, extra_args=args) as operator:
        port = int(args_after(operator.extra_args, "--webhook-port"))
        # The API server now holds a kept-alive connection to the webhook server.
        cluster.create_identity(make_identity("before", namespace))
        assert operator.process is not None
        operator.process.send_signal(signal.SIGTERM)
        wait_for("the webhook server draining", lambda: "Webhook server draining" in operator.output())

        admitted = cluster.create_identity(make_identity("during", namespace))
        assert ANNOTATION_CREATOR in admitted["metadata"]["annotations"], "stamped by the draining operator's webhook"
        assert operator.process.poll() is None, "still running: the drain is not over"

        assert operator.wait_exit(timeout=DRAIN_S + 30) == 0
        assert not listening(port)


def args_after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]
