"""Monetary features in one base currency: a purchase in another currency is converted with
the policy's rates, or counted as an order of no value (and counted) when there is none."""
from __future__ import annotations

import pytest

from worker.core.pipeline import Context, Item, process
from worker.core.policy import parse_policy
from worker.errors import PolicyError

from .conftest import at, policy_text, purchase
from .fakes import SilenceModel

RATES = '[currency]\nbase = "EUR"\nrates = { USD = 0.9, GBP = 1.2 }\n'


def run(policy, events):
    ctx = Context(SilenceModel(), policy, 3 * 86400, emitted_at=at(100), event_clock=True)
    return process([Item(e.customer_id, e) for e in events], {}, ctx)


def test_amounts_are_converted_to_the_base_currency_or_left_out_and_counted():
    policy = parse_policy(policy_text() + "\n" + RATES)
    result = run(policy, [purchase(at(1), "10.00", currency="EUR"), purchase(at(2), "10.00", currency="USD"),
                          purchase(at(3), "10.00", currency="GBP"), purchase(at(4), "10.00", currency="JPY")])
    state = result.states["c-1"]
    assert state.orders == 4 and state.revenue == pytest.approx(10 + 9 + 12)
    assert result.unconverted == {"JPY": 1}


def test_without_a_currency_section_amounts_count_as_given(policy):
    state = run(policy, [purchase(at(1), "10.00", currency="EUR"), purchase(at(2), "10.00", currency="USD")])
    assert state.states["c-1"].revenue == 20


def test_a_bad_rate_is_refused():
    with pytest.raises(PolicyError, match="currency"):
        parse_policy(policy_text() + "\n" + RATES.replace("0.9", "-1"))
