"""Who may read customer data over HTTP, and where a request for another worker's customer
goes. (Served by two real workers: tests/integration/test_rebalance.py.)"""
from __future__ import annotations

import pytest

from worker.config import load_settings
from worker.errors import ConfigError
from worker.shell.http import http_token, owner_url, unauthorized


def test_with_a_token_every_request_must_carry_it():
    for loopback in (True, False):
        assert unauthorized("t0k", loopback, "Bearer t0k") == ""
        assert unauthorized("t0k", loopback, None) and unauthorized("t0k", loopback, "Bearer t0") \
            and unauthorized("t0k", loopback, "t0k")


def test_without_a_token_customer_data_stays_on_loopback():
    assert unauthorized(None, True, None) == ""
    assert "CHURN_HTTP_TOKEN" in unauthorized(None, False, "Bearer anything")


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                                 ("0.0.0.0", False), ("10.1.2.3", False), ("churn.svc", False)])
def test_what_counts_as_loopback(host, loopback):
    assert load_settings(web_host=host).web_on_loopback is loopback


def test_the_token_file_is_read_and_a_bad_one_named(tmp_path):
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    assert http_token(load_settings(http_token_file=path)) == "s3cret"
    assert http_token(load_settings(http_token="abc")) == "abc"
    path.write_text("\n")
    with pytest.raises(ConfigError, match="CHURN_HTTP_TOKEN_FILE"):
        http_token(load_settings(http_token_file=path))
    with pytest.raises(ConfigError, match="CHURN_HTTP_TOKEN_FILE"):
        http_token(load_settings(http_token_file=tmp_path / "missing"))
    with pytest.raises(ConfigError, match="CHURN_HTTP_TOKEN"):
        load_settings(http_token="a", http_token_file=path)


def test_the_owner_is_the_worker_holding_the_partition_actively():
    distribution = {"http://10.0.0.1:6066": {"app-customer_state-changelog": [0, 2], "other": [1]},
                    "http://10.0.0.2:6066": {"app-customer_state-changelog": [1, 3]}}
    assert owner_url(distribution, "app-customer_state-changelog", 1) == "http://10.0.0.2:6066"
    assert owner_url(distribution, "app-customer_state-changelog", 2) == "http://10.0.0.1:6066"
    assert owner_url(distribution, "app-customer_state-changelog", 4) is None


def test_the_advertised_host_defaults_to_the_bound_one_or_the_host_name():
    assert load_settings(web_host="10.1.2.3").advertised_host == "10.1.2.3"
    assert load_settings(web_host="0.0.0.0", web_advertised_host="10.9.9.9").advertised_host == "10.9.9.9"
    assert load_settings(web_host="0.0.0.0").advertised_host not in ("", "0.0.0.0")
