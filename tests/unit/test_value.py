"""The value models recover the parameters of data simulated from them, and give a
customer's value fields from their state."""
from __future__ import annotations

import numpy as np
import pytest

from worker.core.value import ValueParams, customer_value, expected_purchases, log_likelihood, p_alive
from worker.tools.value_fit import bgnbd_neg_ll, fit_bgnbd, fit_gamma_gamma, simulate_bgnbd

from .conftest import at, fold, purchase

# the CDNOW estimates of Fader, Hardie and Lee (2005), with alpha from weeks to days
TRUE = ValueParams(r=0.243, alpha=4.414 * 7, a=0.793, b=2.426)


def test_bgnbd_recovers_the_parameters_it_was_simulated_from():
    x, t_x, T = simulate_bgnbd(TRUE, 8000, T=39 * 7.0, seed=1)
    r, alpha, a, b = fit_bgnbd(x, t_x, T)
    fitted = ValueParams(r, alpha, a, b)
    for name in ("r", "alpha", "a", "b"):
        want, got = getattr(TRUE, name), getattr(fitted, name)
        assert abs(got - want) / want < 0.25, (name, want, got)
    # the vectorised likelihood the fit uses equals the scalar one the worker serves
    logs = np.log([r, alpha, a, b])
    assert -bgnbd_neg_ll(logs, np.array(x[:50], float), np.array(t_x[:50]), np.array(T[:50])) == pytest.approx(
        sum(log_likelihood(fitted, *row) for row in zip(x[:50], t_x[:50], T[:50])))


def test_gamma_gamma_recovers_the_spend_parameters():
    rng = np.random.default_rng(2)
    p, q, g = 6.25, 3.74, 15.44  # Fader, Hardie and Lee's CDNOW spend estimates
    orders, means = [], []
    for _ in range(6000):
        nu = rng.gamma(q, 1 / g)  # each customer's spend scale
        n = int(rng.integers(2, 12))
        orders.append(n)
        means.append(float(rng.gamma(p, 1 / nu, size=n).mean()))
    fp, fq, fg = fit_gamma_gamma(orders, means)
    mean_spend_true, mean_spend_fit = p * g / (q - 1), fp * fg / (fq - 1)
    assert abs(mean_spend_fit - mean_spend_true) / mean_spend_true < 0.1
    assert abs(fp - p) / p < 0.25 and abs(fq - q) / q < 0.35


def test_a_customers_value_fields():
    params = ValueParams(r=0.243, alpha=30.9, a=0.793, b=2.426, p=6.25, q=3.74, gamma=15.44)
    regular = fold([purchase(at(d), "30.00") for d in range(0, 120, 10)])  # every 10 days, last on day 110
    value = customer_value(params, regular, at(112))
    assert value["p_alive"] > 0.8 and value["expected_purchases_90d"] > 3
    assert value["predicted_clv"] > 0 and value["next_order_expected_at"] > "2026"
    gone = customer_value(params, regular, at(400))  # silent for 290 days after a 10-day rhythm
    assert gone["p_alive"] < 0.05 and gone["expected_purchases_90d"] < value["expected_purchases_90d"] / 10
    assert customer_value(params, fold([]), at(10)) == dict.fromkeys(value)  # no purchase: nothing to say
    assert customer_value(None, regular, at(112)) == dict.fromkeys(value)
    assert p_alive(params, 0, 0, 30) == 1.0 and expected_purchases(params, 90, 11, 110, 112) > 0
