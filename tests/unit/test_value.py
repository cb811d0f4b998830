"""The value models recover the parameters of data simulated from them, give a
customer's value fields from their state, and the churn model's value features from its
feature rows."""
from __future__ import annotations

import numpy as np
import pytest

from worker.core.features import features
from worker.core.value import (
    MAX_ODDS,
    UNFITTED_ODDS,
    ValueParams,
    alive_probability,
    customer_value,
    expected_purchases,
    log_likelihood,
    no_purchase_probability,
    p_alive,
    rfm,
    value_features,
)
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


def test_array_p_alive_equals_the_scalar_one():
    x, t_x, T = np.array([0, 1, 3, 12, 40.0]), np.array([0, 20, 50, 100, 300.0]), np.array([30, 60, 200, 101, 301.0])
    assert alive_probability(TRUE, x, t_x, T).tolist() == pytest.approx(
        [p_alive(TRUE, *row) for row in zip(x, t_x, T)], abs=1e-12)


def test_no_purchase_probability_matches_customers_simulated_from_bgnbd():
    """Simulate BG/NBD customers (born at their first purchase some time in a year, each repeat
    purchase a chance to leave) through the year and a 90-day window after it: the probability
    of no purchase in the window, predicted from the year alone, matches what happened, overall
    and for customers with few and with many purchases."""
    rng = np.random.default_rng(3)
    rows, silent = [], []
    for _ in range(10000):
        rate, drop, born = rng.gamma(TRUE.r, 1 / TRUE.alpha), rng.beta(TRUE.a, TRUE.b), rng.uniform(0, 335)
        t, year, later = born, [born], False
        while (t := t + rng.exponential(1 / rate)) <= 365 + 90:
            if t > 365:
                later = True
                break
            year.append(t)
            if rng.random() < drop:  # left right after this purchase
                break
        rows.append((len(year) - 1, year[-1] - born, 365 - born))
        silent.append(not later)
    x, t_x, T = (np.array(col) for col in zip(*rows))
    predicted, observed = no_purchase_probability(TRUE, 90.0, x, t_x, T), np.array(silent)
    assert abs(predicted.mean() - observed.mean()) < 0.01
    for group in (x == 0, (x >= 1) & (x < 4), x >= 4):
        assert group.sum() > 300 and abs(predicted[group].mean() - observed[group].mean()) < 0.03


def test_value_features_of_a_feature_row_are_those_of_the_customers_purchases():
    """Computed from the worker's feature row alone (so each model applies its own value
    model to the rows every model is given), they equal BG/NBD on the customer's purchases."""
    customer = fold([purchase(at(d)) for d in (0, 9, 30, 41, 70)])
    now = at(95)
    orders, t_x, T, _ = rfm(customer, now)
    no_purchase, dropout = value_features(np.array([features(customer, now)]), TRUE, 60.0)[0]
    alive = p_alive(TRUE, orders - 1, t_x, T)
    none = float(no_purchase_probability(TRUE, 60.0, np.array([orders - 1.0]), np.array([t_x]), np.array([T]))[0])
    assert no_purchase == pytest.approx(none / (1 - none), rel=1e-9)
    assert dropout == pytest.approx((1 - alive) / alive, rel=1e-9)
    # a customer who never bought expects no purchase and cannot have left; no value model, no opinion
    never = np.array([features(fold([]), now)])
    assert value_features(never, TRUE, 60.0).tolist() == [[MAX_ODDS, 0.0]]
    assert value_features(never, None, 60.0).tolist() == [[UNFITTED_ODDS, UNFITTED_ODDS]]
    gone = fold([purchase(at(d)) for d in range(0, 40, 4)])  # ten purchases, then 300 days of silence
    assert value_features(np.array([features(gone, at(340))]), TRUE, 60.0)[0].tolist() == pytest.approx(
        [MAX_ODDS, MAX_ODDS], rel=0.05)
