"""Per-customer state as a pure fold, and the model's feature vector.

`apply_event(state, event) -> state` and `features(state, now)` read no clock
and do no I/O: the worker, training and the tests all run this same code, so
what was measured offline is what runs online.

Every aggregate is order-independent (max, min, sums, day buckets, ratings kept
by their own timestamp), so out-of-order events within the lateness bound give
the same state as in-order ones; a redelivered `event_id` changes nothing.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import cast

from worker.core.events import Event

DAY = 86400.0
WINDOW_DAYS = (7, 30, 90)
KEPT_DAYS = max(WINDOW_DAYS)
# Redeliveries replay what was processed since the last offset commit: a customer's
# last 16 event ids cover it for all but the busiest customers, and keep the record small.
RECENT_IDS = 16
MAX_TICKETS = 32  # kept per customer (open ones first, newest first); the codec counts them in a byte
_WINDOW_MASK = (1 << KEPT_DAYS) - 1
# CLV = average order value x purchases per year x expected relationship length.
EXPECTED_LIFETIME_YEARS = 2.0
MIN_TENURE_DAYS = 30.0  # frequency over a shorter tenure is noise
_HOUR_IN_DAYS = 1 / 24
NEVER_DAYS = 365.0  # "days since" cap for things that never happened


@dataclass(frozen=True, slots=True)
class Ticket:
    opened_at: float
    resolved_at: float = 0.0  # 0: still open
    status_at: float = 0.0    # time of the latest action, so late actions do not win


@dataclass(frozen=True, slots=True)
class CustomerState:
    """One compact record per customer; times are seconds since the epoch, 0 = never."""

    first_seen: float = 0.0
    last_seen: float = 0.0
    last_activity: float = 0.0   # login or purchase: what "lapsed" is measured from
    first_activity: float = 0.0
    last_login: float = 0.0
    first_purchase: float = 0.0
    last_purchase: float = 0.0
    logins: int = 0
    orders: int = 0
    revenue: float = 0.0
    # bit i set: a login or purchase on day (last_activity's day - i), for the last 90 days
    active_days: int = 0
    tickets: dict[str, Ticket] = field(default_factory=dict)
    last_csat: int = 0
    last_csat_at: float = 0.0
    last_nps: int = -1
    last_nps_at: float = 0.0
    bad_support: int = 0
    last_bad_support_at: float = 0.0
    recent_ids: tuple[int, ...] = ()
    fired: dict[str, float] = field(default_factory=dict)     # trigger memory, kept by worker.core.triggers

    @property
    def activities(self) -> int:
        return self.logins + self.orders


EMPTY = CustomerState()


def event_key(event_id: str) -> int:
    """Stable 32-bit key of an event id (Python's hash() is salted per process)."""
    return zlib.crc32(event_id.encode())


def is_duplicate(state: CustomerState, event: Event) -> bool:
    return event_key(event.event_id) in state.recent_ids


def is_late(state: CustomerState, event: Event, lateness_s: float) -> bool:
    """Older than the customer's newest event by more than the lateness bound."""
    return state.last_seen > 0 and event.occurred_at < state.last_seen - lateness_s


def apply_event(state: CustomerState, event: Event) -> CustomerState:
    """Fold one valid event into the state. Duplicates return the state unchanged."""
    key = event_key(event.event_id)
    if key in state.recent_ids:
        return state
    t = event.occurred_at
    # min and max written out (here and below: these run for every event and decision point,
    # where the builtins' call costs more than the comparison); same results, ties included
    first_seen = (t if t < state.first_seen else state.first_seen) if state.first_seen else t
    last_seen = t if t > state.last_seen else state.last_seen
    recent_ids = (state.recent_ids + (key,))[-RECENT_IDS:]
    if event.type == "support":
        return evolve(state, first_seen=first_seen, last_seen=last_seen, recent_ids=recent_ids,
                      **_support(state, event))
    last_activity = t if t > state.last_activity else state.last_activity
    first_activity = (t if t < state.first_activity else state.first_activity) if state.first_activity else t
    # anchored at the newest *activity*: support events must not move the window, or the
    # result would depend on the order they arrive in
    active_days = _mark_day(state.active_days, state.last_activity, t)
    if event.type == "login":
        return _with_login(state, first_seen, last_seen, recent_ids, last_activity, first_activity, active_days,
                           t if t > state.last_login else state.last_login, state.logins + 1)
    return _with_purchase(state, first_seen, last_seen, recent_ids, last_activity, first_activity, active_days,
                          (t if t < state.first_purchase else state.first_purchase) if state.first_purchase else t,
                          t if t > state.last_purchase else state.last_purchase, state.orders + 1,
                          state.revenue + event.amount)


_FIELDS = tuple(f.name for f in fields(CustomerState))


def _slot_writer(name: str, params: str, value: Callable[[str], str]) -> Callable[..., CustomerState]:
    """Compile `def name(params)` building a CustomerState slot by slot, field f from the
    expression value(f): no per-call introspection, and none of the frozen dataclass's
    object.__setattr__ per field (these run several times per event; the loop that
    dataclasses.replace runs cost 3x as much)."""
    lines = [f"def {name}({params}):", "    new = _new(_cls)"]
    lines += [f"    _set_{f}(new, {value(f)})" for f in _FIELDS]
    lines.append("    return new")
    scope: dict = {"_new": object.__new__, "_cls": CustomerState,
                   **{f"_set_{f}": getattr(CustomerState, f).__set__ for f in _FIELDS}}
    exec("\n".join(lines), scope)  # noqa: S102 - the source is built from the dataclass's own field names
    return scope[name]


# replace(state, **changes)
evolve = _slot_writer("evolve", "state, **changes", lambda f: f"changes[{f!r}] if {f!r} in changes else state.{f}")
# CustomerState(*every field, in declaration order): what the state codec decodes
build_state = _slot_writer("build_state", ", ".join(_FIELDS), lambda f: f)


def updater(name: str, *changed: str) -> Callable[..., CustomerState]:
    """`name(state, *values)`: the state with the `changed` fields set to `values`, in that
    order (what evolve does for a fixed set of fields, without its keyword handling)."""
    unknown = set(changed) - set(_FIELDS)
    if unknown:
        raise ValueError(f"not CustomerState fields: {sorted(unknown)}")
    return _slot_writer(name, ", ".join(("state", *changed)), lambda f: f if f in changed else f"state.{f}")


with_fired = updater("with_fired", "fired")
_ACTIVITY = ("first_seen", "last_seen", "recent_ids", "last_activity", "first_activity", "active_days")
_with_login = updater("_with_login", *_ACTIVITY, "last_login", "logins")
_with_purchase = updater("_with_purchase", *_ACTIVITY, "first_purchase", "last_purchase", "orders", "revenue")


def _mark_day(bits: int, last_activity: float, t: float) -> int:
    """Set the bit of day t in a 90-day bitmap anchored at the newest activity's day."""
    anchor, day = int(last_activity // DAY), int(t // DAY)
    if not last_activity or day > anchor:
        bits = (bits << (day - anchor)) if last_activity else 0
        anchor = day
    offset = anchor - day
    return (bits | (1 << offset)) & _WINDOW_MASK if offset < KEPT_DAYS else bits


def _support(state: CustomerState, event: Event) -> dict:
    t = event.occurred_at
    changes: dict = {"tickets": _ticket_update(state.tickets, event)}
    if event.csat is not None and t >= state.last_csat_at:
        changes.update(last_csat=event.csat, last_csat_at=t)
    if event.nps is not None and t >= state.last_nps_at:
        changes.update(last_nps=event.nps, last_nps_at=t)
    if is_bad_rating(event):
        changes.update(bad_support=state.bad_support + 1,
                       last_bad_support_at=max(state.last_bad_support_at, t))
    return changes


def is_bad_rating(event: Event, csat_max: int = 2) -> bool:
    """CSAT 1..csat_max or a detractor NPS (0-6, by definition). The state's bad-support
    features use the fixed default; trigger decisions pass the policy's bound."""
    return (event.csat is not None and event.csat <= csat_max) or (event.nps is not None and event.nps <= 6)


def _ticket_update(tickets: dict[str, Ticket], event: Event) -> dict[str, Ticket]:
    t = event.occurred_at
    ticket_id = cast(str, event.ticket_id)  # parse_event requires one on every support event
    old = tickets.get(ticket_id)
    if old is None:
        # A reply or resolution may arrive before its "opened" (out of order): the ticket
        # was opened no later than this action.
        new = Ticket(opened_at=t, resolved_at=t if event.action == "resolved" else 0.0, status_at=t)
    elif event.action == "opened":
        new = replace(old, opened_at=min(old.opened_at, t))
    elif t < old.status_at:
        new = old  # a late action neither overrides a newer one nor backdates a reopened ticket
    elif event.action == "resolved":
        new = replace(old, resolved_at=t, status_at=t)
    elif event.action == "reopened":
        new = Ticket(opened_at=t, resolved_at=0.0, status_at=t)
    else:  # replied: still waiting for resolution
        new = replace(old, status_at=t)
    horizon = t - KEPT_DAYS * DAY
    kept = {k: v for k, v in tickets.items() if not v.resolved_at or v.resolved_at > horizon}
    kept[ticket_id] = new
    if len(kept) > MAX_TICKETS:  # a flood of tickets: keep open ones, then the most recent
        ranked = sorted(kept.items(), key=lambda kv: (kv[1].resolved_at == 0, kv[1].status_at), reverse=True)
        kept = dict(ranked[:MAX_TICKETS])
    return kept


def open_tickets(state: CustomerState) -> list[tuple[str, Ticket]]:
    return [(k, v) for k, v in state.tickets.items() if not v.resolved_at]


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
