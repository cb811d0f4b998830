"""Customer value from the purchase history: BG/NBD ("buy till you die", Fader, Hardie and
Lee 2005) for how many purchases are still to come, and Gamma-Gamma (Fader, Hardie and
Lee 2005, "RFM and CLV") for what each will be worth. Parameters are fitted at training
time (worker.tools.value_fit) and kept in the model card; here they are applied to one
customer's state. Time is in days.

For a customer with x repeat purchases (orders - 1), the last at t_x days and the first
T days before now, and an average order value m:

- `p_alive`: probability the customer is still "alive" (has not silently left);
- `expected_purchases_90d` / `_365d`: expected purchases in the next 90 / 365 days;
- `expected_order_value`: the Gamma-Gamma conditional mean spend per order;
- `predicted_clv`: expected purchases over the CLV horizon times that value, in the order
  amounts' currency (undiscounted);
- `next_order_expected_at`: now plus the mean gap the expected purchase rate implies over
  the next 365 days (an estimate, RFC 3339), null when fewer than one purchase is expected.

A customer with no purchase yet gets nulls: these models describe buyers.

The churn model takes two of these as features (`value_features`, for a model whose card
lists VALUE_FEATURE_NAMES): BG/NBD's odds that a customer makes no purchase within the
model's horizon, and its odds that the customer has already dropped out. They are computed
from the feature row itself, so every model (the active one, a shadow) applies its own
card's parameters to the same rows, online and in training alike.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import gammaln, hyp2f1

from worker.core.events import format_time
from worker.core.features import FEATURE_NAMES
from worker.core.state import DAY, CustomerState

VALUE_FIELDS = ("p_alive", "expected_purchases_90d", "expected_purchases_365d", "expected_order_value",
                "predicted_clv", "next_order_expected_at")
VALUE_FEATURE_NAMES = ("bgnbd_no_purchase_odds", "bgnbd_dropout_odds")
# odds of 9,999 to 1: "nothing expected" (a customer who never bought, one long gone); the
# cap keeps the features finite where the probability rounds to 1
MAX_ODDS = 9999.0
UNFITTED_ODDS = 1.0  # a training cutoff without a value model (too little history): no opinion
_ORDERS, _GAP, _SINCE = (FEATURE_NAMES.index(n) for n in
                         ("orders", "mean_days_between_purchases", "days_since_last_purchase"))


@dataclass(frozen=True)
class ValueParams:
    r: float
    alpha: float
    a: float
    b: float
    p: float | None = None      # Gamma-Gamma; None: spend not modelled (no amounts in the history)
    q: float | None = None
    gamma: float | None = None
    clv_horizon_days: float = 365.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "unit": "days"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValueParams:
        keys = ("r", "alpha", "a", "b", "p", "q", "gamma", "clv_horizon_days")
        return cls(**{k: data[k] for k in keys if k in data})


def log_likelihood(params: ValueParams, x: float, t_x: float, T: float) -> float:
    """BG/NBD log-likelihood of one customer (x repeat purchases, last at t_x, observed for T)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    head = gammaln(r + x) - gammaln(r) + r * math.log(alpha) + gammaln(a + b) + gammaln(b + x) - gammaln(b) \
        - gammaln(a + b + x)
    stays = -(r + x) * math.log(alpha + T)
    if x <= 0:
        return float(head + stays)
    leaves = math.log(a) - math.log(b + x - 1) - (r + x) * math.log(alpha + t_x)
    top = max(stays, leaves)
    return float(head + top + math.log(math.exp(stays - top) + math.exp(leaves - top)))


def p_alive(params: ValueParams, x: float, t_x: float, T: float) -> float:
    if x <= 0:
        return 1.0
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    log_ratio = math.log(a / (b + x - 1)) + (r + x) * math.log((alpha + T) / (alpha + t_x))
    return 1.0 / (1.0 + math.exp(min(log_ratio, 700.0)))


def expected_purchases(params: ValueParams, t: float, x: float, t_x: float, T: float) -> float:
    """Expected purchases in the next `t` days."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    a = a if abs(a - 1) > 1e-9 else 1 + 1e-9  # the closed form divides by a - 1 (either sign is fine)
    z = t / (alpha + T + t)
    body = (a + b + x - 1) / (a - 1) * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x)
                                        * hyp2f1(r + x, b + x, a + b + x - 1, z))
    return float(body * p_alive(params, x, t_x, T))


def expected_order_value(params: ValueParams, x: int, mean_value: float) -> float | None:
    p, q, g = params.p, params.q, params.gamma
    if p is None or q is None or g is None or q <= 1:
        return None
    weight = p * x / (p * x + q - 1)
    return float((1 - weight) * g * p / (q - 1) + weight * mean_value)


def rfm(state: CustomerState, now: float) -> tuple[int, float, float, float] | None:
    """(orders, t_x, T, mean order value) in days, or None for a customer who never bought."""
    if not state.orders or not state.first_purchase:
        return None
    t_x = (state.last_purchase - state.first_purchase) / DAY
    T = max((now - state.first_purchase) / DAY, t_x)
    return state.orders, t_x, T, state.revenue / state.orders


def customer_value(params: ValueParams | None, state: CustomerState, now: float) -> dict[str, Any]:
    """The value fields of one customer (all null without parameters or purchases)."""
    out: dict[str, Any] = dict.fromkeys(VALUE_FIELDS)
    observed = rfm(state, now) if params is not None else None
    if params is None or observed is None:
        return out
    orders, t_x, T, mean_value = observed
    x = orders - 1
    alive = p_alive(params, x, t_x, T)
    in_90, in_365 = (expected_purchases(params, days, x, t_x, T) for days in (90.0, 365.0))
    in_horizon = in_365 if params.clv_horizon_days == 365.0 else expected_purchases(
        params, params.clv_horizon_days, x, t_x, T)
    order_value = expected_order_value(params, orders, mean_value)
    out.update(p_alive=round(alive, 4), expected_purchases_90d=round(in_90, 3),
               expected_purchases_365d=round(in_365, 3),
               expected_order_value=None if order_value is None else round(order_value, 2),
               predicted_clv=None if order_value is None else round(in_horizon * order_value, 2),
               next_order_expected_at=format_time(now + 365.0 / in_365 * DAY) if in_365 >= 1 else None)
    return out


def alive_probability(params: ValueParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """`p_alive` for arrays of customers."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    with np.errstate(divide="ignore", over="ignore"):
        log_ratio = np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) + (r + x) * np.log((alpha + T) / (alpha + t_x))
        return np.where(x > 0, 1.0 / (1.0 + np.exp(np.minimum(log_ratio, 700.0))), 1.0)


def no_purchase_probability(params: ValueParams, days: float, x: np.ndarray, t_x: np.ndarray,
                            T: np.ndarray, alive: np.ndarray | None = None) -> np.ndarray:
    """P(no purchase in the next `days`), per customer, exact under BG/NBD: a customer who has
    left buys nothing; one still there buys nothing with probability E[exp(-rate x days)]
    over the rate's posterior, Gamma(r + x, alpha + T). (Leaving happens only right after a
    purchase, so it cannot happen in a window without one.)"""
    alive = alive_probability(params, x, t_x, T) if alive is None else alive
    return 1.0 - alive + alive * ((params.alpha + T) / (params.alpha + T + days)) ** (params.r + x)


def _odds(p: np.ndarray) -> np.ndarray:
    return np.minimum(p / np.maximum(1.0 - p, 1.0 / (MAX_ODDS + 1)), MAX_ODDS)


def value_features(rows: np.ndarray, params: ValueParams | None, horizon_days: float) -> np.ndarray:
    """The VALUE_FEATURE_NAMES columns for feature rows (worker.core.features order).

    (orders, t_x, T) come from the row: t_x is the mean gap times the repeat purchases, T
    adds the days since the last purchase (which the row caps at a year of silence). A
    customer who never bought expects no purchase (the cap) and cannot have dropped out (0),
    as BG/NBD has it of a customer without a repeat purchase."""
    rows = np.asarray(rows, dtype=float).reshape(-1, len(FEATURE_NAMES))
    if params is None:
        return np.full((len(rows), len(VALUE_FEATURE_NAMES)), UNFITTED_ODDS)
    orders = rows[:, _ORDERS]
    x = np.maximum(orders - 1, 0.0)
    t_x = np.where(orders >= 2, rows[:, _GAP] * x, 0.0)
    T = t_x + rows[:, _SINCE]
    alive = alive_probability(params, x, t_x, T)
    none = np.where(orders >= 1, no_purchase_probability(params, horizon_days, x, t_x, T, alive), 1.0)
    return np.column_stack([_odds(none), _odds(1.0 - alive)])
