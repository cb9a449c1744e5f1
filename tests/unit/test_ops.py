"""Readiness means "can reach the API server and list identities", not "the process runs"."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from agent_identity.kube.client import KubeError
from agent_identity.ops.http import Readiness, serve


def test_ready_only_after_a_successful_probe_and_while_every_loop_lives() -> None:
    dead: list[str] = []
    readiness = Readiness(lambda: None, alive=lambda: dead)
    assert readiness.readyz()[0] == 503  # never probed
    readiness.probe()
    assert readiness.readyz() == (200, "text/plain", b"ready")
    dead.append("watch-secret")
    assert readiness.readyz()[0] == 503
    assert readiness.healthz() == (500, "text/plain", b"stopped: watch-secret")


def test_an_unreachable_or_forbidden_api_server_is_not_ready_and_says_why() -> None:
    def forbidden() -> None:
        raise KubeError(method="GET", path="/apis/x", status=403, reason="Forbidden", message="cannot list")

    readiness = Readiness(forbidden, alive=lambda: [])
    with pytest.raises(KubeError):
        readiness.probe()  # the supervised loop logs it and backs off
    status, _, body = readiness.readyz()
    assert status == 503 and b"403 Forbidden" in body
    assert readiness.healthz()[0] == 200  # alive, just not ready


def test_a_replica_held_back_is_alive_but_not_ready_and_says_why() -> None:
    """A standby still listing: a rolling update must not stop the replica that would hand over to it."""
    why: list[str] = ["a standby still listing"]
    readiness = Readiness(lambda: None, alive=lambda: [], held_back=lambda: why[0] if why else None)
    readiness.probe()
    assert readiness.readyz() == (503, "text/plain", b"not ready: a standby still listing")
    assert readiness.healthz()[0] == 200
    why.clear()
    assert readiness.readyz() == (200, "text/plain", b"ready")


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
