"""Treatment per segment (thresholds and cooldowns that fall back to the global ones) and
the cap across trigger types, on the pure core."""
from __future__ import annotations

import pytest

from worker.core.codec import decode_state, encode_state
from worker.core.policy import parse_policy
from worker.core.triggers import CAP_RECHECK, Fire, Suppressed, deadlines, decide, next_deadline, segment
from worker.errors import PolicyError

from .conftest import DAY, at, fold, login, policy_text, purchase, support

LOW, MID = 0.05, 0.45  # MID: under the global follow-up threshold (0.6)


def with_sections(extra: str):
    return parse_policy(policy_text() + "\n" + extra, "<test policy>")


def loyal_customer():
    """Four small orders in ten days, last seen on day 10: segment 'loyal' for a while."""
    return fold([purchase(at(d, 12), "3.00") for d in (1, 4, 7, 10)])


def test_a_segment_threshold_applies_to_its_segment_and_the_global_one_to_the_rest():
    policy = with_sections("[treatment.loyal]\nfollow_up_threshold = 0.4\n")
    loyal, new = loyal_customer(), fold([login(at(d, 9)) for d in range(1, 11)])
    now = at(11)
    assert segment(policy, loyal, now) == "loyal" and segment(policy, new, now) == "new"
    [fire], _ = decide(policy, "c-1", loyal, MID, now)
    assert isinstance(fire, Fire) and (fire.type, fire.rule, fire.threshold) == ("follow_up",
                                                                                  "risk_above_threshold", 0.4)
    assert decide(policy, "c-2", new, MID, now)[0] == []  # 0.45 < the global 0.6


def test_a_segment_cooldown_overrides_the_global_one_and_its_end_is_a_deadline():
    policy = with_sections("[treatment.loyal]\nfollow_up_days = 60.0\n")  # global: 14 days
    state = loyal_customer()
    _, after = decide(policy, "c-1", state, 0.7, at(11))
    again = fold([purchase(at(12, 12), "30.00")], after)  # a new episode, 10 days later: in cooldown
    [held], _ = decide(policy, "c-1", again, 0.7, at(21))
    assert held == Suppressed("follow_up", "cooldown")
    [fire], _ = decide(with_sections(""), "c-1", again, 0.7, at(26))  # the global 14 days have passed
    assert isinstance(fire, Fire)
    # a lapse held back by a cooldown is looked at again when each possible cooldown ends
    lapsed = with_sections("[treatment.loyal]\nwin_back_days = 90.0\n")  # global: 30 days
    _, fired = decide(lapsed, "c-1", state, 0.95, at(11))
    later = fold([purchase(at(13, 12), "30.00")], fired)
    assert {at(11) + 30 * DAY, at(11) + 90 * DAY} <= set(deadlines(lapsed, later))


def test_a_bad_treatment_is_refused_naming_the_segment():
    with pytest.raises(PolicyError, match="treatment.loyal"):
        with_sections("[treatment.loyal]\nfollow_up_threshold = 0.95\n")  # above win_back (0.9)
    with pytest.raises(PolicyError, match="treatment.vip"):
        with_sections("[treatment.vip]\nfollow_up_threshold = 0.4\n")


CAP = '[cap]\nmax_triggers = 1\nperiod_days = 1.0\npriority = ["service_recovery", "win_back", "follow_up"]\n'


def test_the_cap_lets_the_priority_go_first_and_holds_the_rest_until_it_frees():
    policy = with_sections(CAP)
    state = fold([login(at(d, 9)) for d in range(1, 11)]
                 + [support(at(10, 10), "resolved", "t-1", csat=1)])
    cause = support(at(10, 10), "resolved", "t-1", csat=1)
    decisions, after = decide(policy, "c-1", state, 0.7, at(10, 10), cause)  # follow-up and recovery due
    assert [type(d).__name__ + ":" + d.type for d in decisions] == ["Fire:service_recovery", "Suppressed:follow_up"]
    assert decisions[1] == Suppressed("follow_up", "cap")
    assert after.fired[CAP_RECHECK] == at(10, 10) + 1 * DAY
    assert next_deadline(policy, after, at(10, 10)) <= at(10, 10) + 1 * DAY
    assert decode_state(encode_state(after)).fired == after.fired  # the cap's memory survives the codec
    [fire], _ = decide(policy, "c-1", after, 0.7, at(11, 11))  # the cap has freed
    assert isinstance(fire, Fire) and fire.type == "follow_up"
    free = with_sections("")  # no cap: both at once
    assert [d.type for d in decide(free, "c-1", state, 0.7, at(10, 10), cause)[0]] == ["service_recovery",
                                                                                        "follow_up"]


def test_a_cap_priority_must_name_every_type_once():
    with pytest.raises(PolicyError, match="cap"):
        with_sections(CAP.replace('"service_recovery", "win_back", "follow_up"', '"win_back", "win_back", "follow_up"'))
