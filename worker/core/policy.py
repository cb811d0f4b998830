"""The trigger policy: thresholds, windows, SLA, cooldowns, holdout, segments.

Written as TOML a product person can read (`worker/default_policy.toml` documents
every field). `parse_policy` refuses a bad text with a PolicyError that names the
field, and the worker does not start with it; `worker.config.load_policy` reads the file.
"""
from __future__ import annotations

import tomllib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from worker.core.events import known_zone
from worker.errors import PolicyError

_STRICT = ConfigDict(extra="forbid", frozen=True)
MAX_CAP = 8  # the most triggers a cap may allow per period (their times are kept in the state)


class Risk(BaseModel):
    model_config = _STRICT
    follow_up_threshold: float = Field(ge=0, le=1)
    win_back_threshold: float = Field(ge=0, le=1)
    bands: dict[str, float]

    @model_validator(mode="after")
    def _ordered(self) -> Risk:
        if self.follow_up_threshold > self.win_back_threshold:
            raise ValueError("follow_up_threshold must not exceed win_back_threshold")
        edges = list(self.bands.values())
        if not edges or edges[0] != 0 or edges != sorted(edges) or edges[-1] > 1:
            raise ValueError("bands must start at 0 and rise, within 0..1")
        return self


class Lapse(BaseModel):
    model_config = _STRICT
    rhythm_multiplier: float = Field(gt=0)
    min_days: float = Field(gt=0)
    max_days: float = Field(gt=0)
    default_days: float = Field(gt=0)
    follow_up_check_at: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _bounds(self) -> Lapse:
        if not self.min_days <= self.default_days <= self.max_days:
            raise ValueError("need min_days <= default_days <= max_days")
        return self


class Support(BaseModel):
    model_config = _STRICT
    sla_hours: float = Field(gt=0)
    bad_csat_max: int = Field(ge=1, le=4)


class Cooldown(BaseModel):
    model_config = _STRICT
    follow_up_days: float = Field(ge=0)
    win_back_days: float = Field(ge=0)
    service_recovery_days: float = Field(ge=0)


class Holdout(BaseModel):
    model_config = _STRICT
    percent: float = Field(ge=0, le=100)
    salt: str = Field(min_length=1)


class Segments(BaseModel):
    model_config = _STRICT
    champion_clv: float = Field(ge=0)
    loyal_orders: int = Field(ge=1)
    new_days: float = Field(ge=0)


SEGMENTS = ("champion", "loyal", "new", "occasional", "prospect")
Segment = Literal["champion", "loyal", "new", "occasional", "prospect"]
TriggerType = Literal["follow_up", "win_back", "service_recovery"]


class Treatment(BaseModel):
    """A segment's own thresholds and cooldowns; what it leaves out, the global ones decide."""

    model_config = _STRICT
    follow_up_threshold: float | None = Field(None, ge=0, le=1)
    win_back_threshold: float | None = Field(None, ge=0, le=1)
    follow_up_days: float | None = Field(None, ge=0)
    win_back_days: float | None = Field(None, ge=0)
    service_recovery_days: float | None = Field(None, ge=0)


class Cap(BaseModel):
    """At most `max_triggers` per customer within `period_days`, across types; when more are
    due at once, `priority` decides which go first."""

    model_config = _STRICT
    max_triggers: int = Field(ge=1, le=MAX_CAP)
    period_days: float = Field(gt=0)
    priority: list[TriggerType] = Field(min_length=3, max_length=3)

    @model_validator(mode="after")
    def _every_type_once(self) -> Cap:
        if len(set(self.priority)) != 3:
            raise ValueError("priority must name follow_up, win_back and service_recovery once each")
        return self


class Currency(BaseModel):
    """Monetary features in one currency: an order in `base` counts as it is, one in a
    currency of `rates` (units of `base` per unit) is converted, any other counts as an
    order of no value (and is counted, by currency)."""

    model_config = _STRICT
    base: str = Field(pattern=r"^[A-Z]{3}$")
    rates: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid(self) -> Currency:
        for code, rate in self.rates.items():
            if len(code) != 3 or not code.isupper() or not rate > 0:
                raise ValueError(f"rates.{code}: a three-letter code and a rate above 0 expected")
        return self

    def convert(self, amount: float, currency: str | None) -> float | None:
        """The amount in the base currency, or None when there is no rate for it."""
        if currency == self.base:
            return amount
        rate = self.rates.get(currency or "")
        return None if rate is None else amount * rate


class QuietHours(BaseModel):
    """No trigger goes out from `start` to `end` (HH:MM, the window may wrap midnight) in
    the customer's time zone (an event's `tz`), or `timezone` for customers without one;
    a trigger due then is deferred to the window's end."""

    model_config = _STRICT
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _valid(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        if not known_zone(self.timezone):
            raise ValueError(f"timezone: {self.timezone!r} is not an IANA time zone")
        return self

    @property
    def start_s(self) -> int:
        return _seconds(self.start)

    @property
    def end_s(self) -> int:
        return _seconds(self.end)


def _seconds(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 3600 + int(minutes) * 60


class Policy(BaseModel):
    model_config = _STRICT
    version: str = Field(min_length=1)
    risk: Risk
    lapse: Lapse
    support: Support
    cooldown: Cooldown
    holdout: Holdout
    segments: Segments
    treatment: dict[Segment, Treatment] = Field(default_factory=dict)
    cap: Cap | None = None
    quiet_hours: QuietHours | None = None
    currency: Currency | None = None

    @model_validator(mode="after")
    def _treatment_thresholds_ordered(self) -> Policy:
        for name in self.treatment:
            follow = self.threshold("follow_up", name)
            if follow > self.threshold("win_back", name):
                raise ValueError(f"treatment.{name}: follow_up_threshold must not exceed win_back_threshold")
        return self

    def _override(self, segment: str | None, field: str) -> float | None:
        treatment = self.treatment.get(segment) if segment else None  # type: ignore[call-overload]
        return None if treatment is None else getattr(treatment, field)

    def cooldown_s(self, trigger_type: str, segment: str | None = None) -> float:
        override = self._override(segment, f"{trigger_type}_days")
        return (getattr(self.cooldown, f"{trigger_type}_days") if override is None else override) * 86400.0

    def cooldowns_s(self, trigger_type: str) -> set[float]:
        """Every cooldown a customer may have for this type, whatever their segment."""
        return {self.cooldown_s(trigger_type, s) for s in (None, *self.treatment)}

    def threshold(self, kind: str, segment: str | None = None) -> float:
        """The risk threshold of `kind` (follow_up or win_back) for a segment."""
        override = self._override(segment, f"{kind}_threshold")
        return getattr(self.risk, f"{kind}_threshold") if override is None else override

    @property
    def lowest_follow_up_threshold(self) -> float:
        return min(self.threshold("follow_up", s) for s in (None, *self.treatment))

    def band(self, score: float) -> str:
        name = next(iter(self.risk.bands))
        for band, edge in self.risk.bands.items():
            if score >= edge:
                name = band
        return name


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise PolicyError(f"{source}: invalid policy: {problems}") from None
