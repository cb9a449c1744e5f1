"""kopf's webhook server, which never cuts an admission request off: it drains before it stops,
and takes renewed certificates without stopping at all.

The API server keeps its HTTP/1.1 connections to the webhooks alive between requests, and a client
cannot tell that a kept-alive connection is about to close. kopf's server closes them all the moment
it stops: an admission request the API server sends on one at that moment meets the close, and the
create is refused with ``EOF`` (a POST is never retried).

- **Stopping** (the operator told to stop): before its listener closes, the server drains for
  ``drain``. It still accepts and answers, and every answer says ``Connection: close`` and closes
  its connection, so the API server sends its next request on a new connection, which the Service
  routes to a replica that stays. A connection left idle through the whole drain is closed at its
  end as before; it has carried no request for that long, so the API server is unlikely to pick it
  at that very moment.
- **New certificate files** (a cert-manager renewal of the mounted Secret): kopf notices them (it
  re-reads the files every ``file_check_interval``) and would stop the server and start another.
  This one loads them into the context it serves with instead: new connections get the new
  certificate, open ones carry on, and the listener never closes. Files that do not load (a
  certificate and key that do not match) are refused, and the previous certificate stays served.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from datetime import timedelta
from typing import Any

import aiohttp.web
import kopf

from agent_identity.app.fair_gate import Busy, FairGate

log = logging.getLogger(__name__)

# kopf's private wait while serving: it returns when the certificate files change and is cancelled
# when the operator stops; kopf stops the server right after either. Both are handled here.
_SERVING = "_WebhookServer__sleep_forever_or_until_ssl_files_change"
if not hasattr(kopf.WebhookServer, _SERVING):  # a kopf without it would stop without draining
    raise RuntimeError(f"kopf.WebhookServer has no {_SERVING}: the webhook drain needs updating for this kopf")


class DrainingWebhookServer(kopf.WebhookServer):
    """kopf.WebhookServer that drains for ``drain`` before it stops listening, loads new
    certificate files into the context it serves with rather than restarting, shares review work
    fairly between the peers that send it (:mod:`agent_identity.app.fair_gate`) and, given
    ``client_ca``, completes a TLS handshake only with a client holding a certificate it signed."""

    def __init__(self, *, drain: timedelta, client_ca: str | None = None, **kwargs: Any) -> None:
        if client_ca:  # the TLS handshake itself refuses anyone else (and trusts no system CA for clients)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_verify_locations(cafile=client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
            kwargs["context"] = context
        super().__init__(**kwargs)
        self.drain = drain
        self.draining = False
        self.gate = FairGate()
        self._serving: ssl.SSLContext | None = None

    def _build_ssl(self) -> tuple[bytes | None, ssl.SSLContext | None]:
        cadata, context = super()._build_ssl()
        self._serving = context
        return cadata, context

    async def _serve(self, fn: kopf.WebhookFn, request: aiohttp.web.Request) -> aiohttp.web.Response:  # type: ignore[override]
        try:
            async with self.gate.turn(request.remote or ""):
                response = await kopf.WebhookServer._serve(fn, request)
        except Busy as busy:  # the API server applies the webhook's failurePolicy: Fail
            log.warning("Webhook request from %s refused, %s", request.remote, busy)
            response = aiohttp.web.json_response({"message": f"busy: {busy}"}, status=429)
        except aiohttp.web.HTTPException as error:  # kopf's answer to a malformed review: a response too
            self._close_after(error)
            raise
        self._close_after(response)
        return response

    def _close_after(self, response: aiohttp.web.StreamResponse) -> None:
        if self.draining:
            response.force_close()

    async def _WebhookServer__sleep_forever_or_until_ssl_files_change(self) -> None:  # kopf's name for it
        try:
            while True:
                await getattr(super(), _SERVING)()  # returns once the certificate files have changed
                self._load_certificate()
        finally:
            await self._drain()

    def _load_certificate(self) -> None:
        if self._serving is None or self.certfile is None or self.pkeyfile is None:
            return
        try:  # into a scratch context first: a pair that fails to load never half-replaces the served one
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.certfile, self.pkeyfile, self.password)
        except (OSError, ssl.SSLError) as error:
            log.error(
                "New webhook certificate files in %s did not load (%s): still serving the previous certificate",
                self.certfile,
                type(error).__name__,
            )
            return
        self._serving.load_cert_chain(self.certfile, self.pkeyfile, self.password)
        log.info("Webhook server serving the new certificate in %s", self.certfile)

    async def _drain(self) -> None:
        seconds = self.drain.total_seconds()
        if seconds <= 0:
            return
        self.draining = True
        log.info("Webhook server draining for %gs: each answer now closes its connection", seconds)
        await asyncio.sleep(seconds)
