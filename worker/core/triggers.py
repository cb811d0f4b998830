"""Trigger decisions: pure functions of policy, state, score and time.

    decide(policy, customer_id, state, score, now, cause) -> (decisions, state)

returns what to do (`Fire`, held out for the control group or not, or `Suppressed`,
per trigger type that applied) and the state with its trigger memory updated. Silence is handled by
deadlines: `next_deadline(policy, state, after)` is the next moment at which a
silent customer must be looked at again (a follow-up check, the lapse, a
support SLA), and the worker evaluates `decide` at exactly that moment.

Trigger ids are uuid5 of (type, customer, episode), so the same episode gives
the same id after a restart or a replay and subscribers can de-duplicate.
"""
from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass, replace
from hashlib import sha1
from typing import NamedTuple

from worker.core.events import Event, utc_offset_s
from worker.core.features import clv_estimate, rhythm_days
from worker.core.policy import Cap, Policy
from worker.core.state import DAY, CustomerState, is_bad_rating, open_tickets

TRIGGER_TYPES = ("follow_up", "win_back", "service_recovery")
_ID_NAMESPACE = uuid.UUID("6f1c3a0e-4e7b-5d2a-9c61-0b7e1d2f3a45")
_ID_PREFIX = _ID_NAMESPACE.bytes
CHECKED = "checked_until"  # trigger memory key: silence evaluated up to this time
CAP_SLOTS = tuple(f"cap_{i}" for i in range(8))  # the times of the last triggers the cap counts
CAP_RECHECK = "cap_recheck"  # a trigger held back by the cap is looked at again then
TZ_OFFSET = "tz_offset"  # the customer's UTC offset (s), from their latest event that names a time zone
QUIET_UNTIL = "quiet_until"  # triggers deferred by quiet hours are looked at again then
QUIET_RATING = "quiet_rating"  # the time of a bad rating whose service recovery was deferred
SLA_EPISODE = "service_recovery_sla_breach_episode"  # the opening of the last ticket recovered after a breach


@dataclass(frozen=True, slots=True)
class Fire:
    """A trigger decided for an episode: sent, or, for a customer in the holdout, counted
    and remembered as if sent (the control group)."""

    type: str
    trigger_id: str
    rule: str          # why: lapsed | risk_above_threshold | sla_breach | bad_rating
    threshold: float | None
    held_out: bool = False


@dataclass(frozen=True, slots=True)
class Suppressed:
    type: str
    reason: str        # cooldown | already_fired


class Candidate(NamedTuple):
    """A trigger that applies at a decision point, before cooldowns and episodes are checked."""

    type: str
    rule: str
    episode: str       # what the trigger id is derived from: one id per episode
    episode_at: float  # the episode's time: a newer episode re-arms the trigger
    threshold: float | None


Decision = Fire | Suppressed


def segment(policy: Policy, state: CustomerState, now: float) -> str:
    """Value/loyalty segment: champion > loyal > new > occasional > prospect."""
    seg = policy.segments
    if state.orders >= seg.loyal_orders and clv_estimate(state, now) >= seg.champion_clv:
        return "champion"
    if state.orders >= seg.loyal_orders:
        return "loyal"
    if now - state.first_seen < seg.new_days * 86400:
        return "new"
    return "occasional" if state.orders else "prospect"


def lapse_days(policy: Policy, state: CustomerState) -> float:
    """How long this customer may stay silent before they count as lapsed."""
    rhythm = rhythm_days(state)
    if rhythm is None:
        return policy.lapse.default_days
    days = rhythm * policy.lapse.rhythm_multiplier
    low, high = policy.lapse.min_days, policy.lapse.max_days
    days = low if low > days else days
    return high if high < days else days


def deadlines(policy: Policy, state: CustomerState) -> list[float]:
    out: list[float] = []
    last = state.last_activity
    if last:
        lapse = lapse_days(policy, state) * DAY
        out += [last + lapse * policy.lapse.follow_up_check_at, last + lapse]
        fired = state.fired
        if "win_back" in fired and fired.get("win_back_episode", 0.0) < last:
            # a lapse suppressed by the cooldown is looked at again when the cooldown ends
            # (at each cooldown a segment may have: the segment then decides)
            out += [fired["win_back"] + c for c in policy.cooldowns_s("win_back")]
    if state.tickets:  # most customers have none: skip the call
        out += _ticket_deadlines(policy, state)
    for key in (CAP_RECHECK, QUIET_UNTIL):  # held back by the cap, deferred by quiet hours: looked at again
        if key in state.fired:
            out.append(state.fired[key])
    return out


def _ticket_deadlines(policy: Policy, state: CustomerState) -> list[float]:
    """Each open ticket's SLA breach, and the end of the service-recovery cooldown when a
    breach not yet recovered falls within it (it is looked at again then)."""
    sla = policy.support.sla_hours * 3600.0
    waiting = [t.opened_at for _, t in open_tickets(state)]
    out = [opened + sla for opened in waiting]
    fired = state.fired
    if "service_recovery" in fired:
        recovered_up_to = fired.get(SLA_EPISODE, 0.0)
        for cooldown in policy.cooldowns_s("service_recovery"):
            end = fired["service_recovery"] + cooldown
            if any(recovered_up_to < opened and opened + sla < end for opened in waiting):
                out.append(end)
    return out


def earliest_possible_deadline(policy: Policy, state: CustomerState) -> float:
    """A cheap lower bound of every deadline of this state (no rhythm computation)."""
    bound = float("inf")
    if state.last_activity:
        bound = state.last_activity + policy.lapse.min_days * DAY * policy.lapse.follow_up_check_at
    if state.tickets:
        bound = min(bound, min(t.opened_at for t in state.tickets.values()) + policy.support.sla_hours * 3600.0)
    if "win_back" in state.fired:
        bound = min(bound, state.fired["win_back"] + min(policy.cooldowns_s("win_back")))
    for key in (CAP_RECHECK, QUIET_UNTIL):
        if key in state.fired:
            bound = min(bound, state.fired[key])
    return bound


def next_deadline(policy: Policy, state: CustomerState, after: float) -> float | None:
    """The earliest deadline strictly after `after`, or None when silence needs no check."""
    best = None
    for d in deadlines(policy, state):
        if d > after and (best is None or d < best):
            best = d
    return best


def pending_deadline(policy: Policy, state: CustomerState) -> float | None:
    """The next deadline not yet evaluated for this customer."""
    return next_deadline(policy, state, state.fired.get(CHECKED, 0.0))


def trigger_id(kind: str, customer_id: str, episode: str) -> str:
    """str(uuid.uuid5(_ID_NAMESPACE, "kind|customer|episode")), without building a UUID object."""
    digest = bytearray(sha1(_ID_PREFIX + f"{kind}|{customer_id}|{episode}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def in_holdout(policy: Policy, customer_id: str) -> bool:
    bucket = zlib.crc32(f"{policy.holdout.salt}|{customer_id}".encode()) % 10_000
    return bucket < policy.holdout.percent * 100


def decide(policy: Policy, customer_id: str, state: CustomerState, score: float, now: float,
           cause: Event | None = None) -> tuple[list[Decision], CustomerState]:
    """Decide the triggers for one scored state at `now`; `cause` is the event that
    brought us here (None for a silence deadline)."""
    memory = state.fired
    if cause is None and memory.get(CHECKED, 0.0) < now:
        memory = {**memory, CHECKED: now}  # a silence check: silence is evaluated up to now
    decisions, memory = decide_memory(policy, customer_id, state, memory, score, now, cause)
    return decisions, replace(state, fired=memory)


def decide_memory(policy: Policy, customer_id: str, state: CustomerState, memory: dict[str, float],
                  score: float, now: float, cause: Event | None = None) -> tuple[list[Decision], dict]:
    """`decide` on an explicit trigger memory (the batch path carries it beside the state),
    leaving CHECKED to the caller: the batch path sets it as it walks the deadlines."""
    # service recovery needs a support event or an open ticket; most points have neither
    recovery = (_service_recovery(policy, state, now, cause, memory)
                if state.tickets or (cause is not None and cause.type == "support") or QUIET_RATING in memory
                else None)
    activity = _activity_trigger(policy, state, score, now)
    if recovery is None and activity is None:
        return [], memory  # the common case: nothing applies
    candidates = [c for c in (recovery, activity) if c is not None]
    cap = policy.cap
    if cap is not None:  # the cap's priority decides which of several goes first
        order: list[str] = list(cap.priority)
        candidates.sort(key=lambda c: order.index(c.type))
    seg = segment(policy, state, now) if policy.treatment else None
    decisions: list[Decision] = []
    memory = dict(memory)  # copied only when it may change: the caller's dict is never modified
    memory.pop(CAP_RECHECK, None)
    memory.pop(QUIET_UNTIL, None)
    quiet_end = quiet_until(policy, memory, now)
    for c in candidates:
        if memory.get(_episode_key(c.type, c.rule), 0.0) >= c.episode_at:
            continue  # this episode has had its trigger; re-armed only by a newer one
        if now - memory.get(c.type, -1e18) < policy.cooldown_s(c.type, seg):
            decisions.append(Suppressed(c.type, "cooldown"))
            continue
        if quiet_end is not None:  # deferred to the end of the customer's night, not dropped
            decisions.append(Suppressed(c.type, "quiet_hours"))
            memory[QUIET_UNTIL] = quiet_end
            if c.rule == "bad_rating":  # no event will bring it back: remember the rating
                memory[QUIET_RATING] = c.episode_at
            continue
        if c.rule == "bad_rating":
            memory.pop(QUIET_RATING, None)
        if cap is not None and not _take_cap_slot(cap, memory, now):
            decisions.append(Suppressed(c.type, "cap"))
            continue
        memory[c.type], memory[_episode_key(c.type, c.rule)] = now, c.episode_at
        decisions.append(Fire(c.type, trigger_id(c.type, customer_id, c.episode), c.rule, c.threshold,
                              held_out=in_holdout(policy, customer_id)))
    return decisions, memory


def quiet_until(policy: Policy, memory: dict[str, float], now: float) -> float | None:
    """When the quiet hours around `now` end in the customer's time (None: not quiet now)."""
    quiet = policy.quiet_hours
    if quiet is None:
        return None
    offset = memory.get(TZ_OFFSET)
    if offset is None:
        offset = utc_offset_s(quiet.timezone, now)
    local = (now + offset) % DAY
    start, end = quiet.start_s, quiet.end_s
    inside = start <= local < end if start < end else (local >= start or local < end)
    return now + (end - local) % DAY if inside else None


def _take_cap_slot(cap: Cap, memory: dict[str, float], now: float) -> bool:
    """Count a trigger against the cap (the last `max_triggers` times sit in CAP_SLOTS), or
    refuse it and note when the oldest slot frees (a deadline: it is looked at again)."""
    slots = CAP_SLOTS[:cap.max_triggers]
    period = cap.period_days * DAY
    times = [memory.get(k, -1e18) for k in slots]
    oldest = min(range(len(slots)), key=lambda i: times[i])
    if now - times[oldest] < period:  # every slot holds a trigger within the period
        memory[CAP_RECHECK] = times[oldest] + period
        return False
    memory[slots[oldest]] = now
    return True


def _episode_key(kind: str, rule: str) -> str:
    """Where the last episode of a trigger is remembered. Service recovery keeps one per
    rule: a rating's episode is its time, an SLA breach's its ticket's opening, and the two
    must not hide each other."""
    return f"{kind}_{rule}_episode" if kind == "service_recovery" else f"{kind}_episode"


def _activity_trigger(policy: Policy, state: CustomerState, score: float, now: float) -> Candidate | None:
    """win_back for a lapsed or very-high-risk customer, else follow_up above its threshold.
    The episode is the customer's latest activity: new activity re-arms both."""
    last = state.last_activity
    if not last:
        return None
    floor = policy.lowest_follow_up_threshold if policy.treatment else policy.risk.follow_up_threshold
    if score < floor and now < last + policy.lapse.min_days * DAY:
        # the common case, without the rhythm: under both thresholds (follow-up's is the
        # lower), and not lapsed, as no lapse is shorter than min_days (the policy checks
        # min_days <= default_days <= max_days, and the rhythm's is clamped to them)
        return None
    episode = f"after:{last:.3f}"
    # the same expression as the lapse deadline, so deciding at that deadline is exact in floats
    if now >= last + lapse_days(policy, state) * DAY:
        return Candidate("win_back", "lapsed", episode, last, None)
    seg = segment(policy, state, now) if policy.treatment else None
    win_back, follow_up = policy.threshold("win_back", seg), policy.threshold("follow_up", seg)
    if score >= win_back:
        return Candidate("win_back", "risk_above_threshold", episode, last, win_back)
    if score >= follow_up:
        return Candidate("follow_up", "risk_above_threshold", episode, last, follow_up)
    return None


def _service_recovery(policy: Policy, state: CustomerState, now: float, cause: Event | None,
                      memory: dict[str, float]) -> Candidate | None:
    """A bad rating just arrived (or one deferred by quiet hours is due), or an open ticket is
    past the SLA: the oldest one opened after the last ticket already recovered, so every
    breached ticket gets its own."""
    if cause is not None and cause.type == "support" and is_bad_rating(cause, policy.support.bad_csat_max):
        return Candidate("service_recovery", "bad_rating", f"rating:{cause.event_id}", cause.occurred_at, None)
    if QUIET_RATING in memory:  # deferred: the event is gone, its time names the episode
        rated = memory[QUIET_RATING]
        return Candidate("service_recovery", "bad_rating", f"rating-at:{rated:.3f}", rated, None)
    recovered_up_to = memory.get(SLA_EPISODE, 0.0)
    if not state.tickets:  # most customers have none: skip the list
        return None
    sla = policy.support.sla_hours * 3600.0
    breached = [(t.opened_at, k) for k, t in open_tickets(state)
                if now >= t.opened_at + sla and t.opened_at > recovered_up_to]
    if breached:
        opened_at, ticket = min(breached)
        return Candidate("service_recovery", "sla_breach", f"ticket:{ticket}:{opened_at:.3f}", opened_at,
                policy.support.sla_hours)
    return None


