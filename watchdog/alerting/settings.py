"""The `alerting:` config section and per-endpoint latency SLOs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from watchdog.durations import parse_duration
from watchdog.validate import Strict

Seconds = Annotated[float, BeforeValidator(parse_duration)]
Severity = Literal["critical", "warning", "info"]
# The runbooks shipped in this repository, docs/runbooks/<kind>.md.
RUNBOOKS = "https://github.com/mlops-watchdog/mlops-watchdog/blob/main/docs/runbooks/"


class Slo(Strict):
    """Latency objectives: the median of a probe run's answers must stay within them."""

    ttft_s: Seconds | None = None
    e2e_s: Seconds | None = None


class Slack(Strict):
    webhook_url: str | None = None
    bot_token: str | None = None
    channel: str | None = None
    api_url: str = "https://slack.com/api/"
    timeout_s: Seconds = 10.0

    @model_validator(mode="after")
    def _one_way(self) -> Slack:
        if bool(self.webhook_url) == bool(self.bot_token):
            raise ValueError("give `webhook_url`, or `bot_token` with `channel`")
        if self.bot_token and not self.channel:
            raise ValueError("`bot_token` needs a `channel`")
        if self.webhook_url and not self.webhook_url.startswith(("https://", "http://")):
            raise ValueError("webhook_url must be an http(s) URL")
        return self


class Maintenance(Strict):
    """A recurring window, e.g. every Sunday 02:00 Berlin time for 2h: alerts are recorded, not sent."""

    cron: str
    duration: Seconds
    timezone: str = "UTC"
    endpoints: list[str] = []  # empty: every endpoint
    reason: str = ""

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from watchdog.scheduler import check_cron

        check_cron(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from watchdog.config import check_timezone

        return check_timezone(value)


class AlertmanagerPush(Strict):
    """The daemon's own alerts, pushed to Alertmanager's v2 API as Prometheus pushes its rules'."""

    # Every member of an HA pair, as Prometheus sends to each: they deduplicate between them.
    urls: list[str] = Field(min_length=1)
    resend_every: Seconds = Field(60.0, ge=1)  # firing alerts are sent again, like Prometheus
    timeout_s: Seconds = Field(10.0, gt=0)

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        from watchdog.config import http_url

        return [str(http_url(url, "each of alerting.alertmanager.urls")) for url in value]


class Alerting(Strict):
    failure_threshold: int = Field(3, ge=1, le=1000)
    success_threshold: int = Field(2, ge=1, le=1000)
    remind_every: Seconds = 4 * 3600.0
    grafana_url: str | None = None
    # Where docs/runbooks/<kind>.md are served: every page and pushed alert links its runbook.
    runbook_base_url: str = RUNBOOKS
    severity: dict[str, Severity] = {}
    templates_dir: str | None = None
    maintenance: list[Maintenance] = []
    # Who pages: the daemon itself (slack), Prometheus' rules through Alertmanager, or both.
    route: Literal["slack", "alertmanager", "both"] = "slack"
    slack: Slack | None = None
    alertmanager: AlertmanagerPush | None = None

    @model_validator(mode="after")
    def _route(self) -> Alerting:
        if self.route == "alertmanager" and self.slack is not None:
            raise ValueError(
                "route: alertmanager leaves Slack to Alertmanager: remove `slack`, or set "
                "route: both"
            )
        if self.route == "slack" and self.alertmanager is not None:
            raise ValueError("`alertmanager` pushes only with route: alertmanager or both")
        if self.route == "both" and (self.slack is None or self.alertmanager is None):
            raise ValueError("route: both needs `slack` and `alertmanager`")
        return self

    @field_validator("runbook_base_url")
    @classmethod
    def _runbooks(cls, value: str) -> str:
        from watchdog.config import http_url

        return f"{http_url(value, 'alerting.runbook_base_url')}/"

    def runbook(self, kind: str) -> str:
        return f"{self.runbook_base_url}{kind}.md"

    @field_validator("severity")
    @classmethod
    def _kinds(cls, value: dict[str, str]) -> dict[str, str]:
        from watchdog.alerting.kinds import KINDS

        unknown = sorted(set(value) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown alert kind(s) {unknown}; known: {', '.join(KINDS)}")
        return value
