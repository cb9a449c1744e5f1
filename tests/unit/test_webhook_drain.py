"""A stopping webhook server cuts no admission request off: the API server's kept-alive connection
still gets its answer, which closes it (``Connection: close``), and a new connection is still
answered until the drain ends. The server runs for real on loopback (plain HTTP, so the test reads
the bytes); the operator stopping is kopf cancelling the server's task, as on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from agent_identity.app.webhook_server import DrainingWebhookServer
from agent_identity.app.webhook_server import log as webhook_server_log
from agent_identity.keys.certs import ensure_serving_certificate
from agent_identity.local.controlplane import free_port

REVIEW = json.dumps({"request": {"uid": "u1"}}).encode()


async def allow(data: Any, **_: Any) -> dict[str, Any]:
    return {"response": {"uid": data["request"]["uid"], "allowed": True}}


@dataclass
class Serving:
    server: DrainingWebhookServer
    task: asyncio.Task[None]
    port: int
    starts: int = 0  # how many times kopf's loop started serving (once, unless it restarted)


@asynccontextmanager
async def serving(drain: timedelta, **options: Any) -> AsyncIterator[Serving]:
    """The server on loopback (plain HTTP unless ``options`` name certificate files) until the block ends."""
    port = free_port()
    server = DrainingWebhookServer(drain=drain, addr="127.0.0.1", port=port, **(options or {"insecure": True}))
    listening = asyncio.Event()

    async def run() -> None:
        async for _ in server(allow):
            served.starts += 1
            listening.set()

    served = Serving(server, asyncio.create_task(run()), port)
    await listening.wait()
    try:
        yield served
    finally:
        served.task.cancel()
        await asyncio.gather(served.task, return_exceptions=True)


class Connection:
    """One kept-alive HTTP/1.1 connection, as the API server holds to a webhook."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def review(self) -> tuple[int, dict[str, str], dict[str, Any]]:
        """POSTs an admission review; the status, headers (lower-cased) and body of the answer."""
        self.writer.write(
            b"POST /validate-identity HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(REVIEW)}\r\n\r\n".encode()
            + REVIEW
        )
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode().strip().split("\r\n")
        headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
        body = await self.reader.readexactly(int(headers["content-length"]))
        return int(status_line.split()[1]), headers, json.loads(body)

    async def closed_by_server(self) -> bool:
        return await self.reader.read() == b""

    def close(self) -> None:
        self.writer.close()


async def until_draining(server: DrainingWebhookServer) -> None:
    while not server.draining:
        await asyncio.sleep(0)


def test_a_stopping_server_still_answers_on_a_kept_alive_connection_and_then_closes_it() -> None:
    async def scenario() -> None:
        async with serving(timedelta(minutes=1)) as served:
            server, task, port = served.server, served.task, served.port
            kept = await Connection.open(port)
            status, headers, body = await kept.review()
            assert (status, body["response"]["allowed"]) == (200, True)
            assert headers.get("connection", "keep-alive").lower() != "close", "kept alive while serving"

            task.cancel()  # the operator stops
            await until_draining(server)
            status, headers, body = await kept.review()  # the API server's next request, on that connection
            assert (status, body["response"]["allowed"]) == (200, True)
            assert headers["connection"].lower() == "close"
            assert await kept.closed_by_server()

            fresh = await Connection.open(port)  # routes not yet dropped: a new connection is answered too
            status, headers, _ = await fresh.review()
            assert (status, headers["connection"].lower()) == (200, "close")
            assert await fresh.closed_by_server()
            assert not task.done(), "still draining"

    asyncio.run(scenario())


def test_the_drain_ends_and_the_server_stops_listening() -> None:
    async def scenario() -> None:
        async with serving(timedelta(milliseconds=50)) as served:
            task, port = served.task, served.port
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            try:
                connection = await Connection.open(port)
            except ConnectionRefusedError:
                return
            connection.close()
            raise AssertionError("still listening after the drain")

    asyncio.run(scenario())


def test_with_no_drain_a_stopping_server_closes_at_once() -> None:
    async def scenario() -> None:
        async with serving(timedelta(0)) as served:
            server, task, port = served.server, served.task, served.port
            kept = await Connection.open(port)
            await kept.review()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert not server.draining
            assert await kept.closed_by_server()

    asyncio.run(scenario())


def test_renewed_certificate_files_are_served_without_closing_the_listener_or_any_connection(tmp_path: Path) -> None:
    """cert-manager renews the mounted Secret: new connections get the new certificate while a
    kept-alive connection carries on, with no restart and no drain; a key that does not match its
    certificate is refused and the previous pair stays served."""
    served = tmp_path / "served"

    async def scenario() -> None:
        files = certificate_files(served)
        async with serving(timedelta(milliseconds=10), file_check_interval=0.02, **files) as serving_tls:
            server, port = serving_tls.server, serving_tls.port
            kept = await TLSConnection.open(port)
            first = kept.certificate
            renew(served, tmp_path / "renewal")
            renewed = await until_served(port, lambda der: der != first)
            status, headers, _ = await kept.review()  # opened before the renewal: still answered, kept alive
            assert status == 200 and headers.get("connection", "keep-alive").lower() != "close"
            assert serving_tls.starts == 1 and not server.draining, "no restart, no drain"

            mismatched = tmp_path / "mismatched"
            certificate_files(mismatched)
            (served / "tls.crt").write_bytes((mismatched / "tls.crt").read_bytes())  # not the served key's certificate
            await until_logged_refusal()
            assert (await TLSConnection.open(port)).certificate == renewed, "the previous pair still served"

    asyncio.run(scenario())


def certificate_files(directory: Path) -> dict[str, str]:
    """A new CA and serving certificate in ``directory``, as the operator's flags name them."""
    cert, key, ca = ensure_serving_certificate(directory, server_names=["127.0.0.1"])
    return {"certfile": str(cert), "pkeyfile": str(key), "cafile": str(ca)}


def renew(served: Path, scratch: Path) -> None:
    """Writes a new pair over ``served``'s files, as the kubelet updates a mounted Secret."""
    certificate_files(scratch)
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (served / name).write_bytes((scratch / name).read_bytes())


class TLSConnection(Connection):
    certificate: bytes

    @classmethod
    async def open(cls, port: int) -> TLSConnection:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        connection = cls(*await asyncio.open_connection("127.0.0.1", port, ssl=context))
        connection.certificate = bytes(connection.writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
        return connection


async def until_served(port: int, wanted: Callable[[bytes], bool]) -> bytes:
    async def served() -> bytes:
        while True:
            connection = await TLSConnection.open(port)
            connection.close()
            if wanted(connection.certificate):
                return connection.certificate
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(served(), timeout=30)


async def until_logged_refusal() -> None:
    refused = asyncio.Event()

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "did not load" in record.getMessage():
                refused.set()

    handler = Handler()
    webhook_server_log.addHandler(handler)
    try:
        await asyncio.wait_for(refused.wait(), timeout=30)
    finally:
        webhook_server_log.removeHandler(handler)
