"""The trigger policy file: the default loads, bad edits are refused naming the field."""
from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from worker.config import DEFAULT_POLICY, load_policy
from worker.core.policy import Policy, parse_policy
from worker.errors import PolicyError

from .conftest import policy_text


def test_default_policy_loads(policy):
    assert isinstance(policy, Policy)
    assert policy.version == "2026.11-1"
    assert policy.support.sla_hours == 24.0 and policy.support.bad_csat_max == 2
    assert list(policy.risk.bands) == ["low", "medium", "high", "critical"]
    assert policy.cooldown_s("win_back") == 30 * 86400.0
    assert policy.cooldown_s("service_recovery") == 2 * 86400.0
    assert load_policy(str(DEFAULT_POLICY)) == policy


@pytest.mark.parametrize(("score", "band"), [
    (0.0, "low"), (0.29, "low"), (0.3, "medium"), (0.59, "medium"), (0.6, "high"), (0.85, "critical"),
    (1.0, "critical"),
])
def test_bands(policy, score, band):
    assert policy.band(score) == band


def _without_section(text: str, section: str) -> str:
    out, n = re.subn(rf"^\[{section}\]\n(?:(?!\[).*\n?)*", "", text, flags=re.MULTILINE)
    assert n == 1
    return out


BAD_EDITS = {
    "negative sla": (policy_text(sla_hours="-4"), "support.sla_hours"),
    "zero sla": (policy_text(sla_hours="0"), "support.sla_hours"),
    "follow-up above win-back": (policy_text(follow_up_threshold="0.95"), "follow_up_threshold"),
    "threshold above 1": (policy_text(win_back_threshold="1.5"), "risk.win_back_threshold"),
    "unknown field": (policy_text().replace("[support]\n", "[support]\nescalate_after = 3\n"),
                      "support.escalate_after"),
    "unknown section": (policy_text() + "\n[discounts]\nmax = 10\n", "discounts"),
    "bands not rising": (policy_text(bands="{ low = 0.0, medium = 0.6, high = 0.3 }"), "bands"),
    "bands not from 0": (policy_text(bands="{ medium = 0.3, high = 0.6 }"), "bands"),
    "lapse bounds crossed": (policy_text(min_days="90.0"), "min_days <= default_days <= max_days"),
    "holdout over 100": (policy_text(percent="120"), "holdout.percent"),
    "string for number": (policy_text(sla_hours='"a day"'), "support.sla_hours"),
    "missing field": (policy_text().replace("bad_csat_max = 2", ""), "support.bad_csat_max"),
    "missing section": (_without_section(policy_text(), "holdout"), "holdout"),
    "invalid TOML": (policy_text().replace("sla_hours = 24.0", "sla_hours = 24.0 hours"), "not valid TOML"),
    "empty file": ("", "version"),
}


@pytest.mark.parametrize("case", sorted(BAD_EDITS))
def test_bad_policy_is_refused_naming_the_field(case):
    text, named = BAD_EDITS[case]
    with pytest.raises(PolicyError) as refused:
        parse_policy(text, "policy.toml")
    message = str(refused.value)
    assert named in message, message
    assert message.startswith("policy.toml: ")


def test_follow_up_above_win_back_names_the_risk_section():
    with pytest.raises(PolicyError, match=r"risk: .*follow_up_threshold must not exceed win_back_threshold"):
        parse_policy(policy_text(follow_up_threshold="0.95"))


def test_missing_section_message():
    with pytest.raises(PolicyError, match=r"holdout: Field required"):
        parse_policy(_without_section(policy_text(), "holdout"))


def test_load_policy_from_a_file_names_the_path(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(policy_text(sla_hours="-1"))
    with pytest.raises(PolicyError, match=re.escape(str(path)) + r".*support\.sla_hours"):
        load_policy(path)
    path.write_text(policy_text(sla_hours="4.0", version='"2026.12-1"'))
    edited = load_policy(path)
    assert edited.support.sla_hours == 4.0 and edited.version == "2026.12-1"


def test_missing_policy_file_raises_policy_error(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(PolicyError, match=re.escape(str(missing)) + ": cannot read policy"):
        load_policy(missing)


def test_policy_is_frozen(policy):
    with pytest.raises(ValidationError, match="frozen"):
        policy.support.sla_hours = 1.0  # type: ignore[misc]
    assert policy.support.sla_hours == 24.0
