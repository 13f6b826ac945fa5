"""A real broker reached over TLS only: the Tansu binary behind a TLS-terminating relay.

Tansu speaks plain TCP, so a relay on another loopback port takes TLS (a self-signed
certificate for 127.0.0.1 made with ``openssl``) and passes the bytes on; the broker advertises
the relay's port, so every client that follows the broker's metadata stays on TLS. No byte is
changed: what answers is the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streams.local.broker import tansu_binary, wait_for_port
from tests.integration.conftest import free_port


@dataclass(frozen=True)
class TlsBroker:
    bootstrap: str  # the TLS relay
    plain: str  # the broker's own plain TCP listener
    cafile: Path  # the certificate clients must trust


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for ``127.0.0.1`` (``openssl`` must be installed)."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make the test certificate (apt-get install openssl)"
    cert, key = folder / "broker.pem", folder / "broker.key"
    subprocess.run(  # noqa: S603
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def _relay(host: str, port: int, listen: int, context: ssl.SSLContext,
                 stop: asyncio.Event, ready: threading.Event) -> None:  # fmt: skip
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", listen, ssl=context)
    ready.set()
    async with server:
        await stop.wait()


@contextlib.contextmanager
def tls_broker(folder: Path) -> Iterator[TlsBroker]:
    cert, key = self_signed(folder)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    plain_port, tls_port = free_port(), free_port()
    proc = subprocess.Popen(  # noqa: S603
        [str(tansu_binary()), "broker",
         "--listener-url", f"tcp://127.0.0.1:{plain_port}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{tls_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    thread = threading.Thread(
        target=loop.run_until_complete,
        args=(_relay("127.0.0.1", plain_port, tls_port, context, stop, ready),),
        daemon=True,
    )
    try:
        wait_for_port("127.0.0.1", plain_port, 10.0)
        thread.start()
        assert ready.wait(10.0), "the TLS relay did not start"
        yield TlsBroker(f"127.0.0.1:{tls_port}", f"127.0.0.1:{plain_port}", cert)
    finally:
        if thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
            thread.join(10.0)
        proc.terminate()
        proc.wait(10.0)
