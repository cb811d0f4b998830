"""parse_event: valid events of each type, every refusal reason, and the wire round trip."""
from __future__ import annotations

import json
import math

import pytest

from worker.core.events import REASONS, Event, InvalidEvent, parse_event, parse_valid, to_json

from .conftest import SCHEMA_DIR, T0, at, encode, wire

VALID = {
    "login": wire("login", "c-7", at(hours=9), event_id="ev-login", channel="app"),
    "purchase": wire("purchase", "c-7", at(hours=10), event_id="ev-buy", order_id="o-991",
                     amount="49.90", currency="EUR"),
    "support": wire("support", "c-7", at(hours=11), event_id="ev-help", ticket_id="t-12",
                    action="resolved", csat=4, nps=8),
}


def refused(raw: bytes, **kw) -> InvalidEvent:
    parsed = parse_event(raw, **kw)
    assert isinstance(parsed, InvalidEvent), parsed
    assert parsed.reason in REASONS
    return parsed


def with_fields(kind: str, **changes) -> bytes:
    """A valid example of `kind` with fields replaced (None removes the field)."""
    obj = {**VALID[kind], **changes}
    return encode({k: v for k, v in obj.items() if v is not None})


def test_valid_login_parses():
    assert parse_event(encode(VALID["login"])) == Event(
        event_id="ev-login", type="login", customer_id="c-7", occurred_at=T0 + 9 * 3600, channel="app")


def test_valid_purchase_parses():
    assert parse_event(encode(VALID["purchase"])) == Event(
        event_id="ev-buy", type="purchase", customer_id="c-7", occurred_at=T0 + 10 * 3600,
        order_id="o-991", amount=49.9, currency="EUR")


def test_valid_support_parses():
    assert parse_event(encode(VALID["support"])) == Event(
        event_id="ev-help", type="support", customer_id="c-7", occurred_at=T0 + 11 * 3600,
        ticket_id="t-12", action="resolved", csat=4, nps=8)


def test_login_channel_is_optional_and_ratings_are_optional():
    assert parse_event(with_fields("login", channel=None)).channel is None
    event = parse_event(with_fields("support", csat=None, nps=None, action="opened"))
    assert (event.csat, event.nps, event.action) == (None, None, "opened")


# (reason, bad message bytes, text the detail must contain: the field, or what was wrong)
BAD_MESSAGES = [
    ("not_utf8", with_fields("login").replace(b'"c-7"', b'"c-\xe97"'), "UTF-8"),
    ("bad_json", with_fields("purchase")[:-15], "invalid JSON"),
    ("bad_json", b"[" * 5000, "JSON"),  # nesting deeper than the decoder's recursion limit
    ("not_object", b"[1, 2]", "JSON object"),
    ("not_object", b'"login"', "JSON object"),
    ("bad_schema_version", with_fields("login", schema_version=2), "schema_version"),
    ("bad_schema_version", with_fields("login", schema_version=True), "schema_version"),
    ("bad_schema_version", with_fields("login", schema_version=None), "schema_version"),
    ("missing_field", with_fields("login", customer_id=None), "customer_id"),
    ("missing_field", with_fields("purchase", amount=None), "amount"),
    ("missing_field", with_fields("support", ticket_id=None), "ticket_id"),
    ("missing_field", with_fields("login", occurred_at=None), "occurred_at"),
    ("bad_field_type", with_fields("login", customer_id=42), "customer_id"),
    ("bad_field_type", with_fields("purchase", amount="abc"), "amount"),
    ("bad_field_type", with_fields("purchase", amount=True), "amount"),
    ("bad_field_type", with_fields("support", csat="5"), "csat"),
    ("bad_field_type", with_fields("support", nps=7.5), "nps"),
    ("bad_field_value", with_fields("purchase", currency="euro"), "currency"),
    ("bad_field_value", with_fields("purchase", amount=-5), "amount"),
    ("bad_field_type", with_fields("purchase", amount="NaN"), "amount"),
    ("bad_field_type", with_fields("purchase", amount="Infinity"), "amount"),
    ("bad_field_type", with_fields("purchase", amount="1e2"), "amount"),  # as the JSON Schema: no exponent
    ("bad_field_value", with_fields("support", action="closed"), "action"),
    ("bad_field_value", with_fields("support", csat=6), "csat"),
    ("bad_field_value", with_fields("support", nps=11), "nps"),
    ("bad_field_value", with_fields("login", event_id=""), "event_id"),
    ("bad_field_value", with_fields("login", customer_id="x" * 129), "customer_id"),
    ("unknown_event_type", with_fields("login", type="refund"), "type"),
    ("bad_timestamp", with_fields("login", occurred_at="2026-03-02T09:00:00"), "occurred_at"),
    ("bad_timestamp", with_fields("login", occurred_at="03/02/2026 09:00"), "occurred_at"),
    ("bad_timestamp", with_fields("login", occurred_at="2026-02-30T09:00:00Z"), "occurred_at"),
    ("bad_field_type", with_fields("login", occurred_at=1772442000), "occurred_at"),  # epoch seconds
    ("timestamp_out_of_range", with_fields("login", occurred_at="1970-01-01T00:00:00Z"), "occurred_at"),
    ("timestamp_out_of_range", with_fields("login", occurred_at="2126-03-02T09:00:00Z"), "occurred_at"),
]


@pytest.mark.parametrize(("reason", "raw", "named"), BAD_MESSAGES,
                         ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(BAD_MESSAGES)])
def test_bad_message_is_refused_with_reason_and_detail(reason, raw, named):
    bad = refused(raw)
    assert bad.reason == reason, bad
    assert named in bad.detail, bad.detail
    assert bad.raw == raw  # the original bytes go to the dead-letter topic


def test_oversize_is_refused_before_parsing():
    raw = encode(VALID["purchase"])
    bad = refused(raw, max_bytes=64)
    assert bad.reason == "oversize"
    assert str(len(raw)) in bad.detail and "64" in bad.detail
    assert isinstance(parse_event(raw, max_bytes=len(raw)), Event)  # the limit is inclusive


def test_tombstone_is_refused_as_not_object():
    bad = refused(None)
    assert (bad.reason, bad.raw) == ("not_object", b"")
    assert "tombstone" in bad.detail


def test_every_parser_reason_is_produced_by_some_bad_message():
    produced = {r for r, _, _ in BAD_MESSAGES} | {"oversize"}
    # "late" is decided by the pipeline, "processing_failed" by the app (tests/agent), "bad_mark" by
    # admission (tests/unit/test_admission.py), not the parser
    assert produced == set(REASONS) - {"late", "processing_failed", "bad_mark"}


def test_refusal_keeps_the_customer_id_when_it_is_a_string():
    assert refused(with_fields("support", csat=9)).customer_id == "c-7"
    assert refused(with_fields("login", customer_id=42)).customer_id is None


def test_unknown_extra_fields_are_ignored():
    obj = {**VALID["purchase"], "coupon": "SPRING", "meta": {"source": "pos", "lane": 3}}
    assert parse_event(encode(obj)) == parse_event(encode(VALID["purchase"]))


@pytest.mark.parametrize(("amount", "expected"), [
    ("19.90", 19.9), ("0.10", 0.1), ("0", 0.0), (12, 12.0), (7.25, 7.25),
])
def test_amount_accepts_numbers_and_decimal_strings(amount, expected):
    assert parse_event(with_fields("purchase", amount=amount)).amount == expected


def test_amount_refuses_a_json_nan_literal():
    raw = with_fields("purchase").replace(b'"49.90"', b"NaN")
    assert b"NaN" in raw
    bad = refused(raw)
    assert (bad.reason, "amount" in bad.detail) == ("bad_field_value", True)


def test_timestamps_need_an_offset_and_are_converted_to_utc():
    plus_two = parse_event(with_fields("login", occurred_at="2026-03-02T11:00:00+02:00"))
    zulu = parse_event(with_fields("login", occurred_at="2026-03-02T09:00:00Z"))
    lower_z = parse_event(with_fields("login", occurred_at="2026-03-02t09:00:00z"))
    fraction = parse_event(with_fields("login", occurred_at="2026-03-02T09:00:00.250Z"))
    assert plus_two.occurred_at == zulu.occurred_at == lower_z.occurred_at == T0 + 9 * 3600
    assert fraction.occurred_at == T0 + 9 * 3600 + 0.25
    assert refused(with_fields("login", occurred_at="2026-03-02T09:00:00")).reason == "bad_timestamp"


def test_time_bounds():
    assert refused(with_fields("login", occurred_at="1970-01-01T00:00:01Z")).reason == "timestamp_out_of_range"
    assert refused(with_fields("login", occurred_at="1999-12-31T23:59:59Z")).reason == "timestamp_out_of_range"
    assert isinstance(parse_event(with_fields("login", occurred_at="2000-01-01T00:00:00Z")), Event)
    assert refused(with_fields("login", occurred_at="2100-01-01T00:00:00Z")).reason == "timestamp_out_of_range"


@pytest.mark.parametrize("kind", sorted(VALID))
def test_to_json_round_trips_through_parse_event(kind):
    event = parse_event(encode(VALID[kind]))
    wire_form = to_json(event)
    assert parse_event(encode(wire_form)) == event
    assert json.loads(json.dumps(wire_form)) == wire_form  # plain JSON types only


def test_parsed_amount_is_finite_float():
    event = parse_event(with_fields("purchase", amount="1234567.89"))
    assert isinstance(event.amount, float) and math.isfinite(event.amount)
    assert event.amount == pytest.approx(1234567.89)


SCHEMA = SCHEMA_DIR / "event.v1.json"


@pytest.mark.skipif(not SCHEMA.exists(), reason=f"{SCHEMA.relative_to(SCHEMA.parents[2])} is not published yet")
@pytest.mark.parametrize("kind", sorted(VALID))
def test_valid_examples_match_the_published_json_schema(kind):
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator_class(schema).validate(VALID[kind])
    validator_class(schema).validate(to_json(parse_event(encode(VALID[kind]))))


def test_ids_that_cannot_be_stored_are_refused():
    lone_surrogate = b'{"schema_version":1,"event_id":"e1","type":"login","customer_id":"c\\ud800",' \
                     b'"occurred_at":"2026-03-02T10:00:00Z"}'
    bad = parse_event(lone_surrogate)
    assert (bad.reason, "customer_id" in bad.detail) == ("bad_field_value", True)
    wide = parse_event(encode(wire("support", ticket_id="\u00e9" * 128)))  # 128 characters, 256 bytes
    assert (wide.reason, "ticket_id" in wide.detail) == ("bad_field_value", True)


@pytest.mark.parametrize("literal", [b"18446744073709551615", b"18446744073709551616", b"1" + b"0" * 30])
def test_huge_integer_scores_are_out_of_range_not_floats(literal):
    raw = with_fields("support", csat=12345).replace(b"12345", literal)
    assert literal in raw
    bad = refused(raw)
    assert (bad.reason, bad.detail.startswith("csat: expected 1..5")) == ("bad_field_value", True)


def test_messages_the_fast_decoder_refuses_keep_the_json_modules_outcome():
    # NaN and lone surrogates: refused by orjson, read by the json module, then judged field by field
    assert parse_event(with_fields("purchase", amount="7.50").replace(b'"7.50"', b"NaN")).reason == "bad_field_value"
    assert parse_event(b"\xff\xfe").reason == "not_utf8"
    assert parse_event(b'{"schema_version":1,').reason == "bad_json"


def test_absurd_amounts_are_refused():
    for amount in (1e308, "10000000000"):
        bad = parse_event(encode(wire("purchase", amount=amount)))
        assert (bad.reason, "amount" in bad.detail) == ("bad_field_value", True)


def test_parse_valid_returns_the_event_and_raises_on_a_refusal():
    raw = encode(wire("login"))
    assert parse_valid(raw) == parse_event(raw)
    with pytest.raises(ValueError, match="bad_json"):
        parse_valid(b'{"schema_version":1,')
