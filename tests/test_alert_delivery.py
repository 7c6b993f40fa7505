"""Pages through the real slack-sdk to a fake Slack: outages, Retry-After, threads, exactly once."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests.conftest import FakeClock
from tests.fakeslack import FakeSlack
from watchdog.alerting.notifiers.slack import BotNotifier, WebhookNotifier
from watchdog.config.load import Config, load_config
from watchdog.daemon import Daemon
from watchdog.store import Store

GOLDEN = """
name: one
prompts:
  - id: capital
    prompt: "Capital of France?"
    checks: [{contains: Paris}]
"""


class Endpoint:
    """An in-process OpenAI endpoint (MockTransport) that is up or down as the test says."""

    def __init__(self) -> None:
        self.up = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("[Errno 111] Connection refused")
        body = {"choices": [{"message": {"content": "Paris"}, "finish_reason": "stop"}]}
        return httpx.Response(
            200,
            headers={"content-type": "application/json"},
            stream=httpx.ByteStream(json.dumps(body).encode()),
        )


def write_config(tmp_path: Path, alerting: str) -> Path:
    """One endpoint and one golden set; `alerting` is the lines under `alerting:`, indented."""
    (tmp_path / "one.yaml").write_text(GOLDEN)
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
storage: {{path: w.db, csv_dir: reports}}
node: gpu-node-07
alerting:
  failure_threshold: 3
  success_threshold: 2
{alerting}
endpoints:
  - {{name: vllm-a, api: openai-chat, base_url: "http://llm.test", model: m}}
probes:
  - {{endpoint: vllm-a, golden_set: one.yaml, stream: false}}
"""
    )
    path.chmod(0o600)  # it holds the webhook URL or bot token
    return path


def make_config(tmp_path: Path, slack: str) -> Config:
    alerting = f"""  remind_every: 1h
  grafana_url: https://grafana.example/d/llm
  slack: {slack}
"""
    return load_config(write_config(tmp_path, alerting), env={})


class Rig:
    def __init__(self, tmp_path: Path, slack: FakeSlack, bot: bool):
        settings = (
            f'{{bot_token: "{slack.token}", channel: "#oncall", api_url: "{slack.api_url}", timeout_s: 1}}'
            if bot
            else f'{{webhook_url: "{slack.webhook_url}", timeout_s: 1}}'
        )
        self.config = make_config(tmp_path, settings)
        self.clock = FakeClock()
        self.endpoint = Endpoint()
        self.store = Store.open(tmp_path / "w.db")
        self.notifier = (
            BotNotifier(slack.token, "#oncall", base_url=slack.api_url, timeout_s=1)
            if bot
            else WebhookNotifier(slack.webhook_url, timeout_s=1)
        )
        self.registry = CollectorRegistry()

    async def __aenter__(self) -> Rig:
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self.endpoint.handle))
        self.daemon = Daemon(
            self.config, self.client, self.store, self.clock, self.notifier, self.registry
        )
        assert self.daemon.sender is not None
        self.sender = self.daemon.sender
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        self.store.close()

    async def minute(self, runs: int = 1) -> None:
        """Probe once a minute, then let the sender do what is due."""
        for _ in range(runs):
            self.clock.advance(60)
            await self.daemon.probe_once(self.config.probes[0])
            await self.sender.deliver_due()

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


async def test_a_long_slack_outage_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    with FakeSlack() as slack:
        async with Rig(tmp_path, slack, bot=False) as rig:
            slack.down = True
            await rig.minute(3)  # third consecutive failure: firing queued
            assert rig.metric("mlops_watchdog_outbox_pending") == 1
            assert (
                rig.metric("mlops_watchdog_alerts_firing", endpoint="vllm-a", kind="unreachable")
                == 1
            )
            await rig.minute(40)  # Slack answers 500 for forty minutes
            attempts = slack.attempts
            assert 3 <= attempts <= 15, attempts  # backed off, not hammered
            assert slack.accepted == []
            slack.down = False
            await rig.minute(12)  # backoff is capped at 10 minutes
            assert [m["text"] for m in slack.accepted] == [
                "🔴 vllm-a on gpu-node-07: endpoint unreachable (3 runs in a row)"
            ]
            assert rig.metric("mlops_watchdog_outbox_pending") == 0
            assert rig.metric("mlops_watchdog_notifications_total", result="sent") == 1
            assert (rig.metric("mlops_watchdog_notifications_total", result="retried") or 0) >= 3

            rig.endpoint.up = True
            await rig.minute(3)
            texts = [m["text"] for m in slack.accepted]
            assert len(texts) == 2 and texts[1].startswith(
                "✅ resolved: vllm-a on gpu-node-07: endpoint unreachable"
            )
            assert (
                rig.metric("mlops_watchdog_alerts_firing", endpoint="vllm-a", kind="unreachable")
                == 0
            )


async def test_retry_after_is_honoured_and_replies_thread(tmp_path: Path) -> None:
    with FakeSlack() as slack:
        async with Rig(tmp_path, slack, bot=True) as rig:
            slack.script(("status", 429, {"Retry-After": "150"}))
            await rig.minute(3)
            assert slack.accepted == [] and slack.attempts == 1
            await rig.minute(2)  # 120 s later: still inside Retry-After
            assert slack.attempts == 1
            await rig.minute(1)
            (firing,) = slack.accepted
            assert firing["thread_ts"] is None and firing["via"] == "bot"
            rig.endpoint.up = True
            await rig.minute(2)
            firing, resolved = slack.accepted
            assert resolved["thread_ts"] == firing["ts"]


async def test_reminders_while_firing_thread_under_the_page(tmp_path: Path) -> None:
    with FakeSlack() as slack:
        async with Rig(tmp_path, slack, bot=True) as rig:
            await rig.minute(3 + 61)
            firing, reminder = slack.accepted
            assert reminder["text"].startswith("⏰ still failing: vllm-a")
            assert reminder["thread_ts"] == firing["ts"]


async def test_silenced_alert_is_recorded_not_sent(tmp_path: Path) -> None:
    from watchdog.alerting import silences

    with FakeSlack() as slack:
        async with Rig(tmp_path, slack, bot=False) as rig:
            silences.add(rig.store.db, "vllm-a", "", 3600, "planned upgrade", rig.clock.now())
            await rig.minute(5)
            assert slack.accepted == []
            (row,) = rig.store.db.query("select status, facts from outbox")
            assert row["status"] == "suppressed"
            assert "silenced until" in json.loads(row["facts"])["quiet"]
            assert rig.metric("mlops_watchdog_notifications_total", result="suppressed") == 1
            await rig.minute(60)  # the silence ends while the incident goes on: now it pages
            assert len(slack.accepted) == 1 and slack.accepted[0]["text"].startswith("🔴 vllm-a")


async def test_permanent_slack_errors_give_up_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeSlack() as slack:
        async with Rig(tmp_path, slack, bot=True) as rig:
            slack.script(("error", "channel_not_found"))
            await rig.minute(4)
            (row,) = rig.store.db.query("select status, last_error_class from outbox")
            assert (row["status"], row["last_error_class"]) == ("failed", "rejected")
            assert "giving up: slack rejected" in caplog.text


async def test_a_crash_between_send_and_commit_does_not_page_twice(tmp_path: Path) -> None:
    with FakeSlack() as slack:
        async with Rig(tmp_path, slack, bot=True) as rig:
            await rig.minute(3)
            assert len(slack.accepted) == 1
            # As if the process died after Slack took the page but before the commit said so.
            rig.store.db.execute("update outbox set status = 'sending', ts = null")
            await rig.sender.recover()
            (row,) = rig.store.db.query("select status, ts from outbox")
            assert row == {"status": "sent", "ts": slack.accepted[0]["ts"]}
            await rig.sender.deliver_due()
            assert len(slack.accepted) == 1


async def test_a_crash_before_slack_answered_sends_once_after_restart(tmp_path: Path) -> None:
    with FakeSlack() as slack:
        async with Rig(tmp_path, slack, bot=True) as rig:
            slack.down = True
            await rig.minute(3)
            rig.store.db.execute("update outbox set status = 'sending'")  # died mid-request
            slack.down = False
            await rig.sender.recover()
            await rig.sender.deliver_due()
            assert len(slack.accepted) == 1
            assert b"hooks" not in generate_latest(rig.registry)


async def test_a_crash_after_a_threaded_reply_does_not_resolve_twice(tmp_path: Path) -> None:
    """A resolved page is a thread reply, not in channel history: recovery looks in the thread."""
    with FakeSlack() as slack:
        async with Rig(tmp_path, slack, bot=True) as rig:
            await rig.minute(3)
            rig.endpoint.up = True
            await rig.minute(2)
            firing, resolved = slack.accepted
            assert resolved["thread_ts"] == firing["ts"]
            rig.store.db.execute(
                "update outbox set status = 'sending', ts = null where event = 'resolved'"
            )
            await rig.sender.recover()
            await rig.sender.deliver_due()
            assert len(slack.accepted) == 2
            (row,) = rig.store.db.query("select status, ts from outbox where event = 'resolved'")
            assert row == {"status": "sent", "ts": resolved["ts"]}


async def test_a_steady_state_is_written_once_and_a_change_at_once(tmp_path: Path) -> None:
    """At a probe every second, rewriting every kind's unchanged state was most of the SQL."""
    with FakeSlack() as slack:
        async with Rig(tmp_path, slack, bot=False) as rig:

            def written() -> dict[str, tuple[str, str]]:
                rows = rig.store.db.query("select kind, state, updated_at from alerts")
                return {r["kind"]: (r["state"], r["updated_at"]) for r in rows}

            rig.endpoint.up = True
            await rig.minute()
            first = written()
            assert first and {state for state, _ in first.values()} == {"ok"}
            await rig.minute(3)
            assert written() == first
            rig.endpoint.up = False
            await rig.minute()
            now = written()
            assert now["unreachable"][0] == "pending" and now["unreachable"] != first["unreachable"]
