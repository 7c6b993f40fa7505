"""Every config error message, each from a fixture under fixtures/config/, as exact strings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from watchdog import cli
from watchdog.config.load import load_config, until_restart
from watchdog.parsing.yamlfile import InvalidFile

ROOT = Path(__file__).resolve().parent.parent

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "config"
ENV = {"LLM_API_KEY": "k3y-from-env"}
KNOWN_KEYS = {
    "top": (
        "storage, listen, node, include, endpoints, probes, alerting, gpu, drift, baseline, "
        "max_concurrency, retention, heartbeat_url, web_config_file, otlp"
    ),
    "storage": "path, csv_dir, responses, excerpt_chars, report_every",
    "endpoint": (
        "name, api, base_url, model, headers, timeout_s, max_body_bytes, concurrency, slo, "
        "gpus, system_prompt, path, method, body_template, text_path, health_path, ready_path, "
        "server_metrics, metrics_url, tokenizer, warmup, reasoning_tokens"
    ),
}
APIS = "supported: openai-chat, openai-completions, sglang, nim, ollama, tgi, triton, http"
NOT_A_DURATION = "is not a duration; write e.g. 30s, 5m, 1h30m or 2d"
CHECKS = (
    "contains, not_contains, not_contains_canary, equals, regex, one_of, is_json, json_schema, "
    "min_length, max_length, max_ttft_s, max_e2e_s, min_tokens_per_s"
)


def problems(name: str, env: dict[str, str] | None = None, where: Path = FIXTURES) -> list[str]:
    """The problem lines for a fixture, with file names relative to `where`."""
    with pytest.raises(InvalidFile) as caught:
        load_config(where / name, env=ENV if env is None else env)
    return [str(p).replace(f"{where}/", "") for p in caught.value.problems]


CASES: dict[str, list[str]] = {
    "unknown-key-top.yaml": [
        f"unknown-key-top.yaml:4: endpoint: unknown key (allowed here: {KNOWN_KEYS['top']})",
    ],
    "unknown-key-storage.yaml": [
        "unknown-key-storage.yaml:3: storage.retention: "
        f"unknown key (allowed here: {KNOWN_KEYS['storage']})",
    ],
    "unknown-key-endpoint.yaml": [
        "unknown-key-endpoint.yaml:5: endpoints[0].timeout: "
        f"unknown key (allowed here: {KNOWN_KEYS['endpoint']})",
    ],
    "missing-key.yaml": [
        "missing-key.yaml:2: endpoints[0].base_url: required key is missing",
    ],
    "wrong-type.yaml": [
        "wrong-type.yaml:5: endpoints[0].headers: must be a valid dictionary",
        "wrong-type.yaml:6: endpoints[0].max_body_bytes: "
        "must be a valid integer, unable to parse string as an integer",
    ],
    "bad-enum.yaml": [
        "bad-enum.yaml:2: storage.responses: must be 'full', 'excerpt' or 'hash'",
    ],
    "unknown-api.yaml": [
        f"unknown-api.yaml:3: endpoints[0].api: unknown api 'openai'; {APIS}",
    ],
    "bad-base-url.yaml": [
        "bad-base-url.yaml:4: endpoints[0].base_url: "
        "base_url must start with http:// or https:// and name a host",
    ],
    "bad-duration.yaml": [
        f"bad-duration.yaml:5: endpoints[0].timeout_s: '1 minute' {NOT_A_DURATION}",
        "bad-duration.yaml:9: probes[0].every: '0s' must be longer than zero",
    ],
    "every-and-cron.yaml": [
        "every-and-cron.yaml:6: probes[0]: give `every` or `cron`, not both",
    ],
    "bad-cron.yaml": [
        "bad-cron.yaml:8: probes[0].cron: invalid cron expression '0 6 * *': "
        "expected 5 fields (minute hour day month weekday), got 4",
        "bad-cron.yaml:11: probes[1].cron: invalid cron expression '61 6 * * *': "
        "Error validating expression '61': the last value (61) is higher than the maximum "
        "value (59)",
    ],
    "unknown-timezone.yaml": [
        "unknown-timezone.yaml:9: probes[0].timezone: "
        "unknown time zone 'Europe/Atlantis'; use an IANA name",
    ],
    "unknown-endpoint.yaml": [
        "unknown-endpoint.yaml:9: probes[0].endpoint: "
        "no endpoint named 'vllm-b' (known: llama-b, vllm-a)",
    ],
    "missing-golden-set.yaml": [
        "missing-golden-set.yaml:7: probes[0].golden_set: no such file: golden/nope.yaml",
    ],
    "duplicate-endpoint.yaml": [
        "duplicate-endpoint.yaml:5: endpoints[1].name: duplicate endpoint 'a'",
    ],
    "duplicate-key.yaml": [
        "duplicate-key.yaml:5: endpoints[0].api: duplicate key",
    ],
    "invalid-yaml.yaml": [
        "invalid-yaml.yaml:5: invalid YAML: expected ',' or '}', but got '<scalar>'",
    ],
    "unknown-tag.yaml": [
        "unknown-tag.yaml:4: endpoints[0].base_url: "
        "invalid YAML value: could not determine a constructor for the tag '!Sub'",
        "unknown-tag.yaml:4: endpoints[0].base_url: must be a valid string",
    ],
    "not-a-mapping.yaml": [
        "not-a-mapping.yaml:1: the config must be a mapping of keys",
    ],
    "no-endpoints.yaml": [
        "no-endpoints.yaml:2: endpoints: no endpoints configured",
    ],
    # The included file's problems carry its own name and lines, even past its unknown key.
    "bad-include.yaml": [
        "bad-include.yaml:1: include[1]: no such file: included/missing.yaml",
        "included/bad-endpoint.yaml:5: endpoints[0].retries: "
        f"unknown key (allowed here: {KNOWN_KEYS['endpoint']})",
        "included/bad-endpoint.yaml:7: probes[0].endpoint: no endpoint named 'c' (known: a)",
        "included/bad-endpoint.yaml:9: storage: unknown key (allowed here: endpoints, probes)",
    ],
    # A golden set's problems are located in the golden set, all of them at once.
    "bad-golden-set.yaml": [
        f"golden/bad.yaml:7: prompts[0].checks[1]: unknown check 'contain'; known: {CHECKS}",
        "golden/bad.yaml:8: prompts[0].checks[2]: max_e2e_s needs a positive number",
        "golden/bad.yaml:11: prompts[1].messages[0].role: "
        "must be 'system', 'user', 'assistant' or 'developer'",
    ],
    "bad-gpu.yaml": [
        f"bad-gpu.yaml:2: gpu.interval: 'fast' {NOT_A_DURATION}",
        "bad-gpu.yaml:3: gpu.currency: 'euro' is not a currency code; write e.g. EUR or USD",
        "bad-gpu.yaml:4: gpu.leak.min_growth: 'lots' is not a size; write e.g. 512MiB or 2GiB",
        "bad-gpu.yaml:5: gpu.throttle.reasons: unknown reason(s) ['hot']; known: gpu_idle, "
        "applications_clocks_setting, sw_power_cap, hw_slowdown, sync_boost, sw_thermal_slowdown, "
        "hw_thermal_slowdown, hw_power_brake_slowdown, display_clock_setting",
        'bad-gpu.yaml:6: gpu.idle.max_utilization: 5 is not a ratio from 0 to 1; write e.g. 0.05 or "5%"',
        "bad-gpu.yaml:8: endpoints[0].gpus[1]: 'cuda:1' is not a GPU: give its UUID (GPU-…, from "
        "`mlops-watchdog gpu` or `nvidia-smi -L`) or its NVML index (0, 1, …)",
    ],
    "bad-alerting.yaml": [
        "bad-alerting.yaml:2: alerting.failure_threshold: must be greater than or equal to 1",
        "bad-alerting.yaml:3: alerting.severity: unknown alert kind(s) ['outage']; known: "
        "unreachable, timeout, http_error, bad_response, format, probe_error, latency_slo, canary_leak, not_serving, drift, gpu_vram_leak, "
        "gpu_vram_contention, gpu_idle_while_serving, gpu_throttling, gpu_hardware, gpu_missing",
        "bad-alerting.yaml:4: alerting.slack: give `webhook_url`, or `bot_token` with `channel`",
        "bad-alerting.yaml:9: alerting.maintenance[1].cron: invalid cron expression '0 25 * * *': "
        "Error validating expression '25': the last value (25) is higher than the maximum value (23)",
        f"bad-alerting.yaml:11: endpoints[0].slo.e2e_s: 'fast' {NOT_A_DURATION}",
    ],
    # At the default alpha, 3 against 3 can never be significant: a real swap read `ok`.
    "bad-drift.yaml": [
        "bad-drift.yaml:2: drift.min_samples: 3 samples on each side can never show a drift at "
        "alpha 0.01 (the smallest p-value of a rank test on 3 against 3 is 0.1), so a real "
        "change would read ok: use at least 5",
    ],
    "maintenance-unknown-endpoint.yaml": [
        "maintenance-unknown-endpoint.yaml:3: alerting.maintenance[0].endpoints: no endpoint named 'ghost'",
    ],
    # One pass reports everything: the operator fixes the file once.
    "many-errors.yaml": [
        "many-errors.yaml:2: storage.responses: must be 'full', 'excerpt' or 'hash'",
        f"many-errors.yaml:3: storage.colour: unknown key (allowed here: {KNOWN_KEYS['storage']})",
        f"many-errors.yaml:8: endpoints[0].timeout_s: 'soon' {NOT_A_DURATION}",
        f"many-errors.yaml:10: endpoints[1].api: unknown api 'grpc'; {APIS}",
        "many-errors.yaml:11: endpoints[1].base_url: "
        "base_url must start with http:// or https:// and name a host",
        "many-errors.yaml:13: probes[0].endpoint: no endpoint named 'c' (known: none defined)",
        "many-errors.yaml:18: probes[1].timezone: "
        "unknown time zone 'Mars/Olympus'; use an IANA name",
    ],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_error_message(name: str) -> None:
    assert problems(name) == CASES[name]


def test_every_bad_fixture_has_a_test() -> None:
    tested = set(CASES) | {"valid.yaml", "missing-env.yaml", "secret.yaml"}
    assert {p.name for p in FIXTURES.glob("*.yaml")} == tested


def test_missing_environment_variable() -> None:
    assert problems("missing-env.yaml", env={}) == [
        "missing-env.yaml:5: endpoints[0].headers.Authorization: "
        "environment variable LLM_API_KEY is not set",
    ]


def test_secret_values_are_never_echoed() -> None:
    secret = "s3cr3t-value"
    with pytest.raises(InvalidFile) as caught:
        load_config(FIXTURES / "secret.yaml", env={"SECRET_TOKEN": secret})
    lines = [str(p).replace(f"{FIXTURES}/", "") for p in caught.value.problems]
    assert lines == [
        f"secret.yaml:4: endpoints[0].api: unknown api 'openai-***'; {APIS}",
        f"secret.yaml:7: endpoints[0].timeout_s: '***' {NOT_A_DURATION}",
        "secret.yaml:8: endpoints[0].max_body_bytes: "
        "must be a valid integer, unable to parse string as an integer",
    ]
    assert secret not in str(caught.value)
    assert all(secret not in p.message and secret not in p.key for p in caught.value.problems)


def test_a_control_character_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("endpoints:\n  - name: a\n    api: open\x07ai\n")
    assert problems("config.yaml", where=tmp_path) == [
        "config.yaml:3: invalid YAML: character #x0007: special characters are not allowed",
    ]


def test_a_bad_typed_scalar_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "endpoints:\n"
        "  - name: a\n"
        "    api: openai-chat\n"
        "    base_url: http://127.0.0.1:8080\n"
        "    concurrency: !!int four\n"
    )
    assert problems("config.yaml", where=tmp_path) == [
        "config.yaml:5: endpoints[0].concurrency: "
        "invalid YAML value: invalid literal for int() with base 10: 'four'",
        "config.yaml:5: endpoints[0].concurrency: must be a valid integer",
    ]


def test_union_members_do_not_leak_into_the_key_path(tmp_path: Path) -> None:
    (tmp_path / "set.yaml").write_text("name: s\nversion: [3]\nprompts:\n  - {id: a, prompt: hi}\n")
    (tmp_path / "config.yaml").write_text(
        "endpoints: [{name: a, api: openai-chat, base_url: 'http://127.0.0.1:8080'}]\n"
        "probes: [{endpoint: a, golden_set: set.yaml}]\n"
    )
    assert problems("config.yaml", where=tmp_path) == [
        "set.yaml:2: version: must be a valid integer",
        "set.yaml:2: version: must be a valid string",
    ]


def test_valid_config_with_an_include() -> None:
    config = load_config(FIXTURES / "valid.yaml", env=ENV)
    assert list(config.endpoints) == ["vllm-a", "llama-b"]
    vllm, llama = config.endpoints["vllm-a"], config.endpoints["llama-b"]
    assert vllm.base_url == "http://127.0.0.1:8000"  # the trailing slash is dropped
    assert vllm.headers == {"Authorization": "Bearer k3y-from-env"}
    assert (vllm.timeout_s, vllm.max_body_bytes, vllm.concurrency) == (60.0, 1_000_000, 2)
    assert (llama.api, llama.timeout_s, llama.headers) == ("openai-completions", 60.0, {})
    assert config.secrets == {"k3y-from-env"}
    assert config.storage.responses == "hash"
    assert config.storage.report_every == 900.0
    assert config.resolve(config.storage.path) == FIXTURES / "data" / "watchdog.db"
    every, cron = config.probes
    assert (every.every, every.jitter, every.interval_s, every.stream) == (90.0, 5.0, 90.0, True)
    assert (cron.cron, cron.timezone, cron.stream) == ("0 6 * * 1-5", "Europe/Berlin", False)
    assert sorted(config.golden_sets) == ["golden/valid.yaml", "golden_sets/default.yaml"]
    assert len(config.golden_sets["golden_sets/default.yaml"].prompts) == 5


def test_check_reports_every_problem_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    path = FIXTURES / "many-errors.yaml"
    assert cli.main(["check", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = [line.replace(f"{FIXTURES}/", "") for line in err.splitlines()]
    assert lines == [
        *CASES["many-errors.yaml"],
        "mlops-watchdog: many-errors.yaml: 7 problem(s); nothing was run",
    ]


def test_check_never_prints_a_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t-value")
    assert cli.main(["check", "--config", str(FIXTURES / "secret.yaml")]) == 2
    out, err = capsys.readouterr()
    assert "unknown api 'openai-***'" in err
    assert "s3cr3t-value" not in out + err


def test_check_accepts_a_valid_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLM_API_KEY", "k")
    path = FIXTURES / "valid.yaml"
    assert cli.main(["check", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: OK: 2 endpoint(s), 2 probe(s), 2 golden set(s)\n"
    assert err == ""


def test_init_writes_a_config_that_check_accepts_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "etc"
    assert cli.main(["init", str(target)]) == 0
    capsys.readouterr()
    assert cli.main(["check", "--config", str(target / "config.yaml")]) == 0
    out, err = capsys.readouterr()
    assert out == f"{target / 'config.yaml'}: OK: 1 endpoint(s), 1 probe(s), 1 golden set(s)\n"
    assert err == ""


@pytest.mark.parametrize("example", sorted((ROOT / "probes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_probe_example_is_a_valid_config(tmp_path: Path, example: Path) -> None:
    """An operator copies one, sets a URL, and `check` passes."""
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / example.name).write_text(example.read_text())
    (tmp_path / "golden_sets").mkdir()
    shutil.copy(ROOT / "golden_sets" / "default.yaml", tmp_path / "golden_sets" / "default.yaml")
    (tmp_path / "config.yaml").write_text("include: [probes/*.yaml]\n")
    config = load_config(tmp_path / "config.yaml", env={"VLLM_API_KEY": "k"})
    assert len(config.endpoints) == 1 and len(config.probes) == 1


def test_an_http_body_template_that_is_not_json_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "endpoints:\n"
        "  - name: svc\n"
        "    api: http\n"
        "    base_url: http://127.0.0.1:9\n"
        "    path: /predict\n"
        "    body_template: '{\"q\": {{ prompt }}}'\n"
        "    text_path: output.text\n"
    )
    with pytest.raises(InvalidFile) as caught:
        load_config(tmp_path / "config.yaml", env={})
    (problem,) = caught.value.problems
    assert "config.yaml:2: endpoints[0]: body_template does not render to JSON" in str(problem)
    assert str(problem).endswith("write values as {{ prompt | tojson }}")


def test_a_reload_keeps_every_restart_key_and_takes_the_rest(tmp_path: Path) -> None:
    """What Daemon.reload applies: the RESTART keys keep their old values and are named as
    changed; everything else is the new file's."""
    (tmp_path / "web.yml").write_text("http_server_config: {}\n")
    (tmp_path / "web2.yml").write_text("http_server_config: {headers: {X-Frame-Options: deny}}\n")

    def write(**values: str) -> Path:
        v = {
            "db": "a.db",
            "listen": "127.0.0.1:9464",
            "node": "n1",
            "web": "web.yml",
            "interval": "5s",
            "every": "1h",
            "threshold": "3",
            **values,
        }
        path = tmp_path / "config.yaml"
        path.write_text(
            f"""
storage: {{path: {v["db"]}}}
listen: "{v["listen"]}"
node: {v["node"]}
web_config_file: {v["web"]}
gpu: {{interval: {v["interval"]}}}
retention: {{every: {v["every"]}, raw_days: {v.get("days", "14")}}}
alerting: {{failure_threshold: {v["threshold"]}}}
endpoints: [{{name: e, api: openai-chat, base_url: "http://h:1"}}]
"""
        )
        return path

    old = load_config(write(), env={})
    new = load_config(
        write(
            db="b.db",
            listen=":9465",
            node="n2",
            web="web2.yml",
            interval="1s",
            every="2h",
            threshold="5",
            days="7",
        ),
        env={},
    )
    kept, changed = until_restart(old, new)
    assert changed == ["storage", "listen", "node", "web_config_file", "gpu", "retention.every"]
    assert (kept.storage, kept.listen, kept.node) == (old.storage, old.listen, old.node)
    assert (kept.web_config_file, kept.web_config) == (old.web_config_file, old.web_config)
    assert kept.gpu == old.gpu and kept.retention.every == old.retention.every
    assert kept.retention.raw_days == 7 and kept.alerting.failure_threshold == 5
    assert until_restart(old, old)[1] == []
