"""Trigger decisions with the default policy at explicit times."""
from __future__ import annotations

import random
import uuid
from dataclasses import replace

import pytest

from worker.core.triggers import (
    CHECKED,
    Fire,
    Suppressed,
    deadlines,
    decide,
    in_holdout,
    lapse_days,
    next_deadline,
    pending_deadline,
    trigger_id,
)

from .conftest import DAY, HOUR, at, fold, login, policy_with, purchase, support

LOW = 0.05  # a score below every threshold: only silence and support rules can fire


def daily_user(days: int = 10, customer_id: str = "c-1"):
    """A login every morning for `days` days: rhythm 1 day, lapse window 4 days."""
    return fold([login(at(d, 9), customer_id) for d in range(days)])


def test_default_policy_values_used_below(policy):
    # the expectations in this module are written against these numbers
    assert policy.lapse.rhythm_multiplier == 4.0 and policy.lapse.default_days == 30.0
    assert (policy.lapse.min_days, policy.lapse.max_days) == (3.0, 60.0)
    assert (policy.risk.follow_up_threshold, policy.risk.win_back_threshold) == (0.6, 0.9)
    assert policy.support.sla_hours == 24.0 and policy.cooldown.win_back_days == 30.0
    assert policy.holdout.percent == 0.0


def test_lapse_fires_win_back_once_per_episode(policy):
    state = daily_user()
    last = at(9, 9)
    assert state.last_activity == last and lapse_days(policy, state) == pytest.approx(4.0)
    # not yet lapsed one second before the window ends
    decisions, _ = decide(policy, "c-1", state, LOW, last + 4 * DAY - 1)
    assert decisions == []
    decisions, state = decide(policy, "c-1", state, LOW, last + 4 * DAY)
    assert len(decisions) == 1
    fire = decisions[0]
    assert isinstance(fire, Fire) and not fire.held_out
    assert (fire.type, fire.rule, fire.threshold) == ("win_back", "lapsed", None)
    # deciding again in the same silence gives nothing new, at any later time
    for later in (last + 4 * DAY, last + 5 * DAY, last + 90 * DAY):
        again, state = decide(policy, "c-1", state, LOW, later)
        assert again == []
        again, state = decide(policy, "c-1", state, 0.99, later)  # even at a very high score
        assert again == []


def test_new_activity_rearms_win_back_after_the_cooldown(policy):
    state = daily_user()
    first_fire = at(9, 9) + 4 * DAY
    [first], state = decide(policy, "c-1", state, LOW, first_fire)
    # the customer comes back 40 days after the first win-back (cooldown 30 days: over)
    state = fold([login(first_fire + 40 * DAY)], state)
    lapse = lapse_days(policy, state) * DAY
    [second], state = decide(policy, "c-1", state, LOW, state.last_activity + lapse)
    assert isinstance(second, Fire) and not second.held_out and (second.type, second.rule) == ("win_back", "lapsed")
    assert second.trigger_id != first.trigger_id


def test_a_second_lapse_within_the_cooldown_is_suppressed_then_fires_after_it(policy):
    state = daily_user()
    first_fire = at(9, 9) + 4 * DAY
    [first], state = decide(policy, "c-1", state, LOW, first_fire)
    # back two days later, then silent again: the new lapse falls inside the 30-day cooldown
    state = fold([login(first_fire + 2 * DAY)], state)
    second_lapse = state.last_activity + lapse_days(policy, state) * DAY
    assert second_lapse - first_fire < 30 * DAY
    decisions, state = decide(policy, "c-1", state, LOW, second_lapse)
    assert decisions == [Suppressed("win_back", "cooldown")]
    decisions, state = decide(policy, "c-1", state, LOW, first_fire + 30 * DAY - 1)
    assert decisions == [Suppressed("win_back", "cooldown")]
    # once the cooldown has passed the same (still open) lapse episode fires, with a new id
    [fire], state = decide(policy, "c-1", state, LOW, first_fire + 30 * DAY)
    assert isinstance(fire, Fire) and not fire.held_out
    assert fire.type == "win_back" and fire.trigger_id != first.trigger_id
    assert decide(policy, "c-1", state, LOW, first_fire + 31 * DAY)[0] == []


@pytest.mark.parametrize(("score", "expected"), [
    (0.59, None),
    (0.6, ("follow_up", "risk_above_threshold", 0.6)),
    (0.75, ("follow_up", "risk_above_threshold", 0.6)),
    (0.89, ("follow_up", "risk_above_threshold", 0.6)),
    (0.9, ("win_back", "risk_above_threshold", 0.9)),
    (0.97, ("win_back", "risk_above_threshold", 0.9)),
])
def test_risk_thresholds_for_an_active_customer(policy, score, expected):
    state = daily_user()
    decisions, after = decide(policy, "c-1", state, score, at(10, 9))  # one day of silence: active
    if expected is None:
        assert decisions == []
        assert set(after.fired) == {CHECKED}  # only the silence check is remembered
        return
    [fire] = decisions
    assert isinstance(fire, Fire) and not fire.held_out and (fire.type, fire.rule, fire.threshold) == expected
    # the same activity episode does not fire twice
    assert decide(policy, "c-1", after, score, at(10, 12))[0] == []


def test_follow_up_is_rearmed_by_new_activity_after_its_cooldown(policy):
    state = daily_user()
    [first], state = decide(policy, "c-1", state, 0.7, at(10, 9))
    state = fold([login(at(11, 9))], state)
    assert decide(policy, "c-1", state, 0.7, at(11, 9))[0] == [Suppressed("follow_up", "cooldown")]
    state = fold([login(at(10 + 14, 9))], state)
    [second], state = decide(policy, "c-1", state, 0.7, at(24, 9))
    assert second.type == "follow_up" and second.trigger_id != first.trigger_id


@pytest.mark.parametrize(("rating", "bad"), [
    ({"csat": 1}, True), ({"csat": 2}, True), ({"csat": 3}, False), ({"csat": 5}, False),
    ({"nps": 0}, True), ({"nps": 6}, True), ({"nps": 7}, False), ({"nps": 10}, False),
    ({"csat": 4, "nps": 3}, True),
])
def test_service_recovery_on_a_bad_rating(policy, rating, bad):
    event = support(at(9, 15), "resolved", "t-1", **rating)
    state = fold([event], daily_user())
    decisions, _ = decide(policy, "c-1", state, LOW, state.last_seen, event)
    if not bad:
        assert decisions == []
        return
    [fire] = decisions
    assert isinstance(fire, Fire) and not fire.held_out
    assert (fire.type, fire.rule, fire.threshold) == ("service_recovery", "bad_rating", None)


def test_a_bad_rating_fires_from_its_event_alone_whatever_tickets_the_state_keeps(policy):
    # decide reads the rating from its cause; the state's ticket list (bounded, and empty
    # for a customer whose tickets were dropped) must not gate it
    event = support(at(9, 15), "resolved", "t-1", csat=1)
    state = replace(fold([event], daily_user()), tickets={})
    [fire] = decide(policy, "c-1", state, LOW, state.last_seen, event)[0]
    assert (fire.type, fire.rule) == ("service_recovery", "bad_rating")


def test_bad_rating_fires_only_with_the_rating_event_as_cause(policy):
    event = support(at(9, 15), "resolved", "t-1", csat=1)
    state = fold([event], daily_user())
    assert decide(policy, "c-1", state, LOW, at(9, 16))[0] == []  # a silence check is not the rating


def test_service_recovery_for_a_ticket_past_the_sla(policy):
    opened = at(9, 10)
    state = fold([support(opened, "opened", "t-7"), support(opened + 2 * HOUR, "replied", "t-7")], daily_user())
    assert decide(policy, "c-1", state, LOW, opened + 24 * HOUR - 1)[0] == []
    [fire], after = decide(policy, "c-1", state, LOW, opened + 24 * HOUR)
    assert isinstance(fire, Fire) and not fire.held_out
    assert (fire.type, fire.rule, fire.threshold) == ("service_recovery", "sla_breach", 24.0)
    assert decide(policy, "c-1", after, LOW, opened + 30 * HOUR)[0] == []  # once per ticket
    # a ticket resolved in time never breaches
    resolved = fold([support(opened + 20 * HOUR, "resolved", "t-7")], state)
    assert decide(policy, "c-1", resolved, LOW, opened + 48 * HOUR)[0] == []


def test_trigger_ids_are_deterministic(policy):
    state = daily_user()
    now = at(9, 9) + 4 * DAY
    [a], _ = decide(policy, "c-1", state, LOW, now)
    [b], _ = decide(policy, "c-1", state, LOW, now)
    [c], _ = decide(policy, "c-2", daily_user(customer_id="c-2"), LOW, now)
    [d], _ = decide(policy, "c-1", state, LOW, now + 3 * DAY)  # decided later: same episode, same id
    assert a.trigger_id == b.trigger_id == d.trigger_id
    assert c.trigger_id != a.trigger_id
    assert trigger_id("win_back", "c-1", "after:1") == trigger_id("win_back", "c-1", "after:1")
    assert len({trigger_id(k, cid, "e") for k in ("follow_up", "win_back") for cid in ("c-1", "c-2")}) == 4


def test_trigger_ids_are_the_documented_uuid5():
    """Subscribers may recompute an id: uuid5 of the namespace and "type|customer|episode"."""
    namespace = uuid.UUID("6f1c3a0e-4e7b-5d2a-9c61-0b7e1d2f3a45")
    rng = random.Random(3)
    for _ in range(2000):
        kind, cid = rng.choice(("follow_up", "win_back", "service_recovery")), f"c-{rng.random()}-é€"
        episode = f"after:{rng.uniform(0, 4e9):.3f}"
        assert trigger_id(kind, cid, episode) == str(uuid.uuid5(namespace, f"{kind}|{cid}|{episode}"))


def test_holdout_percent_100_withholds_every_trigger():
    everyone = policy_with(percent="100.0")
    state = daily_user()
    [held], after = decide(everyone, "c-1", state, LOW, at(9, 9) + 4 * DAY)
    assert isinstance(held, Fire) and held.held_out and (held.type, held.rule) == ("win_back", "lapsed")
    # a held-out trigger is remembered like a fired one
    assert decide(everyone, "c-1", after, LOW, at(20))[0] == []
    assert all(in_holdout(everyone, f"c-{n}") for n in range(1000))


def test_holdout_percent_0_withholds_nothing(policy):
    assert not any(in_holdout(policy, f"c-{n}") for n in range(1000))
    [fire], _ = decide(policy, "c-1", daily_user(), LOW, at(9, 9) + 4 * DAY)
    assert isinstance(fire, Fire) and not fire.held_out


def test_holdout_membership_is_stable_and_proportional():
    half = policy_with(percent="50.0")
    members = [in_holdout(half, f"c-{n}") for n in range(4000)]
    assert 0.45 < sum(members) / len(members) < 0.55
    assert members == [in_holdout(half, f"c-{n}") for n in range(4000)]
    other_salt = policy_with(percent="50.0", salt='"another-salt"')
    assert members != [in_holdout(other_salt, f"c-{n}") for n in range(4000)]


def test_lapse_window_follows_the_customers_rhythm(policy):
    daily = daily_user()
    weekly = fold([login(at(7 * w, 9)) for w in range(6)])
    monthly = fold([purchase(at(30 * m, 12)) for m in range(5)])
    rare = fold([purchase(at(90 * m, 12)) for m in range(3)])
    hourly = fold([login(at(0, h)) for h in range(12)])
    newcomer = fold([login(at(0)), purchase(at(1))])
    assert lapse_days(policy, daily) == pytest.approx(4.0)
    assert lapse_days(policy, weekly) == pytest.approx(28.0)
    assert lapse_days(policy, monthly) == pytest.approx(60.0)   # 120 clamped to max_days
    assert lapse_days(policy, rare) == pytest.approx(60.0)
    assert lapse_days(policy, hourly) == pytest.approx(3.0)     # clamped to min_days
    assert lapse_days(policy, newcomer) == pytest.approx(30.0)  # too little history: default
    assert lapse_days(policy, daily) < lapse_days(policy, weekly) < lapse_days(policy, monthly)
    # a daily user silent 5 days has lapsed; a monthly buyer silent 5 days has not
    assert decide(policy, "d", daily, LOW, daily.last_activity + 5 * DAY)[0][0].rule == "lapsed"
    assert decide(policy, "m", monthly, LOW, monthly.last_activity + 5 * DAY)[0] == []


def test_deadlines_in_order(policy):
    state = daily_user()
    last = at(9, 9)
    state = fold([support(last + 12 * HOUR, "opened", "t-3")], state)
    sla = last + 12 * HOUR + 24 * HOUR
    check, lapse = last + 2 * DAY, last + 4 * DAY  # follow-up check at half the 4-day window
    assert sorted(deadlines(policy, state)) == [sla, check, lapse]
    assert next_deadline(policy, state, last) == sla
    assert next_deadline(policy, state, sla) == check
    assert next_deadline(policy, state, check) == lapse
    assert next_deadline(policy, state, lapse) is None
    # pending_deadline walks the same list as silence checks are decided
    assert pending_deadline(policy, state) == sla
    for due, following in ((sla, check), (check, lapse), (lapse, None)):
        _, state = decide(policy, "c-1", state, LOW, due)
        assert state.fired[CHECKED] == due
        assert pending_deadline(policy, state) == following


def test_new_activity_moves_the_deadlines(policy):
    state = daily_user()
    _, state = decide(policy, "c-1", state, LOW, at(9, 9) + 2 * DAY)  # follow-up check done
    assert pending_deadline(policy, state) == at(9, 9) + 4 * DAY
    state = fold([login(at(11, 21))], state)
    window = lapse_days(policy, state) * DAY
    assert pending_deadline(policy, state) == at(11, 21) + window / 2


def test_no_deadline_without_activity_or_open_tickets(policy):
    assert pending_deadline(policy, fold([support(at(0), "resolved", "t-1", csat=5)])) is None


def test_win_back_fires_exactly_at_the_lapse_deadline_for_any_rhythm(policy):
    # The worker evaluates decide at exactly the deadline it computed: the lapse rule must
    # agree with the deadline to the last bit, whatever the (non-round) lapse window.
    rng = random.Random(5)
    for _ in range(200):
        gap, jitter = rng.uniform(2.0, 400.0) * HOUR, rng.choice((0.0, 0.001, 0.37))
        state = fold([login(at(0) + n * (gap + jitter)) for n in range(6)])
        lapse = max(deadlines(policy, state))
        assert next_deadline(policy, state, lapse - 1) == lapse
        assert decide(policy, "c-1", state, LOW, lapse - 1)[0] == []
        decisions, _ = decide(policy, "c-1", state, LOW, lapse)
        assert [(d.type, d.rule) for d in decisions] == [("win_back", "lapsed")], (gap, jitter)


def test_sla_breach_fires_exactly_at_the_sla_deadline(policy):
    rng = random.Random(6)
    for _ in range(200):
        opened = at(3, 10) + round(rng.random(), 6)  # producers send sub-second times
        state = fold([login(at(3, 9)), support(opened, "opened", "t-1")])
        due = next_deadline(policy, state, opened)
        assert due == opened + 24 * HOUR
        assert decide(policy, "c-1", state, LOW, due - 0.001)[0] == []
        decisions, _ = decide(policy, "c-1", state, LOW, due)
        assert [(d.type, d.rule) for d in decisions] == [("service_recovery", "sla_breach")], opened


def test_a_breached_ticket_is_not_hidden_by_an_earlier_bad_rating():
    policy = policy_with(service_recovery_days="0.0")
    waiting = support(at(0), "opened", "t-old", "c-sr")
    rated = support(at(0, 12), "resolved", "t-other", "c-sr", csat=1)
    state = fold([login(at(0), "c-sr"), waiting, support(at(0, 11), "opened", "t-other", "c-sr"), rated])
    first, state = decide(policy, "c-sr", state, 0.1, rated.occurred_at, rated)
    assert [(d.type, d.rule) for d in first] == [("service_recovery", "bad_rating")]
    breach, state = decide(policy, "c-sr", state, 0.1, at(1), None)  # t-old opened a day ago
    assert [(d.type, d.rule) for d in breach] == [("service_recovery", "sla_breach")]
    again, _ = decide(policy, "c-sr", state, 0.1, at(1, 1), None)
    assert again == []


def test_every_breached_ticket_gets_its_own_service_recovery(policy):
    """A second ticket past the SLA fires while an older breached one stays open."""
    first, second = at(9, 10), at(9, 20)
    state = fold([support(first, "opened", "t-1"), support(second, "opened", "t-2")], daily_user())
    [one], state = decide(policy, "c-1", state, LOW, first + 24 * HOUR)
    assert (one.type, one.rule) == ("service_recovery", "sla_breach")
    # the second breach comes within the cooldown: suppressed, and looked at again when it ends
    assert decide(policy, "c-1", state, LOW, second + 24 * HOUR)[0] == [Suppressed("service_recovery", "cooldown")]
    cooldown_end = first + 24 * HOUR + policy.cooldown_s("service_recovery")
    assert cooldown_end in deadlines(policy, state)
    [two], state = decide(policy, "c-1", state, LOW, cooldown_end)
    assert (two.type, two.rule) == ("service_recovery", "sla_breach") and two.trigger_id != one.trigger_id
    later, _ = decide(policy, "c-1", state, LOW, cooldown_end + DAY)
    assert [d for d in later if d.type == "service_recovery"] == []  # each ticket once
    assert cooldown_end not in deadlines(policy, state)  # nothing waits any more


def test_without_a_cooldown_a_second_breach_fires_at_its_own_deadline():
    policy = policy_with(service_recovery_days="0.0")
    first, second = at(9, 10), at(9, 20)
    state = fold([support(first, "opened", "t-1"), support(second, "opened", "t-2")], daily_user())
    [one], state = decide(policy, "c-1", state, LOW, first + 24 * HOUR)
    [two], state = decide(policy, "c-1", state, LOW, second + 24 * HOUR)
    assert [d.rule for d in (one, two)] == ["sla_breach", "sla_breach"] and one.trigger_id != two.trigger_id
