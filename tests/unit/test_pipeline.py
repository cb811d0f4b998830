"""process(): one batch of events and silence ticks -> states, triggers, outcomes.

Scored by `SilenceModel` (tests/unit/fakes.py): risk = silence_risk(days since the last
activity), 0.6 (the follow-up threshold) only after 45 silent days. So every score below is
known by hand, and no trigger here is a risk-threshold one: they come from the rules
(lapse, SLA breach, bad rating), whatever the shipped model would say."""
from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from worker.core.events import format_time
from worker.core.features import features
from worker.core.pipeline import Context, Item, Result, process
from worker.core.triggers import CHECKED, lapse_days, pending_deadline

from .conftest import DAY, HOUR, at, fold, login, purchase, regular_customer, support
from .fakes import SilenceModel, silence_risk

LATENESS = 3 * DAY
WALL = at(200)  # the batch's wall time; with the event clock it is only stamped on triggers
MODEL = SilenceModel()


@pytest.fixture
def ctx(policy) -> Context:
    return Context(MODEL, policy, LATENESS, emitted_at=WALL, event_clock=True)


def customer_a():
    """A daily user for 30 days with a well-handled ticket: nothing to trigger."""
    return regular_customer("a", days=30)


def customer_b():
    """A weekly shopper whose last ticket is rated 1/5."""
    return sorted([login(at(7 * w, 10), "b") for w in range(5)]
                  + [purchase(at(7 * w + 1, 18), "40.00", "b") for w in range(5)]
                  + [support(at(29, 8), "opened", "t-b", "b"),
                     support(at(29, 10), "resolved", "t-b", "b", csat=1)], key=lambda e: e.occurred_at)


def customer_c():
    """Logs in every other day; a ticket opened on day 25 is never resolved."""
    return sorted([login(at(2 * d, 8), "c") for d in range(15)]
                  + [support(at(25, 9), "opened", "t-c", "c")], key=lambda e: e.occurred_at)


def stream():
    events = sorted(customer_a() + customer_b() + customer_c(), key=lambda e: e.occurred_at)
    return [Item(e.customer_id, e) for e in events]


def kinds(result: Result) -> list[tuple[str, str, str]]:
    return [(t["customer_id"], t["type"], t["rule"]) for t in result.triggers]


def test_a_small_stream(ctx, policy):
    items = stream()
    result = process(items, {}, ctx)
    # (1) triggers: the bad rating, and the SLA breach found when c's next login arrives
    assert sorted(kinds(result)) == [("b", "service_recovery", "bad_rating"),
                                     ("c", "service_recovery", "sla_breach")]
    by_customer = {t["customer_id"]: t for t in result.triggers}
    assert by_customer["b"]["event_time"] == format_time(at(29, 10))
    assert by_customer["c"]["event_time"] == format_time(at(26, 9))  # opened + 24 h, not the login time
    # the risk at each: b's last activity was a login a day before the rating, c's an hour before the breach
    assert by_customer["b"]["risk_score"] == round(silence_risk(1.0), 4)
    assert by_customer["c"]["risk_score"] == round(silence_risk(1 / 24), 4)
    for trigger in result.triggers:
        assert trigger["schema_version"] == 1 and trigger["policy_version"] == policy.version
        assert trigger["model_version"] == MODEL.version
        assert trigger["emitted_at"] == format_time(WALL)
    # no customer was silent long enough for a risk trigger: only the rules above fired
    assert max(result.scores) < policy.risk.follow_up_threshold
    # (2) states equal the plain fold of each customer's events (plus trigger memory)
    for cid, events in (("a", customer_a()), ("b", customer_b()), ("c", customer_c())):
        assert replace(result.states[cid], fired={}) == fold(events)
        assert result.states[cid].fired.get(CHECKED, 0.0) <= result.states[cid].last_seen
    assert "service_recovery" in result.states["b"].fired
    # (3) outcomes, per event type
    expected = Counter()
    for item in items:
        expected[(item.event.type, "applied")] += 1
    assert result.outcomes == expected
    assert result.late == [] and not result.holdouts and not result.quiet
    # (4) one score per decision point: every event, plus the deadlines that passed between
    # events: follow-up checks for a (days 4.4, 18.4) and b (day 14.3), and c's SLA
    assert len(result.scores) == len(items) + 4
    # (5) the next silence deadline per customer
    assert set(result.deadlines) == {"a", "b", "c"}
    for cid, state in result.states.items():
        assert result.deadlines[cid] == pending_deadline(policy, state)
    a = result.states["a"]
    assert result.deadlines["a"] == a.last_activity + lapse_days(policy, a) * DAY * policy.lapse.follow_up_check_at


def test_duplicates_and_late_events_are_counted_not_applied(ctx):
    first = process(stream(), {}, ctx)
    b = first.states["b"]
    rating = next(e for e in customer_b() if e.csat is not None)
    redelivered = Item("b", rating)
    too_old = Item("b", login(b.last_seen - LATENESS - HOUR, "b"))
    just_in_time = Item("b", login(b.last_seen - LATENESS + HOUR, "b"))
    # the worker's inputs have reached b's last event: lateness is judged against that watermark
    result = process([redelivered, too_old, just_in_time, redelivered], first.states,
                     replace(ctx, watermark=b.last_seen, arrived_at=b.last_seen))
    assert result.outcomes == Counter({("support", "duplicate"): 2, ("login", "late"): 1,
                                       ("login", "applied"): 1})
    assert result.late == [too_old]
    assert result.states["b"].logins == b.logins + 1
    assert result.states["b"].last_seen == b.last_seen
    assert result.triggers == []  # the bad rating is not re-sent for its redelivery


def test_a_batch_with_nothing_to_score(ctx):
    first = process(stream(), {}, ctx)
    a = first.states["a"]
    early_tick = Item("a", None, first.deadlines["a"] - 1)
    duplicate = Item("a", customer_a()[-1])
    result = process([early_tick, duplicate], first.states, ctx)
    assert result.scores == [] and result.triggers == []
    assert result.outcomes == Counter({("login", "duplicate"): 1})
    assert result.states["a"] == a and result.deadlines["a"] == first.deadlines["a"]
    assert process([], {}, ctx).states == {}


def test_silence_ticks_fire_win_back_at_the_lapse_deadline(ctx, policy):
    first = process(stream(), {}, ctx)
    a = first.states["a"]
    lapse = a.last_activity + lapse_days(policy, a) * DAY
    check = first.deadlines["a"]
    assert check < lapse
    # the timer ticks at each pending deadline: first the follow-up check...
    at_check = process([Item("a", None, check)], first.states, ctx)
    silent_at_check = (check - a.last_activity) / DAY
    assert at_check.scores == [pytest.approx(silence_risk(silent_at_check))]
    assert at_check.scores[0] < policy.risk.follow_up_threshold  # a daily user two days silent: low risk
    assert at_check.triggers == []
    assert at_check.deadlines["a"] == lapse
    # ...then the lapse itself
    at_lapse = process([Item("a", None, lapse)], at_check.states, ctx)
    assert kinds(at_lapse) == [("a", "win_back", "lapsed")]
    [trigger] = at_lapse.triggers
    assert trigger["event_time"] == format_time(lapse)
    assert trigger["state"]["days_since_last_activity"] == pytest.approx(lapse_days(policy, a), abs=1e-4)
    assert trigger["risk_score"] == round(silence_risk(lapse_days(policy, a)), 4)  # lapsed, whatever the risk
    assert at_lapse.deadlines["a"] is None  # nothing more to wait for in this silence
    # a repeated tick gives nothing new
    again = process([Item("a", None, lapse + DAY)], at_lapse.states, ctx)
    assert again.triggers == [] and again.scores == []


def test_an_event_after_a_missed_deadline_catches_up_first(ctx, policy):
    first = process(stream(), {}, ctx)
    a = first.states["a"]
    lapse = a.last_activity + lapse_days(policy, a) * DAY
    comeback = login(at(60, 12), "a")
    result = process([Item("a", comeback)], first.states, ctx)
    assert kinds(result)[0] == ("a", "win_back", "lapsed")
    assert result.triggers[0]["event_time"] == format_time(lapse)
    # the win-back was decided on the silent state, before the login was applied
    assert result.triggers[0]["state"]["days_since_last_activity"] < 10
    # follow-up check, lapse, then the login (silent for no time at all)
    days = lapse_days(policy, a)
    assert result.scores == pytest.approx([silence_risk(days * policy.lapse.follow_up_check_at),
                                           silence_risk(days), 0.0])
    assert result.outcomes == Counter({("login", "applied"): 1})
    state = result.states["a"]
    assert state.last_activity == at(60, 12) and state.logins == a.logins + 1
    assert result.deadlines["a"] == pending_deadline(policy, state) > at(60, 12)


def test_catch_up_also_closes_an_sla_deadline(ctx):
    events = [login(at(d, 9), "d") for d in range(10)] + [support(at(9, 10), "opened", "t-d", "d")]
    first = process([Item("d", e) for e in events], {}, ctx)
    assert first.triggers == [] and first.deadlines["d"] == at(10, 10)  # SLA comes first
    later = process([Item("d", login(at(11, 9), "d"))], first.states, ctx)
    assert kinds(later) == [("d", "service_recovery", "sla_breach")]
    assert later.triggers[0]["event_time"] == format_time(at(10, 10))


def _full_stream():
    """Events of four customers with redeliveries, a late event and ticks, in delivery order."""
    extra = [login(at(45, 9), "a"), purchase(at(45, 9.5), "61.00", "a"), login(at(80, 7), "c"),
             support(at(50, 9), "opened", "t-e", "e"), login(at(50, 8), "e"), login(at(51, 8), "e"),
             login(at(52, 8), "e"), support(at(53, 9), "resolved", "t-e", "e", nps=3)]
    events = sorted(customer_a() + customer_b() + customer_c() + extra, key=lambda e: e.occurred_at)
    items = [Item(e.customer_id, e) for e in events]
    items.insert(18, items[12])                                  # a redelivery
    items.insert(90, Item("b", login(at(1), "b", event_id="x")))  # late
    last_of_e = [i for i in items if i.customer_id == "e"][-1]
    items += [Item("b", None, at(60)), Item("b", None, at(90)), Item("e", None, at(58)),
              Item("e", None, at(70)), last_of_e]  # a late redelivery, within the id window
    return items


def test_same_stream_in_any_batch_size_gives_the_same_result(ctx):
    items = _full_stream()
    runs = {}
    # (lateness is judged against the watermark a batch arrived at: in one batch of the whole
    # stream nothing would be late, so the batches here stay small beside the late event's lag)
    for size in (1, 7, 13):
        states: dict = {}
        triggers: list = []
        outcomes: Counter = Counter()
        watermark = 0.0
        for start in range(0, len(items), size):
            batch = items[start:start + size]
            # one source, delivered in this order: the watermark is the newest event time seen
            before, watermark = watermark, max([watermark, *(i.event.occurred_at for i in batch if i.event)])
            result = process(batch, states, replace(ctx, watermark=watermark, arrived_at=before))
            states.update(result.states)
            triggers += result.triggers
            outcomes += result.outcomes
        runs[size] = (states, triggers, outcomes)
    reference_states, reference_triggers, reference_outcomes = runs[1]
    assert len(reference_triggers) >= 5
    assert {t["type"] for t in reference_triggers} >= {"win_back", "service_recovery"}
    assert reference_outcomes[("login", "late")] == 1 and reference_outcomes[("login", "duplicate")] >= 1
    for size, (states, triggers, outcomes) in runs.items():
        def by_id(ts: list[dict]) -> list[dict]:
            return sorted(ts, key=lambda t: t["trigger_id"])
        assert by_id(triggers) == by_id(reference_triggers), size  # a batch is taken in time order
        # every field but the ids kept against the watermark, which moves with the batches
        assert ({c: replace(st, recent_ids={}) for c, st in states.items()}
                == {c: replace(st, recent_ids={}) for c, st in reference_states.items()}), size
        assert outcomes == reference_outcomes, size


def test_wall_clock_old_history_updates_state_but_sends_nothing(policy, ctx):
    wall = Context(MODEL, policy, LATENESS, emitted_at=at(120), event_clock=False,
                   emit_max_age_s=2 * DAY)
    replay = process(stream(), {}, ctx)  # the same history with the event clock
    result = process(stream(), {}, wall)
    assert result.triggers == []
    assert result.outcomes == replay.outcomes
    for cid, events in (("a", customer_a()), ("b", customer_b()), ("c", customer_c())):
        assert replace(result.states[cid], fired={}) == fold(events)
    # old history is decided as a replay decides it, and remembered, but nothing is sent
    assert result.quiet == Counter(t["type"] for t in replay.triggers) == Counter(service_recovery=2)
    assert not result.suppressed
    assert {c: s.fired for c, s in result.states.items()} == {c: s.fired for c, s in replay.states.items()}
    # a fresh bad rating, within emit_max_age_s of the wall clock, is sent at once
    fresh = support(at(120) - HOUR, "resolved", "t-b2", "b", csat=1)
    now = process([Item("b", fresh)], result.states, wall)
    assert kinds(now) == [("b", "service_recovery", "bad_rating")]
    assert now.triggers[0]["event_time"] == format_time(at(120))  # decided at wall time
    # b's lapse, months ago and never ticked, is caught up first: decided quietly
    assert now.quiet == Counter(win_back=1)


def test_wall_clock_silence_deadlines_older_than_the_limit_are_quiet(policy, ctx):
    wall = Context(MODEL, policy, LATENESS, emitted_at=at(120), event_clock=False,
                   emit_max_age_s=2 * DAY)
    first = process(stream(), {}, wall)
    a = first.states["a"]
    lapse = a.last_activity + lapse_days(policy, a) * DAY
    check = process([Item("a", None, first.deadlines["a"])], first.states, wall)
    old_lapse = process([Item("a", None, lapse)], check.states, wall)
    assert old_lapse.triggers == [] and old_lapse.quiet == Counter(win_back=1)
    # the same lapse seen within the limit is sent
    recent = replace(wall, emitted_at=lapse + HOUR)
    fresh_lapse = process([Item("a", None, lapse)], check.states, recent)
    assert kinds(fresh_lapse) == [("a", "win_back", "lapsed")] and not fresh_lapse.quiet


def test_features_in_a_trigger_match_the_state_at_that_point(ctx):
    result = process(stream(), {}, ctx)
    trigger = next(t for t in result.triggers if t["customer_id"] == "b")
    row = features(fold(e for e in customer_b() if e.occurred_at <= at(29, 10)), at(29, 10))
    assert list(trigger["state"].values()) == [round(v, 4) for v in row]
    # the model's reasons for this very row: its silence, a day, and the whole risk it brings
    assert trigger["top_reasons"] == [{"feature": "days_since_last_activity", "value": 1.0,
                                       "contribution": round(silence_risk(1.0), 4)}]


def test_a_lapse_suppressed_by_the_cooldown_is_looked_at_again_when_it_ends(ctx, policy):
    # lapse 1 fires a win-back; the customer comes back once, then lapses again inside the cooldown
    early = regular_customer("r", days=10)
    first = process([Item("r", e) for e in early], {}, ctx)
    r = first.states["r"]
    lapse = r.last_activity + lapse_days(policy, r) * DAY
    fired = process([Item("r", None, lapse)], first.states, ctx)
    assert kinds(fired) == [("r", "win_back", "lapsed")]
    back = login(lapse + DAY, "r")
    returned = process([Item("r", back)], fired.states, ctx)
    s = returned.states["r"]
    second_lapse = s.last_activity + lapse_days(policy, s) * DAY
    cooldown_end = lapse + policy.cooldown_s("win_back")
    assert second_lapse < cooldown_end
    suppressed = process([Item("r", None, second_lapse)], returned.states, ctx)
    assert suppressed.triggers == [] and suppressed.suppressed[("win_back", "cooldown")] == 1
    assert suppressed.deadlines["r"] == cooldown_end
    later = process([Item("r", None, cooldown_end)], suppressed.states, ctx)
    assert kinds(later) == [("r", "win_back", "lapsed")]


def test_a_tick_for_an_unknown_customer_stores_nothing(ctx):
    result = process([Item("ghost", None, at(10))], {}, ctx)
    assert result.states == {} and result.deadlines == {} and result.triggers == []


def test_an_event_behind_the_silence_checks_still_gets_its_deadlines(ctx, policy):
    """A ticket opened on day 7 arrives after silence was checked past day 8 (an unkeyed event
    forwarded to its customer's partition while the watermark moved on): its SLA deadline lies
    before the last check, and must still be decided, at its own time."""
    first = process([Item("w", login(at(5), "w"))], {}, ctx)
    checked = process([Item("w", None, at(30))], first.states, ctx)
    assert checked.states["w"].fired[CHECKED] > at(8)  # the follow-up check of the day-5 login
    ticket = support(at(7), "opened", "t-w", "w")
    behind = process([Item("w", ticket)], checked.states, ctx)
    assert behind.deadlines["w"] == at(8)  # due already: the next batch or tick decides it
    after = process([Item("w", None, at(30))], behind.states, ctx)
    assert ("sla_breach", format_time(at(8))) in [(t["rule"], t["event_time"]) for t in after.triggers]
    # the same triggers as the ticket delivered before the check (the follow-up check of day 20,
    # decided again, now sees the open ticket too), and nothing sent twice
    in_order = process([Item("w", login(at(5), "w")), Item("w", ticket), Item("w", None, at(30))], {}, ctx)
    assert [t["trigger_id"] for t in in_order.triggers] == [t["trigger_id"] for t in after.triggers]
    again = process([Item("w", None, at(30))], after.states, ctx)
    assert again.triggers == []
    # the check and the event behind it in one batch: taken in event-time order, as if in order
    one_batch = process([Item("w", login(at(5), "w")), Item("w", None, at(30)), Item("w", ticket)], {}, ctx)
    assert one_batch.triggers == in_order.triggers


def test_a_redelivered_span_longer_than_the_event_id_window_changes_nothing(ctx):
    """After a crash, every record since the last commit comes again. The source offsets in
    the state recognise each one, however many: counts stay exact."""
    from worker.core.state import RECENT_IDS, source_code

    source = source_code("customer-events", 1)
    events = [purchase(at(0, h), "10.00", "r") for h in range(RECENT_IDS + 8)]  # within the lateness bound
    items = [Item("r", e, source=source, offset=100 + n) for n, e in enumerate(events)]
    first = process(items, {}, ctx)
    again = process(items, first.states, ctx)  # the whole span redelivered
    state = again.states["r"]
    assert (state.orders, state.revenue) == (len(events), 10.0 * len(events))
    assert state.applied == {source: 100 + len(events) - 1}
    assert again.outcomes == Counter({("purchase", "duplicate"): len(events)})
    assert again.triggers == [] and again.scores == []
    # with no watermark the event ids alone remember the newest RECENT_IDS: without offsets
    # the older ones count again (and, older than the window, do not push newer ids out)
    no_offsets = process([i._replace(offset=-1) for i in items], first.states, ctx)
    assert no_offsets.states["r"].orders == 2 * len(events) - RECENT_IDS


def test_a_producers_duplicate_at_another_offset_is_caught_by_its_event_id(ctx):
    from worker.core.state import source_code

    source = source_code("customer-events", 1)
    event = purchase(at(1, 12), "10.00", "r")
    result = process([Item("r", event, source=source, offset=7), Item("r", event, source=source, offset=8)], {}, ctx)
    assert result.states["r"].orders == 1
    assert result.outcomes == Counter({("purchase", "applied"): 1, ("purchase", "duplicate"): 1})


def test_a_producers_copy_within_the_lateness_bound_is_caught_however_many_events_came_between(ctx):
    """A resent event (same id, another record) arriving behind 40 of the customer's events,
    all within the lateness bound of the watermark: its id is still remembered."""
    events = [login(at(0, h / 2), "busy") for h in range(41)]
    t = events[-1].occurred_at
    live = replace(ctx, watermark=t, arrived_at=t)
    first = process([Item("busy", e, source=1, offset=n) for n, e in enumerate(events)], {}, live)
    again = process([Item("busy", events[0], source=2, offset=0)], first.states, live)  # the copy, elsewhere
    assert again.outcomes == Counter({("login", "duplicate"): 1})
    assert again.states["busy"].logins == 41
    # past the bound, the copy is not applied either (late, or still remembered)
    later = replace(ctx, watermark=t + 4 * DAY, arrived_at=t + 4 * DAY)
    outcome = process([Item("busy", events[0], source=2, offset=1)], first.states, later).outcomes
    assert ("login", "applied") not in outcome and sum(outcome.values()) == 1


def test_a_forwarded_copy_is_not_judged_late_again(ctx):
    """Lateness is judged where an event first arrives (the forwarder marks a late one). A copy
    not marked may reach its customer's worker behind that worker's watermark (forwarded
    before a crash, read back after the restart): it is applied."""
    t = at(30)
    live = replace(ctx, watermark=t, arrived_at=t)
    old = login(at(20), "fw")
    assert process([Item("fw", old, source=5, offset=1)], {}, live).outcomes == Counter({("login", "late"): 1})
    copy = process([Item("fw", old, source=5, offset=1, forwarded=True)], {}, live)
    assert copy.outcomes == Counter({("login", "applied"): 1}) and copy.states["fw"].logins == 1


def test_an_earlier_event_at_a_later_offset_does_not_hide_the_records_before_it(ctx):
    """One fetch: a login at offset 10 (day 5) and, at offset 12, a resend of a purchase
    from day 4 whose first copy has not arrived yet. Taken in time order, the purchase goes
    first; the login at the lower offset is still applied, not taken for a redelivery."""
    login_ = Item("o", login(at(5), "o"), source=1, offset=10)
    resend = Item("o", purchase(at(4), "9.00", "o"), source=1, offset=12)
    result = process([login_, resend], {}, ctx)
    state = result.states["o"]
    assert (state.logins, state.orders, state.applied) == (1, 1, {1: 12})
    assert process([login_, resend], result.states, ctx).outcomes == Counter(
        {("login", "duplicate"): 1, ("purchase", "duplicate"): 1})  # redelivered after a crash


def test_two_copies_of_one_forwarded_record_in_one_batch_count_once(ctx):
    """An event forwarded before a crash and again after it: both copies name its original
    record, and both can come in one fetch. The customer has MAX_RECENT_IDS newer events
    folded within the lateness bound, so the older copy's id is let go as soon as it is
    kept: its record must be what recognises the second copy."""
    from worker.core.state import MAX_RECENT_IDS, source_code

    t = at(12)
    live = replace(ctx, watermark=t, arrived_at=t)
    newer = [Item("fw", login(at(11, minutes=m / 2), "fw"), source=1, offset=m) for m in range(MAX_RECENT_IDS)]
    copy = Item("fw", purchase(at(10), "5.00", "fw"), source=source_code("events", 3, forwarded=True), offset=40,
                forwarded=True)
    folded = process(newer, {}, live).states
    assert not folded["fw"].pending and len(folded["fw"].recent_ids) == MAX_RECENT_IDS
    result = process([copy, copy], folded, live)
    assert result.outcomes[("purchase", "applied")] == 1 and result.outcomes[("purchase", "duplicate")] == 1
    assert result.states["fw"].orders == 1


def test_a_producers_copy_is_caught_behind_a_backlog_longer_than_the_id_window(ctx):
    """The watermark stands still (a source not yet read after a restart) while one input
    partition runs ahead: more than MAX_RECENT_IDS of the customer's events wait in its
    state. They must not push out the id of the event folded just before them, and a
    resend of one of them (through another partition) is a duplicate too."""
    from worker.core.state import MAX_RECENT_IDS

    t = at(10)
    stuck = replace(ctx, watermark=t, arrived_at=t)
    before = login(at(9, 23), "bk")
    events = [login(at(10, minutes=10 * n + 5), "bk") for n in range(MAX_RECENT_IDS + 40)]  # within the bound
    items = [Item("bk", before, source=1, offset=0)] + [Item("bk", e, source=1, offset=n + 1)
                                                        for n, e in enumerate(events)]
    backlog = process(items, {}, stuck)
    assert len(backlog.states["bk"].pending) == len(events) and backlog.states["bk"].logins == 1
    for event in (before, events[0], events[-1]):
        resend = process([Item("bk", event, source=2, offset=0)], backlog.states, stuck)
        assert resend.outcomes == Counter({("login", "duplicate"): 1}), event


def test_a_resends_copy_forwarded_again_after_its_id_is_let_go_counts_once(ctx):
    """A producer resends a login through another partition; its copy is a duplicate by id.
    After a crash the copy is forwarded again, when the watermark has long passed the login
    and its id is let go (a forwarded copy is not judged late again): the offset the first
    copy left in the state must recognise it."""
    from worker.core.state import event_key, source_code

    original = login(at(10), "rs")
    first = process([Item("rs", original, source=1, offset=5)], {}, replace(ctx, watermark=at(10), arrived_at=at(10)))
    copy = Item("rs", original, source=source_code("events", 2, forwarded=True), offset=9, forwarded=True)
    resent = process([copy], first.states, replace(ctx, watermark=at(10), arrived_at=at(10)))
    assert resent.outcomes == Counter({("login", "duplicate"): 1})
    later = replace(ctx, watermark=at(30), arrived_at=at(30))
    moved = process([Item("rs", login(at(30), "rs"), source=1, offset=6)], resent.states, later)
    assert moved.states["rs"].logins == 2 and event_key(original.event_id) not in moved.states["rs"].recent_ids
    again = process([copy], moved.states, later)
    assert again.outcomes == Counter({("login", "duplicate"): 1}) and again.states["rs"].logins == 2


def test_a_copy_found_late_where_it_arrived_is_a_duplicate_if_the_state_knows_it_else_late(ctx):
    """The forwarder marks a late copy rather than dead-letter it: a resend of an event the
    customer's state already holds is counted as a duplicate, as its keyed twin is; an
    unknown one is late, whatever the receiver's own watermark."""
    behind = replace(ctx, watermark=at(21), arrived_at=at(21))  # e.g. a receiver restarted just now
    old = login(at(20), "fw")
    known = process([Item("fw", old, source=5, offset=1)], {}, replace(ctx, watermark=at(20), arrived_at=at(20)))
    resend = Item("fw", old, source=6, offset=9, forwarded=True, late=True)
    again = process([resend], known.states, behind)
    assert again.outcomes == Counter({("login", "duplicate"): 1}) and not again.late
    fresh = process([resend._replace(event=login(at(19), "fw2"), customer_id="fw2")], {}, behind)
    assert fresh.outcomes == Counter({("login", "late"): 1}) and len(fresh.late) == 1
