"""kopf's webhook server, stopped without cutting an admission request off.

The API server keeps its HTTP/1.1 connections to the webhooks alive between requests, and a client
cannot tell that a kept-alive connection is about to close. kopf's server closes them all the moment
it stops (the operator stopping, or new certificate files): an admission request the API server
sends on one at that moment meets the close, and the create is refused with ``EOF`` (a POST is
never retried).

So before its listener closes, this server drains for ``drain``: it still accepts and answers, and
every answer says ``Connection: close`` and closes its connection. The API server sends its next
request on a new connection, which the Service routes to a replica that stays. A connection left
idle through the whole drain is closed at its end as before; it has carried no request for that
long, so the API server is unlikely to pick it at that very moment.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import aiohttp.web
import kopf

log = logging.getLogger(__name__)

# kopf's private wait while serving: it returns when the certificate files change and is cancelled
# when the operator stops; either way kopf stops the server right after. The drain runs there.
_SERVING = "_WebhookServer__sleep_forever_or_until_ssl_files_change"
if not hasattr(kopf.WebhookServer, _SERVING):  # a kopf without it would stop without draining
    raise RuntimeError(f"kopf.WebhookServer has no {_SERVING}: the webhook drain needs updating for this kopf")


class DrainingWebhookServer(kopf.WebhookServer):
    """kopf.WebhookServer that drains its connections for ``drain`` before it stops listening."""

    def __init__(self, *, drain: timedelta, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.drain = drain
        self.draining = False

    async def _serve(self, fn: kopf.WebhookFn, request: aiohttp.web.Request) -> aiohttp.web.Response:  # type: ignore[override]
        try:
            response = await kopf.WebhookServer._serve(fn, request)
        except aiohttp.web.HTTPException as error:  # kopf's answer to a malformed review: a response too
            self._close_after(error)
            raise
        self._close_after(response)
        return response

    def _close_after(self, response: aiohttp.web.StreamResponse) -> None:
        if self.draining:
            response.force_close()

    async def _WebhookServer__sleep_forever_or_until_ssl_files_change(self) -> None:  # kopf's name for it
        self.draining = False  # a server started again on new certificates keeps its connections
        try:
            await getattr(super(), _SERVING)()
        finally:
            await self._drain()

    async def _drain(self) -> None:
        seconds = self.drain.total_seconds()
        if seconds <= 0:
            return
        self.draining = True
        log.info("Webhook server draining for %gs: each answer now closes its connection", seconds)
        await asyncio.sleep(seconds)
