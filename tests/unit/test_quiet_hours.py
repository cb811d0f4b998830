"""Quiet hours: a trigger due in the customer's night is deferred to its end, not dropped;
the customer's own time zone (an event's `tz`) decides where it has one."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from worker.core.codec import decode_state, encode_state
from worker.core.events import Event, InvalidEvent, parse_event
from worker.core.pipeline import Context, Item, process
from worker.core.policy import parse_policy
from worker.core.triggers import QUIET_RATING, QUIET_UNTIL, Fire, Suppressed, decide, next_deadline, trigger_id
from worker.errors import PolicyError

from .conftest import fold, login, policy_text, support, wire
from .fakes import SilenceModel

QUIET = '[quiet_hours]\nstart = "21:00"\nend = "08:00"\ntimezone = "Europe/Berlin"\n'


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.fixture
def quiet():
    return parse_policy(policy_text() + "\n" + QUIET, "<test policy>")


def test_a_bad_rating_at_night_is_deferred_to_the_morning_with_its_own_id(quiet):
    rating = support(utc("2026-01-14T22:30:00"), "resolved", "t-1", csat=1)  # 23:30 in Berlin (UTC+1)
    state = fold([login(utc("2026-01-10T09:00:00")), rating])
    [held], after = decide(quiet, "c-1", state, 0.05, rating.occurred_at, rating)
    assert held == Suppressed("service_recovery", "quiet_hours")
    morning = utc("2026-01-15T07:00:00")  # 08:00 in Berlin
    assert after.fired[QUIET_UNTIL] == morning and after.fired[QUIET_RATING] == rating.occurred_at
    assert next_deadline(quiet, after, rating.occurred_at) == morning
    assert decode_state(encode_state(after)).fired == after.fired
    [fire], done = decide(quiet, "c-1", after, 0.05, morning)  # the deadline: no event brings it
    assert isinstance(fire, Fire) and (fire.type, fire.rule) == ("service_recovery", "bad_rating")
    assert fire.trigger_id == trigger_id("service_recovery", "c-1", f"rating-at:{rating.occurred_at:.3f}")
    assert QUIET_RATING not in done.fired and decide(quiet, "c-1", done, 0.05, morning + 60)[0] == []


def test_by_day_nothing_is_deferred(quiet):
    rating = support(utc("2026-01-14T12:00:00"), "resolved", "t-1", csat=1)
    [fire], _ = decide(quiet, "c-1", fold([rating]), 0.05, rating.occurred_at, rating)
    assert isinstance(fire, Fire) and fire.trigger_id == trigger_id("service_recovery", "c-1",
                                                                    f"rating:{rating.event_id}")


def test_a_risk_follow_up_at_night_goes_out_at_the_window_end_with_the_same_id(quiet):
    state = fold([login(utc("2026-01-14T20:50:00"))])  # 21:50 in Berlin
    [held], after = decide(quiet, "c-1", state, 0.7, utc("2026-01-14T20:50:00"))
    assert held == Suppressed("follow_up", "quiet_hours")
    [fire], _ = decide(quiet, "c-1", after, 0.7, after.fired[QUIET_UNTIL])
    [unquiet], _ = decide(parse_policy(policy_text()), "c-1", state, 0.7, utc("2026-01-14T20:50:00"))
    assert fire.trigger_id == unquiet.trigger_id  # the same episode: deferred, not a new trigger


def test_the_customers_own_time_zone_decides_over_the_policys(quiet):
    raw = json.dumps(wire("support", "c-2", utc("2026-01-14T12:30:00"), action="resolved", ticket_id="t-2",
                          csat=1, tz="Asia/Tokyo")).encode()
    event = parse_event(raw)  # 21:30 in Tokyo, 13:30 in Berlin
    assert isinstance(event, Event) and event.tz == "Asia/Tokyo"
    ctx = Context(SilenceModel(), quiet, 3 * 86400, emitted_at=utc("2026-02-01T00:00:00"), event_clock=True)
    result = process([Item("c-2", event)], {}, ctx)
    assert result.triggers == [] and result.suppressed[("service_recovery", "quiet_hours")] == 1
    assert result.deadlines["c-2"] == utc("2026-01-14T23:00:00")  # 08:00 in Tokyo


def test_a_bad_time_zone_is_refused_naming_it():
    bad = parse_event(json.dumps(wire("login", "c-3", utc("2026-01-14T12:00:00"), tz="Mars/Olympus")).encode())
    assert isinstance(bad, InvalidEvent) and bad.reason == "bad_field_value" and "tz" in bad.detail
    with pytest.raises(PolicyError, match="quiet_hours"):
        parse_policy(policy_text() + "\n" + QUIET.replace("Europe/Berlin", "Nowhere/Atall"))
