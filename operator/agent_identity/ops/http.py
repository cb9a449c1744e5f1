"""The operator's one HTTP endpoint for people and machines that watch it:

- ``/metrics``: Prometheus;
- ``/healthz``: the reconcile workers and every background loop are alive (see ``supervisor``);
- ``/readyz``: ready only when the operator can reach the API server and list the identities it
  serves (checked every few seconds), so a Service never routes to an operator that cannot work;
- ``/.well-known/jwks.json`` and ``/.well-known/openid-configuration`` when it signs assertions.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from agent_identity.kube.client import KubeError

log = logging.getLogger(__name__)

READY_WINDOW_S = 30.0
PROBE_EVERY_S = 5.0

Route = Callable[[], tuple[int, str, bytes]]


def json_route(document: Callable[[], dict[str, Any]]) -> Route:
    return lambda: (200, "application/json", json.dumps(document()).encode())


def metrics_route(registry: CollectorRegistry) -> Route:
    return lambda: (200, CONTENT_TYPE_LATEST, generate_latest(registry))


class Readiness:
    """Ready while the last successful probe of the API server is recent, every worker and
    background loop is alive and nothing holds it back (``held_back``: why not ready yet, or
    None); live while the workers and loops are. :meth:`probe` is run by a supervised loop."""

    def __init__(
        self,
        probe: Callable[[], object],
        *,
        alive: Callable[[], list[str]],
        held_back: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._probe, self._dead, self._held_back = probe, alive, held_back
        self._last_success = 0.0
        self.last_error = "not probed yet"

    def probe(self) -> None:
        try:
            self._probe()
        except KubeError as error:
            self.last_error = str(error)
            raise
        self._last_success, self.last_error = time.monotonic(), ""

    def healthz(self) -> tuple[int, str, bytes]:
        dead = self._dead()
        return (500, "text/plain", f"stopped: {', '.join(dead)}".encode()) if dead else (200, "text/plain", b"ok")

    def readyz(self) -> tuple[int, str, bytes]:
        dead = self._dead()
        if not dead and time.monotonic() - self._last_success < READY_WINDOW_S:
            reason = self._held_back()
            return (503, "text/plain", f"not ready: {reason}".encode()) if reason else (200, "text/plain", b"ready")
        return 503, "text/plain", f"not ready: {self.last_error or 'stopped: ' + ', '.join(dead)}".encode()


def serve(routes: dict[str, Route], *, address: str, port: int) -> ThreadingHTTPServer:
    """Serves ``routes`` (path -> handler) on a daemon thread; returns the server to shut down."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                self.send_error(404)
                return
            status, content_type, payload = route()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    server = ThreadingHTTPServer((address, port), Handler)
    threading.Thread(target=server.serve_forever, name="ops-http", daemon=True).start()
    return server
