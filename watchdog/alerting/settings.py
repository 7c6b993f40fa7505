"""The `alerting:` config section and per-endpoint latency SLOs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from watchdog.alerting.kinds import KINDS
from watchdog.parsing.fields import Seconds, check_timezone, http_url
from watchdog.parsing.validate import Strict
from watchdog.runtime.scheduler import check_cron

Severity = Literal["critical", "warning", "info"]
# The runbooks shipped in this repository, docs/runbooks/<kind>.md.
RUNBOOKS = "https://github.com/mlops-watchdog/mlops-watchdog/blob/main/docs/runbooks/"


class Slack(Strict):
    """Where pages go in Slack: an incoming webhook, or a bot token and a channel (which threads
    reminders and the resolved message under the page)."""

    webhook_url: str | None = None
    """An incoming webhook's URL, e.g. `${SLACK_WEBHOOK_URL}`. Give this or `bot_token`, not both.
    A webhook cannot thread replies."""
    bot_token: str | None = None
    """A bot token (`xoxb-…`) with `chat:write`, e.g. `${SLACK_BOT_TOKEN}`; needs `channel`.
    Threads reminders and the resolved message under the page, and never sends a page twice."""
    channel: str | None = None
    """With `bot_token`: the channel to post to, best by its ID (`C0123ABCDEF`, from the channel's
    details); a `#name` works once a page has gone out."""
    api_url: str = "https://slack.com/api/"
    """The Slack Web API the bot token is used with. Change it only for a proxy or a test
    server."""
    timeout_s: Seconds = 10.0
    """The deadline of one request to Slack; a failed send waits in the outbox and is retried."""

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
    """When each window starts: a crontab line (minute hour day month weekday; weekday 0 is
    Sunday) in `timezone`, e.g. `"0 2 * * 0"`."""
    duration: Seconds
    """How long each window lasts."""
    timezone: str = "UTC"
    """The IANA time zone `cron` runs in, e.g. `Europe/Berlin`."""
    endpoints: list[str] = []
    """The names of the endpoints the window covers; empty: every endpoint."""
    reason: str = ""
    """Why, for whoever reads the silenced alerts."""

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        check_cron(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_timezone(value)


class AlertmanagerPush(Strict):
    """The daemon's own alerts, pushed to Alertmanager's v2 API as Prometheus pushes its rules'."""

    urls: list[str] = Field(min_length=1)
    """Alertmanager's URL, each member of an HA pair, as Prometheus sends to each: they
    deduplicate between them."""
    resend_every: Seconds = Field(60.0, ge=1)
    """How often firing alerts are sent again, as Prometheus does; keep it well below
    Alertmanager's `resolve_timeout`."""
    timeout_s: Seconds = Field(10.0, gt=0)
    """The deadline of one push to one Alertmanager."""

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        return [str(http_url(url, "each of alerting.alertmanager.urls")) for url in value]


class Alerting(Strict):
    """When an endpoint's or a GPU's trouble pages, who sends the page, and where it goes. Each
    endpoint has one alert per kind of failure."""

    failure_threshold: int = Field(3, ge=1, le=1000)
    """Failing probe runs (or GPU samples) in a row before an alert fires. Higher: fewer pages for
    blips, later pages for outages."""
    success_threshold: int = Field(2, ge=1, le=1000)
    """Good probe runs (or GPU samples) in a row before a firing alert is resolved."""
    remind_every: Seconds = 4 * 3600.0
    """How often a reminder is sent while an alert keeps firing (threaded under the page with a
    bot token)."""
    grafana_url: str | None = None
    """A Grafana dashboard's URL: pages get an "Open in Grafana" button to it, with
    `var-endpoint` set to the endpoint."""
    runbook_base_url: str = RUNBOOKS
    """Where docs/runbooks/<kind>.md are served: every page and pushed alert links its runbook.
    Point it at your own copy to edit them."""
    severity: dict[str, Severity] = {}
    """Per alert kind, a severity other than its default (`critical`, `warning` or `info`), e.g.
    `{latency_slo: critical}`."""
    templates_dir: str | None = None
    """A folder, relative to the config file, of your own Block Kit templates (`*.json.j2`) in
    place of the shipped ones; `mlops-watchdog check` renders them."""
    maintenance: list[Maintenance] = []
    """Recurring windows in which alerts are recorded, not sent."""
    route: Literal["slack", "alertmanager", "both"] = "slack"
    """Who pages: the daemon itself through `slack`, Prometheus' rules through `alertmanager`
    (the daemon sends nothing to Slack), or `both`."""
    slack: Slack | None = None
    """Where the daemon's pages go; without it, alerts are recorded and exported, not sent."""
    alertmanager: AlertmanagerPush | None = None
    """With `route: alertmanager` or `both`: also push the daemon's own alerts to Alertmanager."""

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
        return f"{http_url(value, 'alerting.runbook_base_url')}/"

    def runbook(self, kind: str) -> str:
        return f"{self.runbook_base_url}{kind}.md"

    @field_validator("severity")
    @classmethod
    def _kinds(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown alert kind(s) {unknown}; known: {', '.join(KINDS)}")
        return value
