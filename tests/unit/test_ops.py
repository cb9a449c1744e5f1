"""Readiness means "can reach the API server and list identities", not "the process runs"."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from agent_identity.kube import KubeError
from agent_identity.ops import Readiness, serve


def wait_until(predicate, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_ready_only_after_a_successful_probe_and_while_workers_live() -> None:
    workers = {"alive": True}
    readiness = Readiness(lambda: None, alive=lambda: workers["alive"])
    try:
        wait_until(lambda: readiness.readyz()[0] == 200)
        assert readiness.readyz() == (200, "text/plain", b"ready")
        workers["alive"] = False
        assert readiness.readyz()[0] == 503 and readiness.healthz()[0] == 500
    finally:
        readiness.stop()


def test_an_unreachable_or_forbidden_api_server_is_not_ready_and_says_why() -> None:
    def forbidden() -> None:
        raise KubeError(method="GET", path="/apis/x", status=403, reason="Forbidden", message="cannot list")

    readiness = Readiness(forbidden, alive=lambda: True)
    try:
        wait_until(lambda: readiness.last_error != "not probed yet")
        status, _, body = readiness.readyz()
        assert status == 503 and b"403 Forbidden" in body
        assert readiness.healthz()[0] == 200  # alive, just not ready
    finally:
        readiness.stop()


def test_the_server_serves_routes_and_404s_the_rest() -> None:
    server = serve({"/readyz": lambda: (503, "text/plain", b"not ready: x")}, address="127.0.0.1", port=0)
    port = server.server_address[1]
    try:
        for path, code in (("/readyz", 503), ("/nope", 404)):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3)
                raise AssertionError("expected an HTTP error")
            except urllib.error.HTTPError as error:
                assert error.code == code
    finally:
        server.shutdown()
