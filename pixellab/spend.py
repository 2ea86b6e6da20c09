"""Spend governance: daily and monthly caps across every paid call on one ledger, and alerts.

A sweep's ``budget_usd`` caps one sweep. A team also needs to cap a day: "I burned through
$200 in a weekend" happened across many runs, none over its own budget. The policy lives in
``<home>/spend.toml`` (or ``$PIXELLAB_SPEND``)::

    timezone = "Europe/Berlin"          # when a day and a month begin (default UTC)
    [caps]                              # over every project
    daily_usd = 50
    monthly_usd = 800
    daily_credits = 2000
    [projects.growth]                   # one project label (PIXELLAB_PROJECT, a sweep's project)
    daily_usd = 10
    [alerts]
    thresholds = [0.5, 0.8, 1.0]        # of each cap, once per period each
    anomaly_factor = 3.0                # the last hour's spend against the median hour of the
    anomaly_hours = 24                  # trailing day; off with anomaly_factor = 0
    anomaly_min_usd = 1.0
    webhook_url = "https://hooks.slack.com/services/..."
    webhook_secret_env = "PIXELLAB_ALERT_WEBHOOK_SECRET"   # whsec_...; signs Standard Webhooks
    [alerts.smtp]
    host = "smtp.example.com"
    port = 587
    starttls = true
    from = "pixellab@example.com"
    to = ["growth-leads@example.com"]
    username_env = "PIXELLAB_SMTP_USER"
    password_env = "PIXELLAB_SMTP_PASSWORD"

Every paid call reserves its upper-bound estimate against every cap that applies, atomically
across processes (:class:`~pixellab.ledger.spend.SpendBook`), before it leaves; the call that
would cross a cap is refused with :class:`~pixellab.errors.BudgetExceeded` and one line naming
the cap, nothing spent; afterwards the reservation is replaced by what the call cost. Free
calls (the local models) never touch the book.

Alerts: a threshold of a cap crossed in a period, and a spend-rate anomaly, are each claimed in
the book by exactly one process (so a busy afternoon sends one "80 %" message, not one per
request, the failure LiteLLM's users reported) and delivered in the background to the webhook
and/or by e-mail (:mod:`pixellab.alerts`); :meth:`SpendGovernor.flush` waits for them. When
several thresholds are crossed at once, one message names the highest and the others are
recorded as covered by it. ``pixellab spend`` shows the book; ``pixellab spend --summary
--send`` sends the day's summary as the same kind of message.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from statistics import median
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pixellab.alerts import Delivery, Message, SmtpTarget, WebhookTarget, send_email, send_webhook
from pixellab.config_files import load_toml_model
from pixellab.ledger.spend import CapCheck, SpendBook, micros

DEFAULT_PROJECT = "default"


class _Caps(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    daily_usd: Decimal | None = Field(default=None, gt=0)
    monthly_usd: Decimal | None = Field(default=None, gt=0)
    daily_credits: Decimal | None = Field(default=None, gt=0)
    monthly_credits: Decimal | None = Field(default=None, gt=0)


class _Smtp(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    host: str = Field(min_length=1)
    port: int = Field(default=25, ge=1, le=65535)
    sender: str = Field(alias="from", min_length=3)
    to: list[str] = Field(min_length=1)
    starttls: bool = False
    tls: bool = False
    username_env: str | None = None
    password_env: str | None = None


class _Alerts(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    thresholds: list[float] = Field(default_factory=lambda: [0.5, 0.8, 1.0])
    anomaly_factor: float = Field(default=3.0, ge=0)
    anomaly_hours: int = Field(default=24, ge=2, le=24 * 30)
    anomaly_min_usd: float = Field(default=1.0, ge=0)
    webhook_url: str | None = None
    webhook_secret_env: str | None = None
    smtp: _Smtp | None = None

    @field_validator("thresholds")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0 < t <= 1 for t in value):
            raise ValueError("thresholds are fractions of a cap, above 0 and at most 1")
        return sorted(set(value))

    @field_validator("webhook_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("webhook_url must be an http(s) URL")
        return value


class SpendPolicy(BaseModel):
    """``spend.toml``, validated (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    timezone: str = "UTC"
    caps: _Caps = Field(default_factory=_Caps)
    projects: dict[str, _Caps] = Field(default_factory=dict)
    alerts: _Alerts = Field(default_factory=_Alerts)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value[:60]!r}") from None
        return value


def load_spend_policy(path: str | Path) -> SpendPolicy:
    """The policy file, or :class:`ConfigError` naming the key."""
    return load_toml_model(path, SpendPolicy, what="spend policy")


@dataclass(frozen=True)
class Cap:
    """One limit of the policy: ``limit`` of ``unit`` per ``period``, for a project or all."""

    period: Literal["day", "month"]
    unit: Literal["usd", "credits"]
    limit: Decimal
    project: str | None

    @property
    def name(self) -> str:
        scope = f"project {self.project!r}" if self.project is not None else "total"
        return f"{'daily' if self.period == 'day' else 'monthly'} {self.unit} cap ({scope})"

    @property
    def slug(self) -> str:
        return f"{self.project or '*'}:{self.period}:{self.unit}"


def _caps(caps: _Caps, project: str | None) -> list[Cap]:
    found = []
    for period, unit, value in (("day", "usd", caps.daily_usd),
                                ("month", "usd", caps.monthly_usd),
                                ("day", "credits", caps.daily_credits),
                                ("month", "credits", caps.monthly_credits)):
        if value is not None:
            found.append(Cap(period, unit, value, project))  # type: ignore[arg-type]
    return found


def _amount(unit: str, value: Decimal) -> str:
    return f"${value:.2f}" if unit == "usd" else f"{value:.2f} credits"


class SpendGovernor:
    """The policy applied to one process's calls for one project label."""

    def __init__(self, book: SpendBook, policy: SpendPolicy, *,
                 project: str = DEFAULT_PROJECT) -> None:
        self.book = book
        self.policy = policy
        self.project = project
        self.zone = ZoneInfo(policy.timezone)
        self.caps = _caps(policy.caps, None) + [
            cap for name, caps in sorted(policy.projects.items()) for cap in _caps(caps, name)]
        self._deliveries: list[threading.Thread] = []
        self._lock = threading.Lock()

    def period_start(self, period: str, now: float) -> tuple[float, str]:
        """The current day's or month's start (Unix seconds) and its label."""
        local = datetime.fromtimestamp(now, self.zone)
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if period == "month":
            start = start.replace(day=1)
            return start.timestamp(), start.strftime("%Y-%m")
        return start.timestamp(), start.strftime("%Y-%m-%d")

    def usage(self, cap: Cap, now: float) -> tuple[str, Decimal]:
        """The label of ``cap``'s current period and how much of it is used (settled and
        reserved calls together)."""
        since, label = self.period_start(cap.period, now)
        usd, credits = self.book.totals(since, cap.project)
        return label, usd if cap.unit == "usd" else credits

    def reserve(self, usd: float, credits: float, *, model_id: str | None = None,
                now: float | None = None) -> str:
        """Hold the call's estimate against every cap that applies to this project."""
        now = time.time() if now is None else now
        checks = [CapCheck(cap.name, cap.unit, micros(cap.limit),
                           self.period_start(cap.period, now)[0], cap.project)
                  for cap in self.caps if cap.project in (None, self.project)]
        return self.book.reserve(project=self.project, usd=usd, credits=credits, caps=checks,
                                 model_id=model_id, now=now)

    def settle(self, reservation: str, usd: float, credits: float) -> None:
        """What the call cost replaces its estimate; then the alerts are looked at."""
        self.book.settle(reservation, usd=usd, credits=credits)
        self.check_alerts()

    # -- alerts -----------------------------------------------------------------------------

    def check_alerts(self, now: float | None = None) -> list[Message]:
        """Claim and send (in the background) what has newly crossed: thresholds of every cap,
        and the spend-rate anomaly. Returns the messages this process claimed."""
        now = time.time() if now is None else now
        claimed = [m for cap in self.caps if (m := self._threshold(cap, now)) is not None]
        anomaly = self._anomaly(now)
        if anomaly is not None:
            claimed.append(anomaly)
        for message in claimed:
            self._send(message)
        return claimed

    def _threshold(self, cap: Cap, now: float) -> Message | None:
        thresholds = self.policy.alerts.thresholds
        if not thresholds:
            return None
        label, used = self.usage(cap, now)
        fraction = used / cap.limit
        crossed = [t for t in thresholds if fraction >= Decimal(str(t))]
        if not crossed:
            return None
        message = Message(
            key=f"cap:{cap.slug}:{label}:{round(crossed[-1] * 100)}", kind="threshold",
            title=(f"pixellab spend: {round(crossed[-1] * 100)} % of the {cap.name} for "
                   f"{label}"),
            lines=(f"{_amount(cap.unit, used)} of {_amount(cap.unit, cap.limit)} "
                   f"({float(fraction) * 100:.1f} %), reserved and settled calls together.",
                   "Calls that would cross the cap are refused before they are made."),
            fields={"cap": cap.slug, "period": label, "threshold": crossed[-1],
                    "used": str(used), "limit": str(cap.limit), "unit": cap.unit})
        if not self._claim(message, now):
            return None
        for lower in crossed[:-1]:  # covered by the higher one, never sent later
            key = f"cap:{cap.slug}:{label}:{round(lower * 100)}"
            if self.book.claim_notice(key, "threshold", {"covered_by": message.key}, now):
                self.book.finish_notice(key, status="covered", detail=message.key, attempts=0)
        return message

    def _anomaly(self, now: float) -> Message | None:
        alerts = self.policy.alerts
        if alerts.anomaly_factor <= 0:
            return None
        hour_start = now - now % 3600
        last = self.book.hourly_usd(now - 3600, now + 1)  # the last 60 minutes
        last_hour = last[0] if last else Decimal(0)
        if last_hour < Decimal(str(alerts.anomaly_min_usd)) or last_hour <= 0:
            return None
        history = self.book.hourly_usd(now - 3600 * (alerts.anomaly_hours + 1), now - 3600)
        typical = Decimal(median(history)) if history else Decimal(0)
        if last_hour <= typical * Decimal(str(alerts.anomaly_factor)):
            return None
        label = datetime.fromtimestamp(hour_start, self.zone).strftime("%Y-%m-%dT%H")
        message = Message(
            key=f"anomaly:{label}", kind="anomaly",
            title=f"pixellab spend: unusual spend rate, {_amount('usd', last_hour)} in the "
                  "last hour",
            lines=(f"The median hour of the previous {alerts.anomaly_hours} h was "
                   f"{_amount('usd', typical)}; the alert fires above "
                   f"{alerts.anomaly_factor:g}× that (and at least "
                   f"{_amount('usd', Decimal(str(alerts.anomaly_min_usd)))}).",),
            fields={"last_hour_usd": str(last_hour), "median_hour_usd": str(typical),
                    "factor": alerts.anomaly_factor, "hour": label})
        return message if self._claim(message, now) else None

    def summary(self, now: float | None = None) -> Message:
        """Today's spend so far (per project, against each daily cap), as a message."""
        now = time.time() if now is None else now
        since, label = self.period_start("day", now)
        lines = [f"{project}: {_amount('usd', usd)}, {credits:.2f} credits, {calls} paid calls"
                 for project, usd, credits, calls in self.book.by_project(since)]
        for cap in self.caps:
            period, used = self.usage(cap, now)
            lines.append(f"{cap.name} for {period}: {_amount(cap.unit, used)} of "
                         f"{_amount(cap.unit, cap.limit)}")
        return Message(key=f"summary:{label}", kind="summary",
                       title=f"pixellab spend summary for {label}",
                       lines=tuple(lines) or ("No paid calls.",), fields={"day": label})

    def send_summary(self, now: float | None = None) -> Message | None:
        """Send today's summary once (a second call the same day sends nothing)."""
        message = self.summary(now)
        if not self._claim(message, now):
            return None
        self._send(message)
        return message

    def _claim(self, message: Message, now: float | None) -> bool:
        """True when this process is the one to send ``message`` (see the book)."""
        return self.book.claim_notice(message.key, message.kind, message.payload()["pixellab"],
                                      now)

    def _send(self, message: Message) -> None:
        thread = threading.Thread(target=self._deliver, args=(message,),
                                  name=f"pixellab-alert-{message.key}", daemon=True)
        with self._lock:
            self._deliveries.append(thread)
        thread.start()

    def _deliver(self, message: Message) -> None:
        alerts = self.policy.alerts
        results: list[Delivery] = []
        if alerts.webhook_url:
            results.append(send_webhook(WebhookTarget(alerts.webhook_url,
                                                      alerts.webhook_secret_env), message))
        if alerts.smtp is not None:
            smtp = alerts.smtp
            results.append(send_email(SmtpTarget(
                smtp.host, smtp.port, smtp.sender, tuple(smtp.to), starttls=smtp.starttls,
                tls=smtp.tls, username_env=smtp.username_env, password_env=smtp.password_env),
                message))
        status = ("unsent" if not results else
                  "delivered" if all(r.ok for r in results) else
                  "partly delivered" if any(r.ok for r in results) else "failed")
        self.book.finish_notice(message.key, status=status,
                                detail="; ".join(f"{r.channel}: {r.detail}" for r in results)
                                or "no webhook_url or smtp configured",
                                attempts=sum(r.attempts for r in results))

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait for the deliveries started so far (each retries for at most ~15 s)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            pending, self._deliveries = self._deliveries, []
        for thread in pending:
            thread.join(max(0.0, deadline - time.monotonic()))


def book_path(ledger_path: Path) -> Path:
    """The spend book beside a ledger: ``ledger.duckdb`` → ``ledger.spend.sqlite``."""
    return ledger_path.with_name(f"{ledger_path.stem}.spend.sqlite")


def governor_for(policy_path: Path | None, ledger_path: Path, project: str
                 ) -> SpendGovernor | None:
    """The governor when a policy file exists, else None (no caps: nothing is reserved)."""
    if policy_path is None or not policy_path.exists():
        return None
    return SpendGovernor(SpendBook(book_path(ledger_path)), load_spend_policy(policy_path),
                         project=project)

