"""Fitting the value models (worker.core.value) by maximum likelihood with scipy's
optimiser: BG/NBD on (x, t_x, T) per customer, Gamma-Gamma on (orders, mean order value)
of repeat buyers. scipy is already installed with scikit-learn; the PyPI packages that
fit these models (`lifetimes`, unmaintained since 2020 and broken on current pandas;
`pymc-marketing`, which brings PyMC and a sampler) would add more than the two
likelihoods below, which are short and tested by recovering known parameters from data
simulated from them (tests/unit/test_value.py).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln

from worker.core.events import Event
from worker.core.state import DAY
from worker.core.value import ValueParams


def bgnbd_neg_ll(log_params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> float:
    r, alpha, a, b = np.exp(log_params)
    head = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + gammaln(a + b) + gammaln(b + x) - gammaln(b) \
        - gammaln(a + b + x)
    stays = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        leaves = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-12)) - (r + x) * np.log(alpha + t_x),
                          -np.inf)
    top = np.maximum(stays, leaves)
    ll = head + top + np.log(np.exp(stays - top) + np.exp(leaves - top))
    return float(-np.sum(ll))


def fit_bgnbd(x: Sequence[float], t_x: Sequence[float], T: Sequence[float]) -> tuple[float, float, float, float]:
    xs, txs, Ts = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    best = None
    for start in ([0.0, np.log(max(Ts.mean(), 1.0)), 0.0, 0.0], [-1.0, 1.0, -0.5, 0.5]):
        result = minimize(bgnbd_neg_ll, np.array(start), args=(xs, txs, Ts), method="Nelder-Mead",
                          options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-6})
        if best is None or result.fun < best.fun:
            best = result
    assert best is not None
    r, alpha, a, b = (float(v) for v in np.exp(best.x))
    return r, alpha, a, b


def gamma_gamma_neg_ll(log_params: np.ndarray, x: np.ndarray, m: np.ndarray) -> float:
    p, q, g = np.exp(log_params)
    ll = (gammaln(p * x + q) - gammaln(p * x) - gammaln(q) + q * np.log(g) + (p * x - 1) * np.log(m)
          + p * x * np.log(x) - (p * x + q) * np.log(x * m + g))
    return float(-np.sum(ll))


def fit_gamma_gamma(orders: Sequence[float], mean_values: Sequence[float]) -> tuple[float, float, float] | None:
    """(p, q, gamma) from customers with at least one repeat order and positive spend."""
    xs, ms = np.asarray(orders, dtype=float), np.asarray(mean_values, dtype=float)
    keep = (xs >= 2) & (ms > 0)
    if keep.sum() < 20:
        return None
    result = minimize(gamma_gamma_neg_ll, np.array([0.0, 0.5, np.log(ms[keep].mean())]), args=(xs[keep], ms[keep]),
                      method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-6})
    p, q, g = (float(v) for v in np.exp(result.x))
    return p, q, g


def summarise(events: Iterable[Event], cutoff: float) -> tuple[list[int], list[float], list[float], list[float]]:
    """Per buyer before `cutoff`: (orders, t_x days, T days, mean order value)."""
    buys: dict[str, list[tuple[float, float]]] = {}
    for e in events:
        if e.type == "purchase" and e.occurred_at < cutoff:
            buys.setdefault(e.customer_id, []).append((e.occurred_at, e.amount))
    orders, t_x, T, m = [], [], [], []
    for purchases in buys.values():
        times = sorted(t for t, _ in purchases)
        orders.append(len(times))
        t_x.append((times[-1] - times[0]) / DAY)
        T.append((cutoff - times[0]) / DAY)
        m.append(sum(a for _, a in purchases) / len(purchases))
    return orders, t_x, T, m


def fit_value(events: Iterable[Event], cutoff: float, clv_horizon_days: float = 365.0) -> ValueParams | None:
    orders, t_x, T, m = summarise(events, cutoff)
    if len(orders) < 50:
        return None
    r, alpha, a, b = fit_bgnbd([o - 1 for o in orders], t_x, T)
    spend = fit_gamma_gamma(orders, m)
    p, q, g = spend if spend is not None else (None, None, None)
    return ValueParams(r, alpha, a, b, p, q, g, clv_horizon_days)


def simulate_bgnbd(params: ValueParams, customers: int, T: float, seed: int) -> tuple[list, list, list]:
    """(x, t_x, T) of customers drawn from the BG/NBD process itself, each observed for T days."""
    rng = np.random.default_rng(seed)
    xs, txs, Ts = [], [], []
    for _ in range(customers):
        rate = rng.gamma(params.r, 1 / params.alpha)
        drop = rng.beta(params.a, params.b)
        t, last, x = 0.0, 0.0, 0
        while True:
            t += rng.exponential(1 / rate)
            if t > T:
                break
            x, last = x + 1, t
            if rng.random() < drop:
                break
        xs.append(x)
        txs.append(last)
        Ts.append(T)
    return xs, txs, Ts
