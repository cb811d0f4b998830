"""One set of Kafka security settings reaches every client the worker opens: faust's
(consumer, producer, admin: `broker_credentials`), the worker's output producer, and the
CLI's. What cannot be read or does not fit together stops start-up, naming the variable.
(TLS against a real listener: tests/integration/test_tls.py.)"""
from __future__ import annotations

from pathlib import Path

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from worker.config import load_policy, load_settings
from worker.errors import ConfigError
from worker.harness.tls import ThrowawayCA
from worker.kafka_security import kafka_auth
from worker.model.artifact import load_artifact
from worker.shell.app import ChurnApp, faust_credentials
from worker.shell.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]


def test_sasl_ssl_settings_reach_faust_and_the_output_producer(tmp_path):
    ca = ThrowawayCA.create(tmp_path / "ca")
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")  # as a mounted Kubernetes secret may end
    settings = load_settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, model_dir=ROOT / "models" / "churn-v1",
                             kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-256",
                             kafka_sasl_username="churn", kafka_sasl_password_file=secret,
                             kafka_ssl_cafile=ca.cafile)
    churn = ChurnApp(settings, load_artifact(settings.model_dir), load_policy(settings.policy_path), Metrics())
    options = churn.producer.options
    assert {k: options[k] for k in ("security_protocol", "sasl_mechanism", "sasl_plain_username",
                                    "sasl_plain_password")} == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256", "sasl_plain_username": "churn",
        "sasl_plain_password": "s3cret"}
    assert options["ssl_context"].verify_mode.name == "CERT_REQUIRED"
    # faust's own clients get the same, through the mapping its aiokafka driver applies
    assert credentials_to_aiokafka_auth(churn.app.conf.broker_credentials) == options
    assert "s3cret" not in repr(settings) and "s3cret" not in repr(churn.auth)


def test_plaintext_is_the_default_and_passes_nothing_else():
    auth = kafka_auth(load_settings())
    assert auth.options == {"security_protocol": "PLAINTEXT"} and faust_credentials(auth) is None


@pytest.mark.parametrize(("overrides", "named"), [
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_password": "x"}, "CHURN_KAFKA_SASL_USERNAME"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"}, "CHURN_KAFKA_SASL_PASSWORD"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u", "kafka_sasl_password": "x",
      "kafka_sasl_password_file": "/p"}, "CHURN_KAFKA_SASL_PASSWORD_FILE"),
    ({"kafka_ssl_cafile": "/ca.pem"}, "CHURN_KAFKA_SECURITY_PROTOCOL"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "/k.pem"}, "CHURN_KAFKA_SSL_CERTFILE"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI"}, "CHURN_KAFKA_SASL_MECHANISM"),
])
def test_settings_that_do_not_fit_together_are_named(overrides, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(**overrides)


def test_files_that_cannot_be_read_are_named(tmp_path):
    with pytest.raises(ConfigError, match="CHURN_KAFKA_SSL_CAFILE"):
        kafka_auth(load_settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="CHURN_KAFKA_SASL_PASSWORD_FILE"):
        kafka_auth(load_settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u",
                                 kafka_sasl_password_file=tmp_path / "missing"))
    garbage = tmp_path / "cert.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError, match="CHURN_KAFKA_SSL_CERTFILE"):
        kafka_auth(load_settings(kafka_security_protocol="SSL", kafka_ssl_certfile=garbage))
