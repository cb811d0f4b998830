"""Seeded synthetic customer event stream (schema v1) for training and the demo.

Model of behaviour:
- Every customer belongs to a segment (daily, weekly, monthly, rare) that sets
  their mean gap between logins and between purchases; each customer draws their
  own gaps, jitter, basket size (lognormal, median ~40 EUR), channel mix, favourite
  hour of day and sign-up day (30% exist at the start, the rest join during the
  first 60% of the period).
- Logins and purchases are renewal processes: the next one comes one jittered gap
  after the last, measured in "busy time". Busy time runs faster on busy days
  (weekends for purchases, the start of the month, a mild seasonal sine, and a
  few promotion days at 2-4x), so the rhythm survives while the calendar shows.
- About a third of customers churn on a random day. In the 2-6 weeks before it
  their busy time slows down (5x by the end), so gaps grow and fewer purchases
  happen; baskets shrink too. After the churn day nothing more comes.
- Support tickets open now and then (a few percent per active week) and are
  usually answered within hours, resolved within a day or two, rated well. A third
  of churners get a troubled ticket in their decline: slow or never resolved
  and/or rated badly. A few tickets are reopened.
`corrupt` turns the stream into Kafka message bytes with malformed messages
and redeliveries mixed in, like a real topic.
"""
from __future__ import annotations

import bisect
import json
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from worker.core.events import format_time

DAY = 86400
# segment: (share of customers, login gap range in days, purchase gap range in days, app share)
SEGMENTS = {
    "daily": (0.20, (0.7, 1.4), (7, 21), 0.75),
    "weekly": (0.40, (2.3, 7.0), (14, 42), 0.5),
    "monthly": (0.30, (6.0, 12.0), (25, 38), 0.35),
    "rare": (0.10, (20.0, 45.0), (60, 200), 0.3),
}
CHURN_SHARE = 0.35
TROUBLED_CHURNER_SHARE = 1 / 3
TICKETS_PER_WEEK = 0.04  # "a few percent chance per active week"
REOPEN_SHARE = 0.06
PRELOGIN_SHARE = 0.6  # most purchases follow a login session a few minutes earlier
# Purchases lean to the weekend; logins are flat-ish, a bit higher on workdays (Mon..Sun).
BUY_WEEKDAY = (0.85, 0.85, 0.9, 0.95, 1.05, 1.25, 1.2)
LOGIN_WEEKDAY = (1.05, 1.05, 1.0, 1.0, 0.95, 0.95, 1.0)


@dataclass(frozen=True)
class Customer:
    number: int
    segment: str
    signup: int  # first active day (days since the period start)
    end: int  # first day without events: churn day, or the period length
    churns: bool
    decline_days: int  # length of the pre-churn decline
    login_gap: float  # mean gaps, in busy-time days
    purchase_gap: float
    jitter: float  # lognormal sigma of each gap
    app_share: float
    basket: float  # median order value in EUR
    peak_hour: float


@dataclass(frozen=True)
class Calendar:
    buy: list[float]  # cumulative busy time at the start of each day (length days+1)
    login: list[float]


def _calendar(rng: random.Random, origin: datetime, days: int) -> Calendar:
    promos = set(rng.sample(range(days), min(days, rng.randint(3, 5))))
    buy, login = [], []
    for day in range(days):
        date = origin + timedelta(days=day)
        payday = 0.08 * math.cos(2 * math.pi * (date.day - 1) / 30)  # money early in the month
        season = 0.12 * math.sin(2 * math.pi * date.timetuple().tm_yday / 365.25)
        boost = rng.uniform(2, 4) if day in promos else 1.0
        buy.append(BUY_WEEKDAY[date.weekday()] * (1 + payday + season) * boost)
        login.append(LOGIN_WEEKDAY[date.weekday()] * (1 + season) * (1 + (boost - 1) / 4))
    return Calendar(_cumulative(buy), _cumulative(login))


def _cumulative(rates: list[float]) -> list[float]:
    """Normalise to mean 1 (so gaps stay in days on average), then accumulate."""
    mean, total, out = sum(rates) / len(rates), 0.0, [0.0]
    for rate in rates:
        total += rate / mean
        out.append(total)
    return out


def _draw_customer(rng: random.Random, number: int, days: int) -> Customer:
    segment = rng.choices(list(SEGMENTS), weights=[s[0] for s in SEGMENTS.values()])[0]
    _, login_range, buy_range, app_share = SEGMENTS[segment]
    signup = 0 if rng.random() < 0.3 else rng.randrange(max(1, int(days * 0.6)))
    churns = rng.random() < CHURN_SHARE and days - signup > 15
    return Customer(
        number=number, segment=segment, signup=signup,
        end=rng.randint(signup + 15, days - 1) if churns else days, churns=churns,
        decline_days=rng.randint(14, 42), login_gap=rng.uniform(*login_range),
        purchase_gap=rng.uniform(*buy_range), jitter=rng.uniform(0.2, 0.5),
        app_share=min(1.0, max(0.0, rng.gauss(app_share, 0.2))),
        basket=40 * rng.lognormvariate(0, 0.5), peak_hour=rng.choice((8, 12.5, 18, 20, 21)),
    )


def _decline(cust: Customer, day: float) -> float:
    """0 while healthy, rising to 1 on the churn day."""
    if not cust.churns:
        return 0.0
    return min(1.0, max(0.0, (day - (cust.end - cust.decline_days)) / cust.decline_days))


def _lived_time(cumulative: list[float], cust: Customer) -> list[float]:
    """Busy time as this customer lives it: it slows down through the decline (5x at the end),
    so habits already scheduled come later and fewer of them happen before the churn day."""
    if not cust.churns:
        return cumulative
    start = max(cust.signup, cust.end - cust.decline_days)
    out = cumulative[: start + 1]
    for day in range(start, cust.end):
        slowdown = 1 + 4 * _decline(cust, day + 0.5)
        out.append(out[-1] + (cumulative[day + 1] - cumulative[day]) / slowdown)
    return out


def _habit_days(rng: random.Random, cust: Customer, cumulative: list[float], gap: float) -> list[int]:
    """Days on which a habit fires: a jittered renewal process in the customer's busy time."""
    lived = _lived_time(cumulative, cust)
    out, busy = [], lived[cust.signup] + rng.random() * gap
    while (day := bisect.bisect_right(lived, busy) - 1) < cust.end:
        out.append(day)
        busy += gap * rng.lognormvariate(-cust.jitter ** 2 / 2, cust.jitter)  # jitter has mean 1
    return out


def _clock(rng: random.Random, cust: Customer, day: int) -> float:
    """A time (in days) on `day`, mostly 7-23h around the customer's favourite hour."""
    if rng.random() < 0.05:
        return day + rng.random()  # night owls, time zones
    hour = rng.gauss(cust.peak_hour, 2.5)
    while not 7 <= hour < 24:  # redraw rather than clamp, so 7h and 23h get no pile-up
        hour = rng.gauss(cust.peak_hour, 2.5)
    return day + hour / 24


def _login(rng: random.Random, cust: Customer, t: float) -> tuple:
    return t, "login", {"channel": "app" if rng.random() < cust.app_share else "web"}


def _shopping(rng: random.Random, cust: Customer, cal: Calendar) -> list[tuple]:
    """Purchases (smaller baskets in the decline), most with a login just before."""
    out = []
    for n, day in enumerate(_habit_days(rng, cust, cal.buy, cust.purchase_gap)):
        t = _clock(rng, cust, day)
        amount = cust.basket * rng.lognormvariate(0, 0.4) * (1 - 0.5 * _decline(cust, day))
        out.append((t, "purchase", {"order_id": f"o-{cust.number:06d}-{n:04d}",
                                    "amount": round(max(1.0, amount), 2), "currency": "EUR"}))
        if rng.random() < PRELOGIN_SHARE:
            out.append(_login(rng, cust, max(day, t - rng.uniform(2, 40) / 1440)))
    return out


def _ratings(rng: random.Random, bad: bool) -> dict:
    """Survey answers: detractors after trouble, mostly happy otherwise."""
    if bad:
        return {"csat": rng.randint(1, 2), "nps": rng.randint(0, 6)}
    if rng.random() < 0.35:
        return {}  # survey not answered
    good = rng.random() < 0.88
    return {"csat": rng.randint(4, 5) if good else rng.randint(2, 3),
            "nps": rng.randint(7, 10) if good else rng.randint(3, 7)}


def _ticket(rng: random.Random, opened: float, ticket_id: str, troubled: bool) -> list[tuple]:
    """opened -> replied -> resolved (-> reopened -> resolved); ratings on the last resolve."""
    steps: list[tuple[float, str, dict]] = [(opened, "opened", {})]
    t = opened
    if rng.random() < (0.6 if troubled else 0.92):
        t += rng.lognormvariate(math.log(3), 0.7) / 24  # agents answer within hours
        steps.append((t, "replied", {}))
    slow = troubled and rng.random() < 0.7
    if not (slow and rng.random() < 0.3):  # some troubled tickets are never resolved
        t += rng.uniform(3, 10) if slow else rng.uniform(0.1, 2)
        if rng.random() < REOPEN_SHARE:
            steps.append((t, "resolved", {}))
            t += rng.uniform(0.2, 3)
            steps.append((t, "reopened", {}))
            t += rng.uniform(0.3, 2)
        steps.append((t, "resolved", _ratings(rng, bad=troubled and (not slow or rng.random() < 0.6))))
    return [(t, "support", {"ticket_id": ticket_id, "action": a, **r}) for t, a, r in steps]


def _support(rng: random.Random, cust: Customer) -> list[tuple]:
    """Tickets at random (Poisson) while active, plus a troubled one for some churners."""
    opened_days = []
    day = cust.signup + rng.expovariate(TICKETS_PER_WEEK / 7)
    while day < cust.end:
        opened_days.append((int(day), False))
        day += rng.expovariate(TICKETS_PER_WEEK / 7)
    if cust.churns and rng.random() < TROUBLED_CHURNER_SHARE:
        start = max(cust.signup, cust.end - cust.decline_days)
        opened_days.append((rng.randint(start, cust.end - 2), True))
    out = []
    for n, (day, troubled) in enumerate(opened_days):
        ticket_id = f"t-{cust.number:06d}-{n:02d}"
        out += _ticket(rng, _clock(rng, cust, day), ticket_id, troubled)
    return out


def _customer_events(rng: random.Random, cust: Customer, cal: Calendar) -> list[tuple]:
    """One customer's (time in days, type, fields), cut at churn and at the period end."""
    out = [_login(rng, cust, _clock(rng, cust, cust.signup))] if cust.signup else []
    out += [_login(rng, cust, _clock(rng, cust, d)) for d in _habit_days(rng, cust, cal.login, cust.login_gap)]
    out += _shopping(rng, cust, cal) + _support(rng, cust)
    return [e for e in out if e[0] < cust.end]


def generate(customers: int = 2000, days: int = 180, seed: int = 7,
             start: str = "2026-01-05T00:00:00+00:00") -> list[dict]:
    """All events as wire-form dicts, sorted by occurred_at, deterministic for the seed."""
    if customers < 0 or days < 1:
        raise ValueError(f"need customers >= 0 and days >= 1, got {customers}, {days}")
    rng = random.Random(seed)
    origin = datetime.fromisoformat(start.replace("z", "Z"))
    origin = origin if origin.tzinfo else origin.replace(tzinfo=UTC)
    cal = _calendar(rng, origin, days)
    rows = []
    for number in range(1, customers + 1):
        cust = _draw_customer(rng, number, days)
        cid = f"c-{number:06d}"
        rows += [(round(t * DAY), cid, kind, f) for t, kind, f in _customer_events(rng, cust, cal)]
    rows.sort(key=lambda row: row[0])  # stable: ties keep customer order
    base = origin.timestamp()
    return [{"schema_version": 1, "event_id": f"e-{seed}-{n}", "type": kind, "customer_id": cid,
             "occurred_at": format_time(base + sec), **fields}
            for n, (sec, cid, kind, fields) in enumerate(rows)]


def _compact(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def _with(event: dict, **changes) -> bytes:
    return _compact({**event, **changes})


# Ways real producers get it wrong; each one makes parse_event refuse the message.
MALFORMATIONS = (
    lambda e, r: (raw := _compact(e))[: r.randrange(1, len(raw) - 1)],  # producer died mid-write
    lambda e, r: _with(e, amount="abc") if e["type"] == "purchase" else _with(e, customer_id=42),
    lambda e, r: _compact({k: v for k, v in e.items() if k != "customer_id"}),
    lambda e, r: _with(e, type="refund"),  # a type from a newer producer
    lambda e, r: _with(e, occurred_at=e["occurred_at"].rstrip("Z")),  # local time, no offset
    lambda e, r: _with(e, occurred_at="1970-01-01" + e["occurred_at"][10:]),  # zero epoch
    lambda e, r: r.choice((b"[1,2]", b"null", b'"login"')),
    lambda e, r: _compact(e).replace(b'"customer_id":"', b'"customer_id":"\xe9', 1),  # Latin-1
    lambda e, r: _with(e, schema_version=2),
)


def corrupt(events: list[dict], fraction: float, seed: int) -> list[bytes]:
    """Message bytes with ~fraction malformed and ~fraction/4 redelivered (exact duplicates)."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction: expected 0..1, got {fraction}")
    rng, n = random.Random(seed), len(events)
    bad = set(rng.sample(range(n), round(n * fraction)))
    good = [i for i in range(n) if i not in bad]
    redelivered = set(rng.sample(good, min(len(good), round(n * fraction / 4))))
    out: list[bytes] = []
    later: dict[int, list[bytes]] = {}
    for i, event in enumerate(events):
        raw = rng.choice(MALFORMATIONS)(event, rng) if i in bad else _compact(event)
        out.append(raw)
        if i in redelivered:  # the same bytes again a little later, as after a rebalance
            later.setdefault(i + rng.randint(0, 20), []).append(raw)
        out += later.pop(i, [])
    for i in sorted(later):
        out += later[i]
    return out


def write_jsonl(path: str | Path, events: list[dict]) -> int:
    """One compact JSON object per line; returns how many were written."""
    with open(path, "w", encoding="utf-8") as handle:
        for event in events:
            handle.write(json.dumps(event, separators=(",", ":")) + "\n")
    return len(events)
