"""The per-customer fold (apply_event) and the feature vector (features)."""
from __future__ import annotations

import math
import random
from dataclasses import fields, replace

import pytest

from worker.core.features import FEATURE_NAMES, NEVER_DAYS, activity_in, features, nps_class, rhythm_days
from worker.core.state import (
    EMPTY,
    RECENT_IDS,
    CustomerState,
    Ticket,
    apply_event,
    event_key,
    open_tickets,
    updater,
    with_fired,
)

from .conftest import DAY, HOUR, at, fold, login, purchase, regular_customer, support

LATENESS = 3 * DAY


def feature(state: CustomerState, now: float, name: str) -> float:
    return features(state, now)[FEATURE_NAMES.index(name)]


def test_fold_counts_revenue_and_last_times():
    events = [
        login(at(0, 9)),
        purchase(at(0, 9.5), "20.00"),
        login(at(3, 8)),
        support(at(4, 10), "opened", "t-1"),
        login(at(10, 8)),
        purchase(at(10, 8.25), "35.50"),
        purchase(at(20, 19), 4.5),
        login(at(40, 12)),
    ]
    s = fold(events)
    assert (s.logins, s.orders, s.activities) == (4, 3, 7)
    assert s.revenue == pytest.approx(60.0)
    assert s.first_seen == at(0, 9)
    assert s.last_seen == s.last_activity == s.last_login == at(40, 12)
    assert s.first_activity == at(0, 9)
    assert (s.first_purchase, s.last_purchase) == (at(0, 9.5), at(20, 19))
    assert list(s.tickets) == ["t-1"] and s.tickets["t-1"] == Ticket(at(4, 10), 0.0, at(4, 10))
    # rolling windows of active days (login or purchase) at an explicit "now": day 41
    now = at(41, 0)
    assert activity_in(s, now, 7) == 1       # day 40
    assert activity_in(s, now, 30) == 2      # days 20, 40
    assert activity_in(s, now, 90) == 5      # days 0, 3, 10, 20, 40
    f = dict(zip(FEATURE_NAMES, features(s, now), strict=True))
    assert f["activity_7d"] == 1 and f["activity_30d"] == 2 and f["activity_90d"] == 5
    assert f["orders"] == 3 and f["revenue"] == pytest.approx(60.0)
    assert f["avg_order_value"] == pytest.approx(20.0)
    assert f["days_since_last_activity"] == pytest.approx(0.5)
    assert f["days_since_last_purchase"] == pytest.approx((at(41) - at(20, 19)) / DAY)
    assert f["mean_days_between_purchases"] == pytest.approx((at(20, 19) - at(0, 9.5)) / DAY / 2)
    assert f["repeat_purchaser"] == 1.0
    assert f["open_tickets"] == 1.0
    assert f["oldest_open_ticket_hours"] == pytest.approx((now - at(4, 10)) / HOUR)
    # at day 100 the 90-day window is days 11..100
    assert activity_in(s, at(100), 90) == 2   # days 20, 40
    assert activity_in(s, at(99), 90) == 3    # days 10, 20, 40
    assert activity_in(s, at(100), 7) == 0
    # the features compute the three windows together: the same counts at every "now"
    for day in range(0, 140, 3):
        f = dict(zip(FEATURE_NAMES, features(s, at(day, 13)), strict=True))
        assert [f["activity_7d"], f["activity_30d"], f["activity_90d"]] == \
            [activity_in(s, at(day, 13), w) for w in (7, 30, 90)], day


def _distinct_state() -> CustomerState:
    """Every field a different value, so a field written into the wrong slot shows."""
    values = {f.name: type(f.default)(i + 1) for i, f in enumerate(fields(CustomerState))
              if isinstance(f.default, (int, float))}
    values.update(tickets={"t": Ticket(1.0)}, recent_ids={7: 1.0, 8: 2.0}, fired={"win_back": 3.0})
    return CustomerState(**values)


def test_updater_sets_only_its_fields_and_keeps_the_rest():
    state = _distinct_state()
    set_two = updater("set_two", "orders", "last_seen")
    assert set_two(state, orders=99, last_seen=42.0) == replace(state, orders=99, last_seen=42.0)
    assert with_fired(state, fired={"checked_until": 5.0}) == replace(state, fired={"checked_until": 5.0})
    with pytest.raises(TypeError):
        set_two(state, 99, 42.0)  # the changed fields are named at every call
    with pytest.raises(ValueError, match="orderz"):
        updater("bad", "orderz")


def test_each_event_type_folds_the_same_as_field_by_field_replacement():
    """apply_event writes each event type's fields through compiled writers: check them against replace()."""
    state = _distinct_state()
    t = at(100)
    for ev in (login(t), purchase(t, "30.00"), support(t, "resolved", "t", csat=1)):
        after = apply_event(state, ev)
        unchanged = {f.name for f in fields(CustomerState)} - _changed_by(ev.type)
        assert {f: getattr(after, f) for f in unchanged} == {f: getattr(state, f) for f in unchanged}, ev.type
    login_after = apply_event(state, login(t))
    assert (login_after.logins, login_after.last_login, login_after.last_activity) == (state.logins + 1, t, t)
    bought = apply_event(state, purchase(t, "30.00"))
    assert (bought.orders, bought.revenue, bought.last_purchase) == (state.orders + 1, state.revenue + 30.0, t)


def _changed_by(kind: str) -> set[str]:
    common = {"first_seen", "last_seen", "recent_ids"}
    activity = common | {"last_activity", "first_activity", "active_days"}
    if kind == "login":
        return activity | {"last_login", "logins"}
    if kind == "purchase":
        return activity | {"first_purchase", "last_purchase", "orders", "revenue"}
    return common | {"tickets", "last_csat", "last_csat_at", "bad_support", "last_bad_support_at", "last_nps",
                     "last_nps_at"}


def test_support_events_are_not_activity():
    s = fold([login(at(0)), support(at(5), "opened", "t-1"), support(at(6), "replied", "t-1")])
    assert s.last_seen == at(6)
    assert s.last_activity == at(0)
    assert s.activities == 1
    assert activity_in(s, at(7), 90) == 1


def test_duplicate_event_id_changes_nothing():
    events = regular_customer(days=20)
    state = fold(events)
    for event in (events[-RECENT_IDS], events[-3], events[-1]):  # within the id window
        assert event_key(event.event_id) in state.recent_ids
        assert apply_event(state, event) == state
        assert apply_event(state, event) is state
    # a new event id with the same content is not a duplicate
    other = login(events[-1].occurred_at, event_id="another-id")
    assert event_key(other.event_id) not in state.recent_ids
    assert apply_event(state, other).logins == state.logins + 1


def test_recent_ids_are_bounded():
    state = fold(regular_customer(days=60))
    assert len(state.recent_ids) == RECENT_IDS


def _comparable(state: CustomerState) -> dict:
    """Every field except the order of the recent-id window (a set semantically)."""
    out = {f.name: getattr(state, f.name) for f in fields(CustomerState)}
    out["recent_ids"] = sorted(out["recent_ids"])
    return out


def _shuffled_within(events: list, bound: float, rng: random.Random) -> list:
    """A delivery order where no event is later than `bound` behind the newest one seen:
    sorting by time plus a jitter in [0, bound) moves events by less than `bound`."""
    return sorted(events, key=lambda e: e.occurred_at + rng.uniform(0, bound * 0.999))


def _sequence() -> list:
    """32 events over 101 days: logins, purchases, two tickets (one rated badly), NPS."""
    return sorted([
        login(at(0, 8)), purchase(at(0, 8.2), "19.99"), login(at(2, 21)), login(at(5, 7)),
        support(at(5, 9), "opened", "t-a"), support(at(5, 13), "replied", "t-a"),
        login(at(6, 22)), purchase(at(9, 18), "42.00"), login(at(11, 3)), support(at(7, 10), "resolved", "t-a", csat=2),
        login(at(12, 12)), login(at(15, 9)), purchase(at(21, 20), "12.50"), login(at(28, 8)),
        login(at(33, 17)), support(at(34, 8), "opened", "t-b"), login(at(41, 11)),
        purchase(at(47, 14), "88.10"), support(at(48, 9), "replied", "t-b", nps=9),
        login(at(55, 10)), login(at(62, 10)), purchase(at(70, 16), "30.00"), login(at(77, 9)),
        login(at(84, 20)), login(at(90, 6)), support(at(91, 8), "resolved", "t-b", csat=5, nps=10),
        login(at(92, 21)), purchase(at(93, 11), "55.55"), login(at(96, 7)),
        support(at(97, 8), "opened", "t-c"), login(at(99, 23)), support(at(101, 2), "replied", "t-c"),
    ], key=lambda e: e.occurred_at)


def test_out_of_order_within_lateness_gives_the_same_state():
    events = _sequence()
    assert len(events) == 32
    in_order = fold(events)
    reordered = 0
    for seed in range(16):
        order = _shuffled_within(events, LATENESS, random.Random(seed))
        reordered += order != events
        state = EMPTY
        for event in order:
            assert event.occurred_at >= state.last_seen - LATENESS
            state = apply_event(state, event)
        assert _comparable(state) == _comparable(in_order), f"seed {seed}"
        for now in (at(101, 2), at(102), at(130)):
            assert features(state, now) == features(in_order, now)
    assert reordered >= 12  # the test really shuffles


def test_out_of_order_days_pruning_does_not_depend_on_support_events():
    # An activity 2 days late behind a support event: the 90-day day buckets must end
    # up the same as in order (where the support event came last).
    first, late_login, ticket = login(at(0, 1)), login(at(89, 1)), support(at(91), "opened", "t-1")
    assert late_login.occurred_at >= fold([first, ticket]).last_seen - LATENESS
    assert _comparable(fold([first, ticket, late_login])) == _comparable(fold([first, late_login, ticket]))


def test_ticket_opened_replied_resolved():
    opened, replied, resolved = (support(at(1, 9), "opened", "t-9"), support(at(1, 11), "replied", "t-9"),
                                 support(at(2, 8), "resolved", "t-9", csat=5))
    s = fold([opened])
    assert open_tickets(s) == [("t-9", Ticket(at(1, 9), 0.0, at(1, 9)))]
    s = fold([replied], s)
    assert open_tickets(s) == [("t-9", Ticket(at(1, 9), 0.0, at(1, 11)))]
    s = fold([resolved], s)
    assert open_tickets(s) == []
    assert s.tickets["t-9"] == Ticket(at(1, 9), at(2, 8), at(2, 8))


def test_ticket_reopened_is_open_again_from_the_reopen_time():
    s = fold([support(at(1), "opened", "t-9"), support(at(2), "resolved", "t-9"),
              support(at(5), "reopened", "t-9")])
    assert open_tickets(s) == [("t-9", Ticket(at(5), 0.0, at(5)))]
    assert feature(s, at(5, 6), "oldest_open_ticket_hours") == pytest.approx(6.0)
    s = fold([support(at(6), "resolved", "t-9")], s)
    assert open_tickets(s) == []


def test_ticket_resolved_before_opened_out_of_order():
    opened, replied, resolved = (support(at(1, 9), "opened", "t-9"), support(at(1, 11), "replied", "t-9"),
                                 support(at(2, 8), "resolved", "t-9"))
    expected = fold([opened, replied, resolved]).tickets
    assert fold([resolved, opened, replied]).tickets == expected
    assert fold([resolved, replied, opened]).tickets == expected
    assert fold([replied, resolved, opened]).tickets == expected
    # a resolution seen alone leaves no open ticket; the late "opened" dates it
    assert open_tickets(fold([resolved])) == []
    assert fold([resolved, opened]).tickets["t-9"].opened_at == at(1, 9)
    # a late reply never re-opens a resolved ticket
    assert open_tickets(fold([opened, resolved, replied])) == []


def test_ticket_reopen_is_order_independent():
    opened, resolved, reopened = (support(at(1), "opened", "t-9"), support(at(2), "resolved", "t-9"),
                                  support(at(3), "reopened", "t-9"))
    assert fold([opened, reopened, resolved]).tickets == fold([opened, resolved, reopened]).tickets


def test_ratings_are_kept_by_their_own_timestamp():
    newer = support(at(10), "resolved", "t-2", csat=5, nps=10)
    older = support(at(9), "resolved", "t-1", csat=1, nps=3)
    late = fold([newer, older])
    assert (late.last_csat, late.last_nps, late.last_csat_at, late.last_nps_at) == (5, 10, at(10), at(10))
    assert fold([older, newer]).last_csat == 5 and fold([older, newer]).last_nps == 10
    # the older bad rating still counts as a bad experience, dated by its own time
    assert late.bad_support == 1 and late.last_bad_support_at == at(9)
    # a rating on another event does not clear the one it does not carry
    only_csat = fold([support(at(11), "replied", "t-2", csat=4)], late)
    assert (only_csat.last_csat, only_csat.last_nps) == (4, 10)


def test_features_are_finite_floats_of_the_right_length_and_pure():
    state = fold(_sequence())
    snapshot = replace(state)
    for now in (at(99, 23), at(100), at(400)):
        row = features(state, now)
        assert len(row) == len(FEATURE_NAMES)
        assert all(isinstance(x, float) and math.isfinite(x) for x in row), row
        assert features(state, now) == row
    assert state == snapshot  # not mutated
    empty_row = features(EMPTY, at(0))
    assert len(empty_row) == len(FEATURE_NAMES) and all(math.isfinite(x) for x in empty_row)


def test_days_since_features_grow_with_now_and_are_capped():
    state = fold(_sequence())
    names = ("days_since_last_activity", "days_since_last_login", "days_since_last_purchase",
             "days_since_bad_support")
    for name in names:
        values = [feature(state, now, name) for now in (at(100), at(110), at(150))]
        assert values[0] < values[1] < values[2], (name, values)
        assert values[1] - values[0] == pytest.approx(10.0)
        assert feature(state, at(2000), name) == NEVER_DAYS
    assert feature(state, at(100), "tenure_days") == pytest.approx(100 - 8 / 24)
    # never happened: capped at NEVER_DAYS
    assert feature(fold([login(at(0))]), at(1), "days_since_last_purchase") == NEVER_DAYS
    assert feature(fold([login(at(0))]), at(1), "days_since_bad_support") == NEVER_DAYS


@pytest.mark.parametrize(("score", "klass"), [
    (10, "promoter"), (9, "promoter"), (8, "passive"), (7, "passive"), (6, "detractor"), (0, "detractor"),
    (-1, None),
])
def test_nps_classes(score, klass):
    assert nps_class(score) == klass


@pytest.mark.parametrize(("nps", "detractor", "promoter"), [(10, 0.0, 1.0), (9, 0.0, 1.0), (8, 0.0, 0.0),
                                                            (7, 0.0, 0.0), (6, 1.0, 0.0), (0, 1.0, 0.0)])
def test_nps_features(nps, detractor, promoter):
    state = fold([support(at(1), "resolved", "t-1", nps=nps)])
    assert feature(state, at(3), "nps_detractor") == detractor
    assert feature(state, at(3), "nps_promoter") == promoter
    assert state.bad_support == (1 if nps <= 6 else 0)


def test_newest_nps_decides_the_class():
    promoter_then_detractor = fold([support(at(1), "resolved", "t-1", nps=10),
                                    support(at(2), "resolved", "t-2", nps=6)])
    assert feature(promoter_then_detractor, at(3), "nps_detractor") == 1.0
    assert feature(promoter_then_detractor, at(3), "nps_promoter") == 0.0
    no_rating = fold([login(at(1))])
    assert feature(no_rating, at(3), "nps_detractor") == feature(no_rating, at(3), "nps_promoter") == 0.0


def test_rhythm_days():
    assert rhythm_days(fold([login(at(0)), login(at(1))])) is None  # too little history
    daily = fold([login(at(d, 9)) for d in range(10)])
    assert rhythm_days(daily) == pytest.approx(1.0)
    monthly = fold([purchase(at(30 * m, 12)) for m in range(4)])
    assert rhythm_days(monthly) == pytest.approx(30.0)
    bursty = fold([login(at(0, 0, m)) for m in range(5)])  # five logins in five minutes
    assert rhythm_days(bursty) == pytest.approx(1 / 24)


def test_a_ticket_opened_after_the_scoring_time_is_not_waiting_then():
    """A decision at a past deadline may see a state that already holds a later ticket
    (events of a batch can precede a tick for an earlier time). That ticket was not
    waiting at the deadline, and a negative wait must never reach the model."""
    state = fold([support(at(1, 9), "opened", "t-early"), support(at(3, 9), "opened", "t-later")])
    row = dict(zip(FEATURE_NAMES, features(state, at(2, 9))))
    assert row["open_tickets"] == 1.0
    assert row["oldest_open_ticket_hours"] == 24.0
    only_later = fold([support(at(3, 9), "opened", "t-later")])
    row = dict(zip(FEATURE_NAMES, features(only_later, at(2, 9))))
    assert row["open_tickets"] == 0.0 and row["oldest_open_ticket_hours"] == 0.0
