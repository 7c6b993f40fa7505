"""The CLI as people meet it: one-line errors, exit codes, the `once` table, the name check."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import types
from datetime import UTC, datetime
from pathlib import Path

import pynvml
import pytest

from tests.fakenvml import UUID, FakeNvml
from tests.peers import LlamaServer
from watchdog import cli
from watchdog.reports import table
from watchdog.result import Answer, CheckOutcome, ProbeResult


def test_our_package_passes_the_name_check() -> None:
    cli.ensure_ours()


def test_pypi_watchdog_is_detected(tmp_path: Path) -> None:
    (tmp_path / "observers").mkdir()
    (tmp_path / "__init__.py").write_text("")
    foreign = types.ModuleType("watchdog")
    foreign.__file__ = str(tmp_path / "__init__.py")
    with pytest.raises(cli.Exit, match=r"not mlops-watchdog's .* own venv"):
        cli.ensure_ours(foreign)
    foreign.DISTRIBUTION = "mlops-watchdog"  # type: ignore[attr-defined]
    with pytest.raises(cli.Exit):  # ours, but mixed with the other package's modules
        cli.ensure_ours(foreign)


def test_missing_config_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["once", "--config", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nope.yaml'}:0: cannot read: No such file or directory" in err
    assert "Traceback" not in err


def test_report_rejects_a_bad_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["init", str(tmp_path)]) == 0
    assert (
        cli.main(["report", "--config", str(tmp_path / "config.yaml"), "--since", "yesterday"]) == 2
    )
    assert "--since: 'yesterday' is not a duration" in capsys.readouterr().err


def test_init_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["init", str(tmp_path)]) == 0
    assert cli.main(["init", str(tmp_path)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err


def test_report_on_an_empty_database_writes_a_header(tmp_path: Path) -> None:
    cli.main(["init", str(tmp_path)])
    assert cli.main(["report", "--config", str(tmp_path / "config.yaml")]) == 0
    header = (tmp_path / "reports" / "health.csv").read_text().splitlines()[0]
    assert header.startswith("endpoint,golden_set,prompt_id,runs,pass_rate,format_accuracy")


def make(prompt_id: str, answer: Answer, checks: list[CheckOutcome]) -> ProbeResult:
    return ProbeResult(
        "vllm-a",
        prompt_id,
        "default",
        "h",
        datetime(2026, 1, 1, tzinfo=UTC),
        True,
        answer,
        checks,
        "f",
    )


def test_dashboards_build_writes_and_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "boards"
    assert cli.main(["dashboards", "build", "--out", str(out)]) == 0
    committed = Path(__file__).resolve().parents[1] / "dashboards"
    written = sorted(p.name for p in out.glob("*.json"))
    assert written == sorted(p.name for p in committed.glob("*.json"))
    assert cli.main(["dashboards", "build", "--check", "--out", str(committed)]) == 0
    (out / written[0]).write_text("{}")
    assert cli.main(["dashboards", "build", "--check", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{out / written[0]}: differs" in err and "1 stale dashboard(s)" in err


def test_dashboards_build_without_the_sdk_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    import watchdog.dashboards

    for name in [m for m in sys.modules if m.startswith("grafana_foundation_sdk.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "grafana_foundation_sdk", None)  # as if not installed
    for name in [m for m in sys.modules if m.startswith("watchdog.dashboards.")]:
        monkeypatch.delitem(sys.modules, name)
        monkeypatch.delattr(watchdog.dashboards, name.rsplit(".", 1)[1], raising=False)
    assert cli.main(["dashboards", "build", "--check"]) == 2
    assert "pip install 'mlops-watchdog[dashboards]'" in capsys.readouterr().err


def test_gpu_without_a_driver_says_so_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeNvml()
    fake.init_error = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    monkeypatch.setattr("watchdog.gpu.nvml.pynvml", fake)
    assert cli.main(["gpu"]) == 1
    out = capsys.readouterr()
    assert out.out == "" and "Traceback" not in out.err
    assert out.err.strip().splitlines() == [
        "mlops-watchdog: no GPU telemetry: NVML Shared Library Not Found (NVML error 12); this "
        "needs an NVIDIA driver (nvidia-smi should work) and read access to /dev/nvidia*"
    ]


def test_gpu_json_is_one_object_per_gpu(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("watchdog.gpu.nvml.pynvml", FakeNvml())
    assert cli.main(["gpu", "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    gpu = json.loads(line)
    assert gpu["uuid"] == UUID and gpu["driver"] == "580.159.04"
    assert gpu["unsupported"] == ["fan", "retired_pages_dbe"] and "fan_ratio" not in gpu
    assert gpu["clock_events"] == ["gpu_idle"] and gpu["processes"] == []


def test_table_golden() -> None:
    ok = Answer(
        text="Paris",
        ttft_s=0.0421,
        e2e_s=0.19,
        itl_s=[0.008, 0.009],
        output_tokens=8,
        token_source="usage",
    )
    slow = Answer(
        text="Lyon", ttft_s=1.5, e2e_s=12.25, itl_s=[0.2], output_tokens=3, token_source="estimate"
    )
    down = Answer(
        error_class="connect",
        error_detail="connection failed before a response: All connection attempts failed",
        e2e_s=0.002,
    )
    results = [
        make("capital-france", ok, [CheckOutcome("contains", True, "ok")]),
        make(
            "capital-italy",
            slow,
            [
                CheckOutcome(
                    "contains", False, "expected all of ['Rome'], missing ['Rome'] in 'Lyon'"
                )
            ],
        ),
        make("arithmetic", down, []),
    ]
    assert table.render(results, width=200) == "\n".join(
        [
            "ENDPOINT  PROMPT          RESULT        TTFT   E2E     ITL P50  TOKENS  TOK/S  DETAIL",
            "vllm-a    capital-france  ok            42ms   190ms   8ms      8       47.3",
            "vllm-a    capital-italy   check_failed  1.50s  12.25s  200ms    3~      0.2    contains: expected all of ['Rome'], missing ['Rome'] in 'Lyon'",
            "vllm-a    arithmetic      connect       -      2ms     -        -       -      connection failed before a response: All connection attempts failed",
            "1/3 ok",
        ]
    )


def test_every_command_is_documented_in_the_readme() -> None:
    """A command an operator cannot find in the README does not exist for them."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("## Commands", 1)[1].split("\n## ", 1)[0]
    commands = cli.parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    missing = [name for name in commands if f"`{name}" not in table]
    assert not missing, f"not in the README's Commands table: {missing}"


def test_config_before_an_action_is_kept() -> None:
    """`silence --config X add` once fell back to /etc: the action's copy reset it."""
    p = cli.parser()
    before = p.parse_args(["silence", "--config", "x.yaml", "add", "--endpoint", "e", *WHY])
    after = p.parse_args(["silence", "add", "--config", "y.yaml", "--endpoint", "e", *WHY])
    assert (before.config, after.config) == ("x.yaml", "y.yaml")
    assert p.parse_args(["baseline", "--config", "z.yaml", "list"]).config == "z.yaml"
    assert p.parse_args(["silence", "list"]).config is None


WHY = ["--for", "1h", "--reason", "test"]


def test_once_endpoint_runs_only_that_endpoints_probes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "storage: {path: w.db, csv_dir: reports}\n"
        "endpoints:\n"
        "  - {name: a, api: openai-chat, base_url: 'http://127.0.0.1:9', timeout_s: 2}\n"
        "  - {name: b, api: openai-chat, base_url: 'http://127.0.0.1:9', timeout_s: 2}\n"
        "probes:\n"
        "  - {endpoint: a, golden_set: default, stream: false}\n"
        "  - {endpoint: b, golden_set: default, stream: false}\n"
    )
    args = ["once", "--config", str(config), "--json", "--no-store"]
    assert cli.main([*args, "--endpoint", "b"]) == 1  # nothing listens on port 9
    endpoints = {json.loads(line)["endpoint"] for line in capsys.readouterr().out.splitlines()}
    assert endpoints == {"b"}
    assert cli.main([*args, "--endpoint", "c"]) == 2
    assert "--endpoint: no endpoint c in" in capsys.readouterr().err


def test_the_starter_config_passes_check_with_every_section_uncommented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["init", str(tmp_path)]) == 0
    config = tmp_path / "config.yaml"
    text = config.read_text()
    # "# gpu:" and "#   price_per_kwh:" become "gpu:" and "  price_per_kwh:"
    opened = re.sub(r"^# ( *[a-z_]+:)", r"\1", text, flags=re.M)
    assert "slack:" in opened and "\nnode:" in opened and opened != text
    config.write_text(opened)
    config.chmod(0o600)  # it names a secret now
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.test/T/B/x")
    assert cli.main(["check", "--config", str(config)]) == 0, capsys.readouterr().err


def test_a_closed_pipe_ends_quietly(llama_server: LlamaServer, tmp_path: Path) -> None:
    """`once --json | head -1`: the reader goes away before the output is written. Once a
    BrokenPipeError traceback."""
    golden = tmp_path / "two.yaml"
    golden.write_text(
        "name: two\nversion: 1\ndefaults: {max_tokens: 4, temperature: 0}\nprompts:\n"
        + "".join(
            f"  - id: p{i}\n    messages: [{{role: user, content: 'Say {w}.'}}]\n"
            "    checks: [{min_length: 1}]\n"
            for i, w in enumerate(("yes", "no"))
        )
    )
    url = llama_server.url
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "watchdog.cli",
            "once",
            "--json",
            "--url",
            url,
            "--golden-set",
            str(golden),
        ],
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    with process.stderr:
        err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 128 + signal.SIGPIPE, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
