"""The health report: aggregation over stored results, and CSV cells safe to open in Excel."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from watchdog.reports.health import COLUMNS, excel_safe, health, write_csv

EVIL = "=cmd|' /C calc'!A0"


def result(
    endpoint: str,
    prompt_id: str,
    started_at: str,
    error_class: str | None = None,
    ttft_s: float | None = None,
    e2e_s: float | None = None,
    tokens_per_s: float | None = None,
    token_source: str | None = "usage",
) -> dict[str, Any]:
    """One row of the `results` table, with the columns `health` reads."""
    return {
        "endpoint": endpoint,
        "golden_set": "default",
        "prompt_id": prompt_id,
        "ok": int(error_class is None),
        "error_class": error_class,
        "ttft_s": ttft_s,
        "e2e_s": e2e_s,
        "tokens_per_s": tokens_per_s,
        "token_source": token_source if error_class in (None, "check_failed") else None,
        "started_at": started_at,
        "started_ts": 0.0,
        "trace_id": f"{abs(hash((endpoint, prompt_id, started_at))):032x}"[-32:],
    }


@pytest.fixture
def results() -> pd.DataFrame:
    return pd.DataFrame(
        [
            result("vllm-a", "capital", "2026-01-01T00:00:00Z", None, 0.1, 1.0, 50.0),
            result("vllm-a", "capital", "2026-01-01T00:01:00Z", "check_failed", 0.2, 2.0, 40.0),
            # Timeouts are not answers: their 60 s must not drag the latency percentiles.
            result("vllm-a", "capital", "2026-01-01T00:02:00Z", "timeout", None, 60.0, None),
            result("vllm-a", "capital", "2026-01-01T00:03:00Z", None, 0.3, 3.0, 30.0),
            result("vllm-a", "capital", "2026-01-01T00:04:00Z", "timeout", None, 60.0, None),
            result("vllm-a", "arithmetic", "2026-01-01T00:00:30Z", None, 0.05, 0.5, 80.0),
            result(EVIL, "capital", "2026-01-01T00:00:00Z", "connect"),
            result(EVIL, "capital", "2026-01-01T00:01:00Z", "connect"),
        ]
    )


def rows(frame: pd.DataFrame) -> dict[tuple[str, str], dict[Any, Any]]:
    return {(r["endpoint"], r["prompt_id"]): r for r in frame.to_dict("records")}


def test_health_aggregates_per_endpoint_and_prompt(results: pd.DataFrame) -> None:
    report = health(results)
    assert list(report.columns) == COLUMNS
    # Sorted by endpoint, golden set, prompt.
    assert list(zip(report["endpoint"], report["prompt_id"], strict=True)) == [
        (EVIL, "capital"),
        ("vllm-a", "arithmetic"),
        ("vllm-a", "capital"),
    ]
    row = rows(report)[("vllm-a", "capital")]
    assert (row["golden_set"], row["runs"], row["pass_rate"]) == ("default", 5, 0.4)
    # Only answered results (no error, or check_failed) count: 2 of 3 passed their checks.
    assert row["format_accuracy"] == pytest.approx(2 / 3)
    assert row["ttft_p50_s"] == pytest.approx(0.2)
    assert row["ttft_p95_s"] == pytest.approx(0.29)  # linear, between 0.2 and 0.3
    assert row["e2e_p50_s"] == pytest.approx(2.0)
    assert row["e2e_p95_s"] == pytest.approx(2.9)
    assert row["tokens_per_s_p50"] == pytest.approx(40.0)
    assert row["top_error_class"] == "timeout"  # 2 timeouts beat 1 check_failed
    assert (row["first_run"], row["last_run"]) == ("2026-01-01T00:00:00Z", "2026-01-01T00:04:00Z")

    assert row["token_source"] == "usage"  # how its answers' tokens were counted
    single = rows(report)[("vllm-a", "arithmetic")]
    assert (single["runs"], single["pass_rate"], single["format_accuracy"]) == (1, 1.0, 1.0)
    assert single["ttft_p50_s"] == single["ttft_p95_s"] == pytest.approx(0.05)
    assert single["top_error_class"] == ""


def test_health_of_a_prompt_that_never_answered(results: pd.DataFrame) -> None:
    row = rows(health(results))[(EVIL, "capital")]
    assert (row["runs"], row["pass_rate"], row["top_error_class"]) == (2, 0.0, "connect")
    # No answers: no format accuracy and no latency, rather than a misleading 0.
    assert row["format_accuracy"] is None or math.isnan(row["format_accuracy"])
    for column in ("ttft_p50_s", "ttft_p95_s", "e2e_p50_s", "e2e_p95_s", "tokens_per_s_p50"):
        assert math.isnan(row[column]), column


def test_health_of_no_results_is_an_empty_table() -> None:
    report = health(pd.DataFrame(columns=["endpoint", "golden_set", "prompt_id", "ok"]))
    assert report.empty
    assert list(report.columns) == COLUMNS


def test_excel_safe_quotes_formula_cells_only() -> None:
    frame = pd.DataFrame(
        {
            "text": [EVIL, "+1", "-1", "@SUM(A1)", "\t=1", "plain", "a=b", None],
            "number": [-1.5, 2.0, -3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
            "count": [-1, 2, 3, 4, 5, 6, 7, 8],
        }
    )
    safe = excel_safe(frame)
    assert safe["text"].tolist()[:7] == [
        f"'{EVIL}",
        "'+1",
        "'-1",
        "'@SUM(A1)",
        "'\t=1",
        "plain",
        "a=b",
    ]
    assert pd.isna(safe["text"].iloc[7])
    assert safe["number"].tolist() == frame["number"].tolist()
    assert safe["count"].tolist() == frame["count"].tolist()
    assert frame["text"].iloc[0] == EVIL  # the input is not modified


def test_write_csv_report_is_excel_safe(results: pd.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "health.csv"
    write_csv(health(results), out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["health.csv"]  # no .tmp left
    with out.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        lines = list(reader)
    assert [(r["endpoint"], r["prompt_id"]) for r in lines] == [
        (f"'{EVIL}", "capital"),
        ("vllm-a", "arithmetic"),
        ("vllm-a", "capital"),
    ]
    evil, _, capital = lines
    assert {k: evil[k] for k in ("runs", "pass_rate", "format_accuracy", "ttft_p50_s")} == {
        "runs": "2",
        "pass_rate": "0",
        "format_accuracy": "",
        "ttft_p50_s": "",
    }
    assert {k: capital[k] for k in COLUMNS[3:12]} == {
        "runs": "5",
        "pass_rate": "0.4",
        "format_accuracy": "0.6667",
        "ttft_p50_s": "0.2",
        "ttft_p95_s": "0.29",
        "e2e_p50_s": "2",
        "e2e_p95_s": "2.9",
        "tokens_per_s_p50": "40",
        "top_error_class": "timeout",
    }


def test_write_csv_leaves_negative_numbers_alone(tmp_path: Path) -> None:
    out = tmp_path / "numbers.csv"
    write_csv(pd.DataFrame({"name": ["-x", "ok"], "delta": [-0.25, 1.0]}), out)
    with out.open(newline="", encoding="utf-8") as f:
        assert list(csv.reader(f)) == [["name", "delta"], ["'-x", "-0.25"], ["ok", "1"]]


def test_health_says_how_tokens_were_counted(results: pd.DataFrame) -> None:
    # Triton's stream without a tokenizer: events, which carry no tokens/s.
    triton = [
        result("triton", "capital", "2026-01-01T00:00:00Z", None, 0.1, 1.0, None, "events"),
        result("triton", "capital", "2026-01-01T00:01:00Z", None, 0.1, 1.0, 20.0, "tokenizer"),
    ]
    report = rows(health(pd.concat([results, pd.DataFrame(triton)])))
    assert report[("triton", "capital")]["token_source"] == "events+tokenizer"
    assert report[("triton", "capital")]["tokens_per_s_p50"] == 20.0
    assert report[(EVIL, "capital")]["token_source"] == ""  # nothing answered
