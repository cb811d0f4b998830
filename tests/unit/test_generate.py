"""The synthetic event stream: valid, reproducible, and shaped like real customers."""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from datetime import date, datetime
from statistics import mean

import pytest

from worker.core.events import Event, InvalidEvent, parse_event, to_json
from worker.tools.generate import corrupt, generate, write_jsonl

DAY = 86400
CUSTOMERS, DAYS, SEED = 300, 120, 3


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return generate(customers=CUSTOMERS, days=DAYS, seed=SEED)


@pytest.fixture(scope="module")
def long_stream() -> list[dict]:
    """Big enough for rate comparisons (~0.5 s): enough churners with a history before
    their decline, and enough purchases per day for weekday patterns to beat the noise."""
    return generate(customers=1000, days=180, seed=11)


def _seconds(event: dict) -> float:
    return datetime.fromisoformat(event["occurred_at"]).timestamp()


def _last_seen(events: list[dict]) -> dict[str, float]:
    return {e["customer_id"]: _seconds(e) for e in events}


def test_same_seed_same_stream_other_seed_other_stream(events):
    assert generate(customers=CUSTOMERS, days=DAYS, seed=SEED) == events
    assert generate(customers=CUSTOMERS, days=DAYS, seed=SEED + 1) != events


def test_every_event_parses_as_valid_and_round_trips(events):
    for event in events:
        parsed = parse_event(json.dumps(event).encode())
        assert isinstance(parsed, Event), (event, parsed)
        assert to_json(parsed) == event


def test_sorted_by_time_with_unique_ids(events):
    times = [_seconds(e) for e in events]
    assert times == sorted(times)
    assert len({e["event_id"] for e in events}) == len(events)
    assert all(re.fullmatch(r"c-\d{6}", e["customer_id"]) for e in events)
    orders = [e["order_id"] for e in events if e["type"] == "purchase"]
    assert len(set(orders)) == len(orders)


def test_tickets_belong_to_one_customer_and_start_opened(events):
    owner, first_action = {}, {}
    for e in (e for e in events if e["type"] == "support"):
        assert owner.setdefault(e["ticket_id"], e["customer_id"]) == e["customer_id"]
        first_action.setdefault(e["ticket_id"], e["action"])
    assert set(first_action.values()) == {"opened"}


def test_scale_covers_all_types_and_actions(events):
    assert 4_000 < len(events) < 40_000  # ~300 customers x 120 days
    assert len({e["customer_id"] for e in events}) > 0.95 * CUSTOMERS
    types = Counter(e["type"] for e in events)
    assert set(types) == {"login", "purchase", "support"}
    assert types["login"] > types["purchase"] > types["support"] / 2
    actions = Counter(e["action"] for e in events if e["type"] == "support")
    assert set(actions) == {"opened", "replied", "resolved", "reopened"}
    rated = [e for e in events if "csat" in e]
    assert rated and all(e["action"] == "resolved" and "nps" in e for e in rated)


def test_amounts_and_times_look_real(events):
    amounts = sorted(e["amount"] for e in events if e["type"] == "purchase")
    assert 25 < amounts[len(amounts) // 2] < 60  # median basket ~40 EUR
    assert all(a >= 0 and round(a, 2) == a for a in amounts)
    hours = Counter(int(e["occurred_at"][11:13]) for e in events)
    assert sum(n for h, n in hours.items() if h >= 7) > 0.9 * len(events)


def test_weekends_buy_more(long_stream):
    per_day = Counter(e["occurred_at"][:10] for e in long_stream if e["type"] == "purchase")
    usual = sorted(per_day, key=per_day.get)[:-5]  # leave out the promotion days (3-5)
    weekend = [per_day[d] for d in usual if date.fromisoformat(d).weekday() >= 5]
    workday = [per_day[d] for d in usual if date.fromisoformat(d).weekday() < 5]
    assert mean(weekend) > 1.15 * mean(workday)  # ~1.3; a flat week gives 0.9..1.1


def test_churn_is_a_minority_others_stay_to_the_end(events):
    last = _last_seen(events)
    end = max(last.values())
    silent = sum(end - t > 30 * DAY for t in last.values()) / len(last)
    active = sum(end - t < 7 * DAY for t in last.values()) / len(last)
    assert 0.1 < silent < 0.5
    assert active > 0.4


def test_purchases_slow_down_before_churners_stop(long_stream):
    """Mean purchase gap (days per purchase) in the 6 weeks before a churner's last event
    vs. before that, pooled over churners; stayers are the control. Days per purchase, not
    consecutive gaps: the long last gaps of a decline are cut off by the churn itself."""
    stream = long_stream
    first, last, buys = {}, _last_seen(stream), defaultdict(list)
    for e in stream:
        first.setdefault(e["customer_id"], _seconds(e))
        if e["type"] == "purchase":
            buys[e["customer_id"]].append(_seconds(e))
    end = max(last.values())

    def gap_growth(customers: list[str]) -> float:
        late_days = early_days = late_buys = early_buys = 0
        for c in customers:
            cut = last[c] - 42 * DAY
            if cut - first[c] < 28 * DAY:
                continue  # too little history to know their normal rhythm
            late_days, early_days = late_days + 42, early_days + (cut - first[c]) / DAY
            late_buys += sum(t > cut for t in buys[c])
            early_buys += sum(t <= cut for t in buys[c])
        return (late_days / late_buys) / (early_days / early_buys)

    churners = [c for c, t in last.items() if end - t > 30 * DAY]
    stayers = [c for c, t in last.items() if end - t < 7 * DAY]
    assert len(churners) > 50
    assert gap_growth(churners) > 1.15
    assert gap_growth(churners) > gap_growth(stayers) + 0.1


def test_corrupt_mixes_in_rejected_messages_and_redeliveries(events):
    messages = corrupt(events, fraction=0.1, seed=5)
    assert messages == corrupt(events, fraction=0.1, seed=5)
    results = [parse_event(m) for m in messages]
    rejected = Counter(r.reason for r in results if isinstance(r, InvalidEvent))
    assert 0.08 * len(events) < sum(rejected.values()) < 0.12 * len(events)
    assert len(rejected) >= 6, rejected
    valid = [m for m, r in zip(messages, results) if isinstance(r, Event)]
    redelivered = sum(n - 1 for n in Counter(valid).values())
    assert 0.015 * len(events) < redelivered < 0.035 * len(events)
    assert len(set(valid)) + sum(rejected.values()) == len(events)  # each event once


def test_corrupt_with_zero_fraction_is_plain_serialisation(events):
    messages = corrupt(events, fraction=0.0, seed=1)
    assert [json.loads(m) for m in messages] == events
    assert all(m == json.dumps(e, separators=(",", ":")).encode() for m, e in zip(messages, events))


def test_write_jsonl(events, tmp_path):
    path = tmp_path / "events.jsonl"
    assert write_jsonl(path, events[:100]) == 100
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == events[:100]
