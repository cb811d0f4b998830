"""Per-customer state as a pure fold: `apply_event(state, event) -> state`.

No clock, no I/O: time comes in with the event. The feature vector built from a state
is worker.core.features; the compiled writers that copy a state, worker.core.slots.

Every aggregate is order-independent (max, min, sums, day buckets, ratings kept
by their own timestamp), so out-of-order events within the lateness bound give
the same state as in-order ones; a redelivered `event_id` changes nothing.
"""
from __future__ import annotations

import zlib
from bisect import bisect_left
from dataclasses import dataclass, field, replace
from hashlib import blake2b
from typing import cast

from worker.core import slots
from worker.core.events import Event

DAY = 86400.0
KEPT_DAYS = 90  # the activity bitmap's span, in days (the longest feature window)
# Redelivered records are recognised by their source offsets (`applied`); the event ids
# catch what offsets cannot: a producer that sends one event twice (a retry, a resend from
# further back). A state keeps the ids of its events within the lateness bound of the
# watermark (older copies are refused as late anyway), at most MAX_RECENT_IDS of them (12
# bytes each in the record: a customer with more events than that within the bound is a
# bot or a test, not a person); with no watermark (a replay in time order) its last
# RECENT_IDS.
RECENT_IDS = 16
MAX_RECENT_IDS = 1024
MAX_TICKETS = 32  # kept per customer (open ones first, newest first); the codec counts them in a byte
_WINDOW_MASK = (1 << KEPT_DAYS) - 1


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
    recent_ids: dict[int, float] = field(default_factory=dict)  # event-id key -> its event time
    fired: dict[str, float] = field(default_factory=dict)     # trigger memory, kept by worker.core.triggers
    # per source topic-partition (source_code), the highest offset applied: a redelivered
    # record at or below it changes nothing, however long the redelivered span
    applied: dict[int, int] = field(default_factory=dict)
    # events counted in (ids and offsets above) but not folded yet: later than the watermark,
    # they wait for it so that every decision sees the events before it (worker.core.pipeline)
    pending: tuple[Event, ...] = ()

    @property
    def activities(self) -> int:
        return self.logins + self.orders


EMPTY = CustomerState()


def event_key(event_id: str) -> int:
    """Stable 64-bit key of an event id (Python's hash() is salted per process): two of a
    customer's ids collide about once in 10^18 comparisons, where 32 bits collided every few
    hours at full load."""
    return int.from_bytes(blake2b(event_id.encode(), digest_size=8).digest(), "little")


def source_code(topic: str, partition: int, forwarded: bool = False) -> int:
    """Stable 32-bit key of a source topic-partition, for `CustomerState.applied`. The copies
    forwarded from an input partition are a source of their own: they arrive through the
    repartition topic, behind the records read from that partition directly, so their
    offsets rise only among themselves."""
    tail = "\x00forwarded" if forwarded else ""
    return zlib.crc32(f"{topic}\x00{partition}{tail}".encode())


def is_redelivered(state: CustomerState, source: int, offset: int) -> bool:
    """The record at `offset` of that source was applied already (or an earlier one was)."""
    return state.applied.get(source, -1) >= offset


def apply_event(state: CustomerState, event: Event) -> CustomerState:
    """Fold one valid event into the state. Duplicates return the state unchanged."""
    return apply_keyed(state, event, event_key(event.event_id), state.applied)


def apply_keyed(state: CustomerState, event: Event, key: int, applied: dict[int, int],
                horizon: float = float("-inf")) -> CustomerState:
    """apply_event for a caller that has the event's key already and records the source
    offsets it applied (the pipeline): one hash and one new state per event."""
    if key in state.recent_ids:
        return state
    return fold(state, event, remember(state.recent_ids, key, event.occurred_at, horizon), applied)


def remember(ids: dict[int, float], key: int, t: float, horizon: float) -> dict[int, float]:
    """The event ids to keep with one more: those of events at or after `horizon` (the
    watermark less the lateness bound), at most MAX_RECENT_IDS, the newest; with no horizon
    the last RECENT_IDS. Ids come in about time order, so the older ones are let go when the
    first one kept leaves the bound (one look instead of a pass over them all)."""
    if ids and next(iter(ids.values())) < horizon:
        kept = {k: v for k, v in ids.items() if v >= horizon}
    else:
        kept = dict(ids)
    kept[key] = float(int(t))  # whole seconds, as the codec keeps them
    limit = RECENT_IDS if horizon == float("-inf") else MAX_RECENT_IDS
    if len(kept) == limit + 1:  # the common case at the limit: one to let go
        del kept[min(kept, key=kept.__getitem__)]
    elif len(kept) > limit:
        kept = dict(sorted(kept.items(), key=lambda kv: kv[1])[-limit:])
    return kept


def hold(state: CustomerState, event: Event, applied: dict[int, int]) -> CustomerState:
    """The state with `event` counted in (its offset) but waiting to be folded, in event-time
    order among the others waiting (ties by event id: one order for every run). A waiting
    event is its own id record (`is_waiting`); its id joins the ids kept when it is folded,
    so a backlog waiting for the watermark does not push out the ids of the events before it."""
    waiting = event._replace(customer_id="")  # the state's key says whose it is
    pending = tuple(sorted((*state.pending, waiting), key=_time_order))
    return _with_pending(state, pending=pending, recent_ids=state.recent_ids, applied=applied)


def is_waiting(state: CustomerState, event: Event) -> bool:
    """`event` (its id at its time) is among the events waiting in the state."""
    pending = state.pending
    i = bisect_left(pending, _time_order(event), key=_time_order)
    return i < len(pending) and pending[i].event_id == event.event_id and pending[i].occurred_at == event.occurred_at


def release(state: CustomerState) -> tuple[Event, CustomerState]:
    """The earliest waiting event, and the state without it (it is folded next)."""
    return state.pending[0], _with_pending(state, pending=state.pending[1:], recent_ids=state.recent_ids,
                                           applied=state.applied)


def _time_order(event: Event) -> tuple[float, str]:
    return event.occurred_at, event.event_id


def fold(state: CustomerState, event: Event, recent_ids: dict[int, float], applied: dict[int, int]) -> CustomerState:
    """The event folded into the aggregates; the caller has decided it is new."""
    t = event.occurred_at
    # min and max written out (here and below: these run for every event and decision point,
    # where the builtins' call costs more than the comparison); same results, ties included
    first_seen = (t if t < state.first_seen else state.first_seen) if state.first_seen else t
    last_seen = t if t > state.last_seen else state.last_seen
    if event.type == "support":
        return evolve(state, first_seen=first_seen, last_seen=last_seen, recent_ids=recent_ids, applied=applied,
                      **_support(state, event))
    last_activity = t if t > state.last_activity else state.last_activity
    first_activity = (t if t < state.first_activity else state.first_activity) if state.first_activity else t
    # anchored at the newest *activity*: support events must not move the window, or the
    # result would depend on the order they arrive in
    active_days = _mark_day(state.active_days, state.last_activity, t)
    if event.type == "login":
        return _with_login(state, first_seen=first_seen, last_seen=last_seen, recent_ids=recent_ids,
                           last_activity=last_activity, first_activity=first_activity, active_days=active_days,
                           applied=applied, last_login=t if t > state.last_login else state.last_login,
                           logins=state.logins + 1)
    return _with_purchase(
        state, first_seen=first_seen, last_seen=last_seen, recent_ids=recent_ids, last_activity=last_activity,
        first_activity=first_activity, active_days=active_days, applied=applied,
        first_purchase=(t if t < state.first_purchase else state.first_purchase) if state.first_purchase else t,
        last_purchase=t if t > state.last_purchase else state.last_purchase, orders=state.orders + 1,
        revenue=state.revenue + event.amount)


# compiled writers (worker.core.slots): a new state per event costs about half of replace()'s
evolve = slots.evolver(CustomerState)      # replace(state, **changes)
build_state = slots.builder(CustomerState)  # CustomerState(**every field): what the codec decodes


def updater(name: str, *changed: str):
    """`name(state, *, changed fields)`: the state with those fields set."""
    return slots.updater(CustomerState, name, *changed)


with_fired = updater("with_fired", "fired")
with_applied = updater("with_applied", "applied")
_with_pending = updater("_with_pending", "pending", "recent_ids", "applied")
_ACTIVITY = ("first_seen", "last_seen", "recent_ids", "last_activity", "first_activity", "active_days", "applied")
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
