"""Prometheus metrics on an injected registry, and settings from the environment."""
from __future__ import annotations

import os

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError

from worker.config import DEFAULT_POLICY, Settings, load_settings
from worker.core.events import EVENT_TYPES, REASONS
from worker.core.triggers import TRIGGER_TYPES
from worker.errors import ConfigError
from worker.model import shipped_model_dir
from worker.shell.metrics import LATENCY_BUCKETS, OUTCOMES, Metrics, observe_many


def test_primed_series_exist_at_zero():
    registry = CollectorRegistry()
    Metrics(registry)
    value = registry.get_sample_value
    for t in EVENT_TYPES:
        for outcome in OUTCOMES:
            assert value("churn_events_consumed_total", {"type": t, "outcome": outcome}) == 0.0
    assert value("churn_events_consumed_total", {"type": "unknown", "outcome": "dead_lettered"}) == 0.0
    for reason in REASONS:
        assert value("churn_events_dead_lettered_total", {"reason": reason}) == 0.0
    for kind in TRIGGER_TYPES:
        assert value("churn_triggers_emitted_total", {"type": kind}) == 0.0
        assert value("churn_triggers_holdout_total", {"type": kind}) == 0.0
        assert value("churn_triggers_suppressed_total", {"type": kind, "reason": "cooldown"}) == 0.0
    assert value("churn_scoring_batch_size_count") == 0.0
    assert value("churn_customers_tracked") == 0.0
    # never a series that was not primed, and no _created doubles
    assert value("churn_events_consumed_total", {"type": "refund", "outcome": "applied"}) is None
    assert b"_created" not in generate_latest(registry)


def test_two_metrics_objects_do_not_collide():
    first, second = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    first.events.labels("login", "applied").inc(3)
    first.risk.labels("m1").observe(0.72)
    assert first.registry.get_sample_value("churn_events_consumed_total",
                                           {"type": "login", "outcome": "applied"}) == 3.0
    assert second.registry.get_sample_value("churn_events_consumed_total",
                                            {"type": "login", "outcome": "applied"}) == 0.0
    assert first.registry.get_sample_value("churn_risk_score_bucket", {"le": "0.75", "model_version": "m1"}) == 1.0
    assert first.registry.get_sample_value("churn_risk_score_bucket", {"le": "0.7", "model_version": "m1"}) == 0.0
    assert second.registry.get_sample_value("churn_risk_score_count", {"model_version": "m1"}) is None
    third = Metrics()  # a registry of its own when none is given
    assert third.registry is not first.registry and third.registry is not second.registry


def _histogram_samples(metrics: Metrics) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in metrics.registry.collect() if family.name == "churn_event_processing_latency_seconds"
            for s in family.samples}


def test_observe_many_exposes_what_observe_does():
    # bounds themselves (le is inclusive), between them, past the last, zero and negative
    values = [*LATENCY_BUCKETS, 0.0, -1.0, 0.007, 0.25, 0.2500001, 299.0, 301.0, 1e9, 0.05, 0.05]
    one, many = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    for v in values:
        one.latency.observe(v)
    observe_many(many.latency, values)
    observe_many(many.latency, [])
    expected, got = _histogram_samples(one), _histogram_samples(many)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    assert got[("churn_event_processing_latency_seconds_count", ())] == len(values)


def test_observe_many_counts_nan_in_no_bucket_as_observe_does():
    one, many = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    one.latency.observe(float("nan"))
    one.latency.observe(0.3)
    observe_many(many.latency, [float("nan"), 0.3])
    assert _histogram_samples(many) == pytest.approx(_histogram_samples(one), nan_ok=True)


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("CHURN_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults(clean_env):
    settings = load_settings()
    assert isinstance(settings, Settings)
    assert settings.input_topics == ("customer-events",)
    assert settings.batch_size == 2000 and settings.clock == "wall"
    assert settings.policy_path == DEFAULT_POLICY and settings.model_dir == shipped_model_dir()
    assert settings.trigger_topics == {"follow_up": "churn-trigger-follow-up",
                                       "win_back": "churn-trigger-win-back",
                                       "service_recovery": "churn-trigger-service-recovery"}
    assert settings.repartition_topic == "churn-worker-events-by-customer"


@pytest.mark.parametrize("value", ["lots", "0", "-5", "1.5", "1000000"])
def test_bad_batch_size_names_the_variable(clean_env, value):
    clean_env.setenv("CHURN_BATCH_SIZE", value)
    with pytest.raises(ConfigError, match=r"CHURN_BATCH_SIZE: "):
        load_settings()


def test_every_bad_variable_is_named(clean_env):
    clean_env.setenv("CHURN_BATCH_SIZE", "lots")
    clean_env.setenv("CHURN_CLOCK", "sundial")
    clean_env.setenv("CHURN_WEB_PORT", "70000")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    for name in ("CHURN_BATCH_SIZE", "CHURN_CLOCK", "CHURN_WEB_PORT"):
        assert name in message, message


def test_input_topics_are_a_comma_separated_list(clean_env):
    clean_env.setenv("CHURN_INPUT_TOPICS", "a, b")
    assert load_settings().input_topics == ("a", "b")
    clean_env.setenv("CHURN_INPUT_TOPICS", " orders ,logins,, support ")
    assert load_settings().input_topics == ("orders", "logins", "support")
    clean_env.setenv("CHURN_INPUT_TOPICS", " , ")
    with pytest.raises(ConfigError, match="CHURN_INPUT_TOPICS"):
        load_settings()


def test_environment_values_are_parsed(clean_env):
    clean_env.setenv("CHURN_BATCH_SIZE", "250")
    clean_env.setenv("CHURN_CLOCK", "event")
    clean_env.setenv("CHURN_LATENESS_S", "3600")
    clean_env.setenv("CHURN_APP_ID", "churn-eu")
    settings = load_settings()
    assert (settings.batch_size, settings.clock, settings.lateness_s) == (250, "event", 3600.0)
    assert settings.repartition_topic == "churn-eu-events-by-customer"


def test_overrides_win_and_settings_are_frozen(clean_env):
    clean_env.setenv("CHURN_BATCH_SIZE", "250")
    settings = load_settings(batch_size=10)
    assert settings.batch_size == 10
    with pytest.raises(ValidationError, match="frozen"):
        settings.batch_size = 20  # type: ignore[misc]
    with pytest.raises(ConfigError, match="CHURN_APP_ID"):
        load_settings(app_id="no spaces allowed")


def test_lag_is_kept_for_the_partitions_held_only():
    m = Metrics()
    m.set_lag({("events", 0): 5, ("events", 1): None, ("by-customer", 0): 0})
    value = m.registry.get_sample_value
    assert value("churn_consumer_lag_records", {"topic": "events", "partition": "0"}) == 5
    assert value("churn_consumer_lag_records", {"topic": "events", "partition": "1"}) is None  # not known yet
    m.set_lag({("events", 1): 7})  # a rebalance: partition 0 went to another worker
    assert value("churn_consumer_lag_records", {"topic": "events", "partition": "0"}) is None
    assert value("churn_consumer_lag_records", {"topic": "events", "partition": "1"}) == 7
    assert value("process_cpu_seconds_total") is not None  # the standard process collectors too
