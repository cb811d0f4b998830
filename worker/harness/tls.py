"""Throwaway certificate authorities for TLS tests, made with the `openssl` command line.

    ca = ThrowawayCA.create(tmp_path / "ca")           # ca.cafile: the CA certificate (PEM)
    ca.server_context()                           # an ssl server context for 127.0.0.1

Keys are P-256, valid for a day, and never leave the test's directory.
"""
from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from worker.errors import ChurnWorkerError

DAYS = "1"
KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise ChurnWorkerError("TLS tests need the openssl command line tool")
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class ThrowawayCA:
    directory: Path

    @property
    def cafile(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def certfile(self) -> Path:
        return self.directory / "server.pem"

    @property
    def keyfile(self) -> Path:
        return self.directory / "server.key"

    @classmethod
    def create(cls, directory: Path, name: str = "churn-worker test CA") -> ThrowawayCA:
        """A CA and a server certificate for 127.0.0.1 (and localhost) that it signed."""
        directory.mkdir(parents=True, exist_ok=True)
        _openssl("req", "-x509", *KEY, "-keyout", "ca.key", "-out", "ca.pem", "-days", DAYS,
                 "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
        _openssl("req", *KEY, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
                 cwd=directory)
        (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                              "extendedKeyUsage=serverAuth\n")
        _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "server.pem", "-days", DAYS, "-extfile", "server.ext", cwd=directory)
        return cls(directory)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certfile, self.keyfile)
        return context
