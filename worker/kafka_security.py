"""How every Kafka client of the worker and its CLI connects: one `KafkaAuth`, built once
from the settings, gives the same TLS and SASL options to faust's consumer, producer and
admin client, the worker's own output producer, the start-up topology check and the
`produce` command.

    auth = kafka_auth(settings)          # reads the password file, loads the certificates
    AIOKafkaProducer(bootstrap_servers=..., **auth.options)
    faust.App(..., broker_credentials=faust_credentials(auth))   # worker.shell.app
    await auth.check(bootstrap)          # start-up: a wrong CA or password, said plainly

A file that cannot be read or a certificate that does not load stops start-up with a
ConfigError naming the CHURN_ variable.
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.errors import ConfigError

CHECK_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class KafkaAuth:
    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = None

    @property
    def options(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin, client)."""
        opts: dict[str, Any] = {"security_protocol": self.protocol}
        if self.ssl_context is not None:
            opts["ssl_context"] = self.ssl_context
        if self.mechanism is not None:
            opts.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                        sasl_plain_password=self.password)
        return opts

    async def check(self, bootstrap: str) -> None:
        """Open one connection to the first reachable bootstrap host the way the clients will,
        and turn a TLS or SASL failure into a ConfigError that names the setting to fix (the
        clients themselves only log it and retry). A host that does not answer is left to
        the caller's retries."""
        if self.protocol == "PLAINTEXT":
            return
        from aiokafka.conn import create_conn
        from aiokafka.errors import (
            AuthenticationFailedError,
            KafkaError,
            SaslAuthenticationFailed,
            UnsupportedSaslMechanismError,
        )

        for host, port in _hosts(bootstrap):
            try:
                conn = await create_conn(host, port, request_timeout_ms=int(CHECK_TIMEOUT_S * 1000), **self.options)
            except ssl.SSLCertVerificationError as exc:
                raise ConfigError(f"CHURN_KAFKA_SSL_CAFILE: the broker {host}:{port} presented a certificate "
                                  f"this CA does not verify: {exc.verify_message or exc}") from None
            except ssl.SSLError as exc:
                raise ConfigError(f"CHURN_KAFKA_SECURITY_PROTOCOL: the TLS handshake with {host}:{port} failed "
                                  f"({exc.reason or exc}); is the listener TLS, and are the client certificate "
                                  "and key (CHURN_KAFKA_SSL_CERTFILE, CHURN_KAFKA_SSL_KEYFILE) right?") from None
            except UnsupportedSaslMechanismError as exc:
                raise ConfigError(f"CHURN_KAFKA_SASL_MECHANISM: {host}:{port} does not accept SASL "
                                  f"{self.mechanism}: {exc}") from None
            except (AuthenticationFailedError, SaslAuthenticationFailed) as exc:
                raise ConfigError(f"CHURN_KAFKA_SASL_PASSWORD: {host}:{port} refused the SASL {self.mechanism} "
                                  f"login of {self.username!r}: {exc}") from None
            except (TimeoutError, OSError, KafkaError):
                continue
            conn.close()
            return


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    hosts = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        if host and port.isdigit():
            hosts.append((host.strip("[]"), int(port)))
    return hosts


def kafka_auth(settings: Any) -> KafkaAuth:
    """Read the secrets and certificates the settings name; ConfigError names the variable."""
    s = settings
    protocol = s.kafka_security_protocol
    uses_ssl, uses_sasl = protocol in ("SSL", "SASL_SSL"), protocol.startswith("SASL_")
    context = _ssl_context(s) if uses_ssl else None
    if not uses_sasl:
        return KafkaAuth(protocol, ssl_context=context)
    password = s.kafka_sasl_password.get_secret_value() if s.kafka_sasl_password is not None else None
    if s.kafka_sasl_password_file is not None:
        password = _read(s.kafka_sasl_password_file, "CHURN_KAFKA_SASL_PASSWORD_FILE").rstrip("\r\n")
    return KafkaAuth(protocol, s.kafka_sasl_mechanism, s.kafka_sasl_username, password, context)


def _ssl_context(s: Any) -> ssl.SSLContext:
    cafile = str(s.kafka_ssl_cafile) if s.kafka_ssl_cafile else None
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"CHURN_KAFKA_SSL_CAFILE: cannot load CA certificates from {cafile}: {exc}") from None
    if s.kafka_ssl_certfile:
        keyfile = str(s.kafka_ssl_keyfile) if s.kafka_ssl_keyfile else None
        try:
            context.load_cert_chain(str(s.kafka_ssl_certfile), keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("CHURN_KAFKA_SSL_CERTFILE: cannot load the client certificate "
                              f"{s.kafka_ssl_certfile} (key {keyfile or 'in the same file'}): {exc}") from None
    return context


def _read(path: Path, name: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None
