"""The model's feature vector, and the customer measures it is built from.

`features(state, now)` reads no clock and does no I/O: the worker, training and the tests
all run this same code, so what was measured offline is what runs online.
"""
from __future__ import annotations

from worker.core.state import DAY, KEPT_DAYS, CustomerState, open_tickets

WINDOW_DAYS = (7, 30, 90)  # activity windows; the state's day bitmap covers KEPT_DAYS
assert max(WINDOW_DAYS) <= KEPT_DAYS
# CLV = average order value x purchases per year x expected relationship length.
EXPECTED_LIFETIME_YEARS = 2.0
MIN_TENURE_DAYS = 30.0  # frequency over a shorter tenure is noise
_HOUR_IN_DAYS = 1 / 24
NEVER_DAYS = 365.0  # "days since" cap for things that never happened


def activity_in(state: CustomerState, now: float, days: int) -> int:
    """Days with a login or purchase among the `days` days up to and including now's day."""
    if not state.last_activity:
        return 0
    covered = int(state.last_activity // DAY) - int(now // DAY) + days  # bits 0..covered-1 are in the window
    return (state.active_days & ((1 << max(0, min(covered, KEPT_DAYS))) - 1)).bit_count()


def mean_purchase_gap_days(state: CustomerState) -> float:
    if state.orders < 2:
        return NEVER_DAYS
    return (state.last_purchase - state.first_purchase) / DAY / (state.orders - 1)


def rhythm_days(state: CustomerState) -> float | None:
    """The customer's usual gap between activities, or None with too little history."""
    if state.activities < 3:
        return None
    days = (state.last_activity - state.first_activity) / DAY / (state.activities - 1)
    return _HOUR_IN_DAYS if _HOUR_IN_DAYS > days else days


def clv_estimate(state: CustomerState, now: float) -> float:
    if not state.orders:
        return 0.0
    days = (now - state.first_seen) / DAY
    tenure_years = (MIN_TENURE_DAYS if MIN_TENURE_DAYS > days else days) / 365.0
    return state.revenue / state.orders * (state.orders / tenure_years) * EXPECTED_LIFETIME_YEARS


def nps_class(score: int) -> str | None:
    if score < 0:
        return None
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


FEATURE_NAMES: tuple[str, ...] = (
    "days_since_last_activity",
    "days_since_last_login",
    "days_since_last_purchase",
    "tenure_days",
    "activity_7d",
    "activity_30d",
    "activity_90d",
    "orders",
    "revenue",
    "avg_order_value",
    "purchases_per_30d",
    "mean_days_between_purchases",
    "purchase_overdue_ratio",
    "repeat_purchaser",
    "clv_estimate",
    "open_tickets",
    "oldest_open_ticket_hours",
    "last_csat",
    "nps_detractor",
    "nps_promoter",
    "days_since_bad_support",
)


def _days_since(t: float, now: float) -> float:
    if not t:
        return NEVER_DAYS
    elapsed = now - t
    days = (0.0 if 0.0 > elapsed else elapsed) / DAY
    return NEVER_DAYS if NEVER_DAYS < days else days


def features(state: CustomerState, now: float) -> list[float]:
    """The model's input, in FEATURE_NAMES order: recency, frequency, monetary value,
    rhythm, support experience. Pure; `now` is the scoring time."""
    age = now - state.first_seen
    tenure = (0.0 if 0.0 > age else age) / DAY
    since_purchase = _days_since(state.last_purchase, now)
    gap = mean_purchase_gap_days(state)
    orders, revenue = state.orders, state.revenue
    # a decision at a past deadline may see a ticket opened later: it was not waiting then
    waiting = [now - t.opened_at for _, t in open_tickets(state) if t.opened_at <= now] if state.tickets else ()
    nps = nps_class(state.last_nps)
    return [
        _days_since(state.last_activity, now),
        _days_since(state.last_login, now),
        since_purchase,
        tenure,
        *_windows(state, now),
        float(orders),
        revenue,
        revenue / orders if orders else 0.0,
        orders / (MIN_TENURE_DAYS if MIN_TENURE_DAYS > tenure else tenure) * 30.0,
        gap,
        50.0 if 50.0 < (overdue := since_purchase / (1.0 if 1.0 > gap else gap)) else overdue,
        1.0 if orders >= 2 else 0.0,
        clv_estimate(state, now),
        float(len(waiting)),
        max(waiting, default=0.0) / 3600.0,
        float(state.last_csat),
        1.0 if nps == "detractor" else 0.0,
        1.0 if nps == "promoter" else 0.0,
        _days_since(state.last_bad_support_at, now),
    ]


def _windows(state: CustomerState, now: float) -> list[float]:
    """activity_in for each of WINDOW_DAYS, sharing the window arithmetic."""
    if not state.last_activity:
        return [0.0] * len(WINDOW_DAYS)
    base, bits = int(state.last_activity // DAY) - int(now // DAY), state.active_days
    out = []
    for w in WINDOW_DAYS:
        covered = base + w  # bits 0..covered-1, clamped to 0..KEPT_DAYS
        mask = _LOW_BITS[0 if covered < 0 else KEPT_DAYS if covered > KEPT_DAYS else covered]
        out.append(float((bits & mask).bit_count()))
    return out


_LOW_BITS = tuple((1 << n) - 1 for n in range(KEPT_DAYS + 1))
