"""State serialization for the changelog, and the per-customer deadline index."""
from __future__ import annotations

from dataclasses import replace

import pytest

from worker.core.codec import FORMAT, decode_state, encode_state
from worker.core.deadlines import DeadlineIndex
from worker.core.pipeline import Context, Item, process
from worker.core.state import EMPTY, CustomerState, Ticket, source_code
from worker.core.triggers import decide

from .conftest import DAY, HOUR, at, fold, login, purchase, regular_customer, support
from .fakes import SilenceModel


def typical_customer() -> list:
    """60 events over 90 days: 42 logins, 15 purchases, one ticket with three actions."""
    events = [login(at(d * 90 / 42, 9.25), "c-000123") for d in range(42)]
    events += [purchase(at(d * 6 + 1, 19.5), f"{20 + d * 3.17:.2f}", "c-000123") for d in range(15)]
    events += [support(at(50, 10), "opened", "T-2026-000981", "c-000123"),
               support(at(50, 14), "replied", "T-2026-000981", "c-000123"),
               support(at(51, 9), "resolved", "T-2026-000981", "c-000123", csat=4, nps=8)]
    assert len(events) == 60
    return sorted(events, key=lambda e: e.occurred_at)


def states_to_check(policy) -> list[CustomerState]:
    with_fired = fold(regular_customer(days=20))
    _, with_fired = decide(policy, "c-1", with_fired, 0.95, at(20))  # trigger memory
    open_ticket = fold([login(at(0)), support(at(1, 3), "opened", "t-x"), support(at(1, 4), "replied", "t-x"),
                        support(at(2), "opened", "t-y", csat=1, nps=2)])
    fractional = fold([login(at(0) + 0.123456), purchase(at(1) + 0.5, "0.10"), purchase(at(2), "0.20")])
    # a replay with triggers and silence checks in its memory (which model scores it does not matter here)
    ctx = Context(SilenceModel(), policy, 3 * DAY, emitted_at=at(200), event_clock=True)
    replayed = process([Item("c-000123", e) for e in typical_customer()]
                       + [Item("c-000123", None, at(95)), Item("c-000123", None, at(120))], {}, ctx)
    return [EMPTY, with_fired, open_ticket, fractional, fold(typical_customer()),
            replayed.states["c-000123"]]


def test_round_trip_equals_the_state(policy):
    for state in states_to_check(policy):
        raw = encode_state(state)
        assert isinstance(raw, bytes)
        back = decode_state(raw)
        assert back == state
        assert encode_state(back) == raw
        # types survive: floats stay floats, counts stay ints
        assert isinstance(back.revenue, float) and isinstance(back.orders, int)
        assert isinstance(back.active_days, int)


def test_round_trip_puts_every_field_back_in_its_place():
    # every field a different value (whole and fractional times, each count distinct), so a
    # field decoded into its neighbour's place cannot go unnoticed
    t0 = 1_767_571_200.0
    state = CustomerState(
        first_seen=t0 + 1, last_seen=t0 + 2.5, last_activity=t0 + 3, first_activity=t0 + 4.25, last_login=t0 + 5,
        first_purchase=t0 + 6, last_purchase=t0 + 7.75, logins=8, orders=9, revenue=10.5, active_days=0b1011,
        tickets={"t-1": Ticket(t0 + 12, 0.0, t0 + 12.5)}, last_csat=3, last_csat_at=t0 + 14, last_nps=5,
        last_nps_at=t0 + 16, bad_support=17, last_bad_support_at=t0 + 18.5,
        recent_ids={19: t0 + 1, 20: t0 + 2, 2**64 - 1: t0 + 3},
        fired={"checked_until": t0 + 21, "win_back": t0 + 22.5}, applied={23: 24, 2**32 - 1: 2**62})
    back = decode_state(encode_state(state))
    for name in CustomerState.__dataclass_fields__:
        assert getattr(back, name) == getattr(state, name), name


def test_round_trip_keeps_tickets_and_trigger_memory(policy):
    states = states_to_check(policy)
    assert states[1].fired and {"follow_up", "win_back"} & set(states[1].fired)
    assert len(states[2].tickets) == 2 and states[2].bad_support == 1
    for state in states:
        back = decode_state(encode_state(state))
        assert back.tickets == state.tickets and back.fired == state.fired
        assert back.recent_ids == state.recent_ids  # keys and their times


def test_unknown_format_version_raises():
    raw = encode_state(fold(regular_customer(days=5)))
    assert raw[0] == FORMAT
    for version in (FORMAT + 1, 0, ord("[")):
        with pytest.raises(ValueError, match="format"):
            decode_state(bytes([version]) + raw[1:])
    with pytest.raises(ValueError, match="format"):
        decode_state(b"")
    with pytest.raises(ValueError, match="trailing"):
        decode_state(raw + b"\x00")


def test_typical_customer_is_small():
    """Format 3 added event-id keys of 64 bits (32-bit keys collided at full load) and the
    highest offset applied per source topic-partition (13 bytes each: a keyed customer
    reads from one, or two with forwarded events); format 4 the events waiting for the
    watermark (2 bytes when none wait) and each id's event time (12 bytes an id, for the
    ids within the lateness bound rather than a fixed 16)."""
    state = fold(typical_customer())
    # the worker keeps the ids of the events within the lateness bound of the watermark
    recent = {k: t for k, t in state.recent_ids.items() if t >= state.last_seen - 3 * DAY}
    state = replace(state, recent_ids=recent, applied={source_code("customer-events", 2): 123_456_789,
                                                       source_code("churn-worker-events-by-customer", 2): 42})
    assert state.activities == 57 and state.active_days.bit_count() >= 40
    size = len(encode_state(state))
    print(f"\nencoded state of a typical customer (60 events over 90 days): {size} bytes")
    assert size <= 282, f"encoded state is {size} bytes, expected <= 282"


# A customer state as format 2 wrote it (before source offsets; 32-bit event-id keys): the
# replayed customer of states_to_check, with tickets, trigger memory and 16 ids.
FORMAT_2_RECORD = bytes.fromhex(
    "02ff0369031455a569922449374a86da41922449374a86da411455a569922449374a86da41b836a769b8f4156acdcccccccc"
    "c68340108ee869108ee8692a0000000f00000004080000adaa725dabaa5cd7aa2ad70110402d0ac233277bbb5bb9a7b999a2"
    "be08014c2d8b1116dc826dfab40a0fe2e55be37708f689319077599822aa81ca2ca0c9af6671429d5496bf9d19c335ed74fa"
    "010d542d323032362d303030393831000000a8d279da4100000084237ada4100000084237ada4103000a5e4eb65b88da4103"
    "0a5e4eb65b88da4104922449374a86da41")


def test_a_state_written_by_format_2_still_loads(policy):
    """Upgrading the worker must not lose or refuse the states on the changelog."""
    old = decode_state(FORMAT_2_RECORD)
    expected = states_to_check(policy)[-1]
    assert replace(old, recent_ids=expected.recent_ids) == expected  # every field but the ids
    assert old.recent_ids == {} and old.applied == {}  # 32-bit keys cannot match 64-bit ones
    assert decode_state(encode_state(old)) == old and encode_state(old)[0] == FORMAT == 5


def with_offsets(state: CustomerState) -> CustomerState:
    """The state with the source offsets the format 3 and 4 records were written with: of an
    input and a repartition partition."""
    return replace(state, applied={source_code("customer-events", 2): 123_456_789,
                                   source_code("churn-worker-events-by-customer", 2): 42})


# The same customer as format 3 wrote it (before events waiting for the watermark), with
# source offsets of an input and a repartition partition.
FORMAT_3_RECORD = bytes.fromhex(
    "03ff0369031455a569922449374a86da41922449374a86da411455a569922449374a86da41b836a769b8f4156acdcccccccc"
    "c68340108ee869108ee8692a0000000f00000004080000adaa725dabaa5cd7aa2ad70110f6fefd7c426630837486d077e9fe"
    "b22b3b991ffff5799304c11c80f0204bb1678e8d2595897c2a7148dc211dd0fab314d73f259052b00050f0c0cf814bafe46a"
    "aed35b0f089e19de76f7c067004d59c960253967f1f457d90abbbb3aa915e94b66db52d3233fb9d3bfa69d482ac142f24fe1"
    "fd0a89c9c17bbbf66b7759de9c94010d542d323032362d303030393831000000a8d279da4100000084237ada410000008423"
    "7ada4103000a5e4eb65b88da41030a5e4eb65b88da4104922449374a86da41025cdb078415cd5b07000000009e48358b2a00"
    "000000000000")


def test_a_state_written_by_format_3_still_loads(policy):
    old = decode_state(FORMAT_3_RECORD)
    expected = with_offsets(states_to_check(policy)[-1])
    # format 3 kept no times with its ids: they are kept as of the newest event
    assert list(old.recent_ids) == list(expected.recent_ids)
    assert set(old.recent_ids.values()) == {float(int(old.last_seen))}
    assert replace(old, recent_ids=expected.recent_ids) == expected and old.pending == ()
    assert decode_state(encode_state(old)) == old


# The same customer as format 4 wrote it (ids counted in a byte), with two events waiting.
FORMAT_4_RECORD = bytes.fromhex(
    "04ff0369031455a569922449374a86da41922449374a86da411455a569922449374a86da41b836a769b8f4156acdcccccccc"
    "c68340108ee869108ee8692a0000000f00000004080000adaa725dabaa5cd7aa2ad70110f6fefd7c426630837486d077e9fe"
    "b22b3b991ffff5799304c11c80f0204bb1678e8d2595897c2a7148dc211dd0fab314d73f259052b00050f0c0cf814bafe46a"
    "aed35b0f089e19de76f7c067004d59c960253967f1f457d90abbbb3aa915e94b66db52d3233fb9d3bfa69d482ac142f24fe1"
    "fd0a89c9c17bbbf66b7759de9c948115fa69b8e8fc69b839fe69efbbff69268f026a5d62056ab822066a9435086aca080b6a"
    "01dc0d6ab80b0e6a38af106a6f82136ab8f4156aa655166add28196a010d542d323032362d303030393831000000a8d279da"
    "4100000084237ada4100000084237ada4103000a5e4eb65b88da41030a5e4eb65b88da4104922449374a86da41025cdb0784"
    "15cd5b07000000009e48358b2a0000000000000002001c632d3030303938312d70757263686173652d313738303534323030"
    "30010000008c3a88da41156f2d632d3030303938312d31373830353432303030ae47e17a14ae28400345555219632d303030"
    "3938312d6c6f67696e2d3137383036313736303000000000608488da4103776562")


def test_a_state_written_by_format_4_still_loads(policy):
    old = decode_state(FORMAT_4_RECORD)
    expected = with_offsets(states_to_check(policy)[-1])
    assert replace(old, pending=()) == expected
    assert [(e.type, e.occurred_at) for e in old.pending] == [("purchase", at(94, 3)), ("login", at(95))]
    assert decode_state(encode_state(old)) == old and encode_state(old)[0] == FORMAT


def test_more_ids_than_a_byte_counts_round_trip():
    """A customer with hundreds of events within the lateness bound keeps all their ids."""
    from worker.core.state import MAX_RECENT_IDS

    state = replace(fold(typical_customer()), recent_ids={n: 1_780_000_000.0 + n for n in range(MAX_RECENT_IDS)})
    assert decode_state(encode_state(state)) == state


def test_events_waiting_for_the_watermark_round_trip():
    from worker.core.state import hold

    state = fold(typical_customer())
    waiting = [login(at(95), "c-000123"), purchase(at(94, 3), "12.34", "c-000123"),
               support(at(96), "resolved", "T-é", "c-000123", csat=1), support(at(97), "opened", "T-2")]
    for e in waiting:
        state = hold(state, e, state.applied)
    back = decode_state(encode_state(state))
    assert back == state
    assert [e.occurred_at for e in back.pending] == sorted(e.occurred_at for e in waiting)
    assert [e._replace(customer_id="c-000123") for e in back.pending] == sorted(
        [e._replace(customer_id="c-000123") for e in waiting], key=lambda e: e.occurred_at)


# ---- DeadlineIndex ---------------------------------------------------------------------------


def test_pop_due_in_deadline_order():
    index = DeadlineIndex()
    for key, deadline in ((b"c", 30.0), (b"a", 10.0), (b"d", 40.0), (b"b", 20.0)):
        index.set(key, deadline)
    assert len(index) == 4
    assert index.pop_due(5.0, limit=10) == []
    assert index.pop_due(25.0, limit=10) == [(b"a", 10.0), (b"b", 20.0)]
    assert len(index) == 2
    assert index.pop_due(40.0, limit=10) == [(b"c", 30.0), (b"d", 40.0)]  # inclusive
    assert len(index) == 0 and index.pop_due(1e12, limit=10) == []


def test_replacing_a_deadline_makes_the_old_one_stale():
    index = DeadlineIndex()
    index.set(b"a", 10.0)
    index.set(b"b", 15.0)
    index.set(b"a", 50.0)   # later
    index.set(b"b", 5.0)    # earlier
    assert len(index) == 2
    assert index.pop_due(20.0, limit=10) == [(b"b", 5.0)]
    assert index.pop_due(49.0, limit=10) == []
    assert index.pop_due(50.0, limit=10) == [(b"a", 50.0)]


def test_setting_back_an_earlier_deadline():
    index = DeadlineIndex()
    index.set(b"a", 10.0)
    index.set(b"a", 20.0)
    index.set(b"a", 10.0)
    assert index.pop_due(30.0, limit=10) == [(b"a", 10.0)]  # once, not three times
    assert len(index) == 0


def test_set_none_removes():
    index = DeadlineIndex()
    index.set(b"a", 10.0)
    index.set(b"b", 20.0)
    index.set(b"a", None)
    index.set(b"zz", None)  # removing an unknown key is fine
    assert len(index) == 1
    assert index.pop_due(100.0, limit=10) == [(b"b", 20.0)]


def test_pop_due_respects_limit():
    index = DeadlineIndex()
    for n in range(10):
        index.set(f"k{n}".encode(), float(n))
    index.set(b"k0", 100.0)  # a stale entry at the front does not count toward the limit
    assert index.pop_due(50.0, limit=3) == [(b"k1", 1.0), (b"k2", 2.0), (b"k3", 3.0)]
    assert len(index) == 7
    assert index.pop_due(50.0, limit=0) == []
    assert [k for k, _ in index.pop_due(50.0, limit=100)] == [f"k{n}".encode() for n in range(4, 10)]
    assert len(index) == 1


def test_many_updates_stay_correct_through_compaction():
    index = DeadlineIndex()
    for round_ in range(300):  # 3000 pushes for 10 keys: compaction must run
        for n in range(10):
            index.set(f"k{n}".encode(), 1000.0 + round_ * 10 + n)
    assert len(index) == 10
    assert len(index._heap) <= 4 * len(index) + 1024 + 1
    due = index.pop_due(1e9, limit=100)
    assert due == [(f"k{n}".encode(), 1000.0 + 299 * 10 + n) for n in range(10)]
    index.set(b"x", 1.0)
    index.clear()
    assert len(index) == 0 and index.pop_due(1e9, limit=10) == []


def test_timer_cycle_with_real_deadlines(policy):
    # what the worker does: index the pending deadline, pop it when due, then re-index
    from worker.core.triggers import pending_deadline

    state = fold([login(at(d, 9)) for d in range(10)] + [support(at(9, 10), "opened", "t-1")])
    index = DeadlineIndex()
    index.set(b"c-1", pending_deadline(policy, state))
    seen = []
    now = at(9, 10)
    while len(index) and now < at(30):
        now += HOUR
        for key, due in index.pop_due(now, limit=10):
            seen.append(due)
            _, state = decide(policy, "c-1", state, 0.0, due)
            index.set(key, pending_deadline(policy, state))
    assert seen == [at(10, 10), at(11, 9), at(13, 9)]  # SLA, follow-up check, lapse


def test_a_flood_of_tickets_stays_bounded_and_encodable():
    from worker.core.state import MAX_TICKETS
    events = [support(at(0, i), "opened", f"T-\u00e9{i:04d}-" + "x" * 100, "c-flood") for i in range(300)]
    state = fold(events)
    assert len(state.tickets) == MAX_TICKETS
    assert set(state.tickets) == {e.ticket_id for e in events[-MAX_TICKETS:]}  # the newest are kept
    assert decode_state(encode_state(state)) == state


def test_earliest_is_the_first_current_deadline_and_skips_stale_ones():
    index = DeadlineIndex()
    assert index.earliest() is None
    index.set(b"a", 10.0)
    index.set(b"b", 20.0)
    assert index.earliest() == 10.0
    index.set(b"a", 30.0)  # the entry at 10 is stale now
    assert index.earliest() == 20.0
    index.set(b"b", None)
    assert index.earliest() == 30.0 and len(index) == 1
    assert index.pop_due(30.0, limit=10) == [(b"a", 30.0)]
    assert index.earliest() is None
