"""The edge where configuration is read: one frozen Settings object from the environment
(prefix CHURN_), once, in main(); and the policy file.

Every field can be set as CHURN_<FIELD_NAME>; a bad value stops start-up with a
`ConfigError` that names the variable.
"""
from __future__ import annotations

import ipaddress
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker.core.policy import Policy, parse_policy
from worker.errors import ConfigError, PolicyError
from worker.model import shipped_model_dir

DEFAULT_POLICY = Path(__file__).with_name("default_policy.toml")


class Settings(BaseSettings):
    """Operational settings. Business thresholds live in the policy file, not here."""

    model_config = SettingsConfigDict(env_prefix="CHURN_", frozen=True, extra="ignore")

    kafka_bootstrap: str | None = Field(
        None, description="host:port[,host:port]; unset = embedded broker (demo/test only)")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = Field(None, description="a file holding the password (a mounted secret)")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle (PEM) to verify brokers; default: system CAs")
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate (PEM) for mutual TLS")
    kafka_ssl_keyfile: Path | None = Field(None, description="its private key (PEM); default: in the certfile")
    app_id: str = Field("churn-worker", pattern=r"^[A-Za-z0-9._-]+$", description="faust app id and consumer group")
    input_topics: Annotated[tuple[str, ...], NoDecode] = ("customer-events",)
    topic_partitions: int = Field(4, ge=1, le=1024)
    topic_replication: int = Field(1, ge=1, le=7)
    dead_letter_topic: str = "churn-dead-letter"
    follow_up_topic: str = "churn-trigger-follow-up"
    win_back_topic: str = "churn-trigger-win-back"
    service_recovery_topic: str = "churn-trigger-service-recovery"
    holdout_topic: str = Field("churn-trigger-holdout",
                               description="held-out decisions (the control group), as triggers with held_out: true")
    erased_topic: str = Field("churn-customer-erased", description="where erasures are announced to subscribers")
    model_dir: Path = Field(default_factory=shipped_model_dir, description="default: the shipped model")
    policy_path: Path = DEFAULT_POLICY
    clock: Literal["wall", "event"] = Field("wall", description="wall in production; event for replays")
    web_host: str = Field("127.0.0.1", description="the address the HTTP server binds")
    web_port: int = Field(6066, ge=0, le=65535)
    web_advertised_host: str | None = Field(
        None, description="how the other workers reach this one (the pod IP); default: CHURN_WEB_HOST, or the "
                          "host name when that is a wildcard")
    http_token: SecretStr | None = Field(
        None, description="bearer token for /customers/<id>; without one it is served on loopback only")
    http_token_file: Path | None = Field(None, description="a file holding the token (a mounted secret)")
    data_dir: Path = Path("churn-data")
    store: Literal["memory", "rocksdb"] = Field(
        "memory", description="the table's local store: memory (recovered from the whole changelog at every "
                              "start) or rocksdb (kept in CHURN_DATA_DIR; a restart reads only the changelog's tail)")
    rocksdb_block_cache_bytes: int = Field(
        32 * 2**20, ge=2**20, description="RocksDB block cache per table partition (rocksdict's default is 2 GiB)")
    input_mode: Literal["batch", "stream"] = Field(
        "batch", description="batch: a fetch at a time beneath faust's stream; stream: a faust agent")
    batch_size: int = Field(2000, ge=1, le=100_000)
    batch_within_s: float = Field(0.1, gt=0, le=60, description="stream mode: how long a batch may wait to fill")
    max_event_bytes: int = Field(65_536, ge=256)
    timer_interval_s: float = Field(1.0, gt=0, le=3600)
    lateness_s: float = Field(
        3 * 86400, ge=0, description="events older than the event-time watermark by more than this are late")
    idle_source_s: float = Field(
        10.0, gt=0, le=3600, description="a source partition that delivers no event for this long stops "
                                         "holding the event-time watermark back")
    mark_interval_s: float = Field(
        1.0, gt=0, le=600, description="how often at most a worker writes watermark marks to the repartition "
                                       "topic (only when they change)")
    event_time_min: datetime = Field(datetime(2000, 1, 1, tzinfo=UTC),
                                     description="live events dated before this are dead-lettered")
    event_time_max: datetime = Field(datetime(2100, 1, 1, tzinfo=UTC),
                                     description="live events dated at or after this are dead-lettered")
    max_future_s: float = Field(
        300, ge=0, description="events further ahead of the wall clock are dead-lettered (either clock)")
    emit_max_age_s: float = Field(
        2 * 86400, ge=0, description="wall clock: events older than this update state but fire nothing")
    offset_reset: Literal["earliest", "latest"] = "earliest"
    max_poll_records: int = Field(2000, ge=1)
    max_partition_fetch_bytes: int = Field(
        65_536, ge=1024, description="Kafka max.partition.fetch.bytes: small, so that a batch holds every "
                                     "partition's records and the event-time watermark keeps up with them")
    fetch_max_wait_ms: int = Field(100, ge=10, le=60_000, description="Kafka fetch.max.wait.ms (faust fixes 1500)")
    changelog_exact_end_offsets: bool = Field(
        True, description="end each changelog write with a one-record batch, for brokers (Tansu) that report "
                          "an end offset ignoring a batch's other records; false saves a produce round trip on Kafka")
    produce_timeout_s: float = Field(
        120.0, ge=5, le=1200, description="how long a trigger, dead letter or state write may take to be "
                                          "acknowledged, retries included; then its batch fails and is redelivered")
    session_timeout_s: float = Field(60.0, ge=1, description="consumer group session timeout")
    rebalance_timeout_s: float = Field(60.0, ge=1, description="how long a rebalance may take")
    stall_s: float = Field(
        300.0, gt=0, description="/health fails when a ready worker with records to read has consumed nothing "
                                 "for this long")
    log_level: str = "info"

    @field_validator("input_topics", mode="before")
    @classmethod
    def _split_topics(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(t.strip() for t in value.split(",") if t.strip())
        if not value:
            raise ValueError("at least one input topic is required")
        return value

    @model_validator(mode="after")
    def _security_consistent(self) -> Settings:
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL_"):
            if not self.kafka_sasl_username:
                raise ValueError(f"CHURN_KAFKA_SASL_USERNAME is required with CHURN_KAFKA_SECURITY_PROTOCOL={protocol}")
            if (self.kafka_sasl_password is None) == (self.kafka_sasl_password_file is None):
                raise ValueError(f"exactly one of CHURN_KAFKA_SASL_PASSWORD and CHURN_KAFKA_SASL_PASSWORD_FILE "
                                 f"is required with CHURN_KAFKA_SECURITY_PROTOCOL={protocol}")
        if protocol not in ("SSL", "SASL_SSL") and (self.kafka_ssl_cafile or self.kafka_ssl_certfile):
            raise ValueError(f"CHURN_KAFKA_SSL_* files are set but CHURN_KAFKA_SECURITY_PROTOCOL={protocol} "
                             "does not use TLS (SSL or SASL_SSL)")
        if self.http_token is not None and self.http_token_file is not None:
            raise ValueError("set CHURN_HTTP_TOKEN or CHURN_HTTP_TOKEN_FILE, not both")
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ValueError("CHURN_KAFKA_SSL_KEYFILE is set without CHURN_KAFKA_SSL_CERTFILE")
        return self

    @property
    def trigger_topics(self) -> dict[str, str]:
        return {
            "follow_up": self.follow_up_topic,
            "win_back": self.win_back_topic,
            "service_recovery": self.service_recovery_topic,
        }

    @property
    def advertised_host(self) -> str:
        if self.web_advertised_host:
            return self.web_advertised_host
        return socket.gethostname() if self.web_host in ("0.0.0.0", "::", "") else self.web_host

    @property
    def web_on_loopback(self) -> bool:
        """The HTTP server answers on loopback addresses only."""
        if self.web_host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.web_host).is_loopback
        except ValueError:  # a host name: it may resolve beyond loopback
            return False

    @property
    def repartition_topic(self) -> str:
        return f"{self.app_id}-events-by-customer"


def load_settings(**overrides: object) -> Settings:
    """Build Settings from the environment (and overrides); name the bad field on failure."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"CHURN_{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" if err["loc"]
            else err["msg"].removeprefix("Value error, ") for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None


def load_policy(path: Path | str) -> Policy:
    """Read and validate a policy file; a PolicyError names the file and the field."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy: {exc.strerror}") from None
    return parse_policy(text, str(path))
