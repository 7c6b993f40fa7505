"""The daily HTML report: structure, escaping, no external references, and a look in Chromium."""

from __future__ import annotations

import random
import re
import struct
import zlib
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd

from tests.test_status_page_browser import IMAGES, browse, chromium, keep
from tests.test_store import result
from watchdog.reports import svg
from watchdog.reports.daily import render_daily
from watchdog.result import Change, Signal
from watchdog.store import Store

NOW = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)
ENDPOINTS = ("vllm-a", "llama-b", "tgi-c")
PROMPTS = ("capital", "json-order", "arithmetic")
HOSTILE = "<script>alert('x')</script>"


def row(
    endpoint: str,
    prompt_id: str,
    at: datetime,
    error_class: str | None = None,
    e2e_s: float | None = 0.5,
    fingerprint: str = "3f9dd82a10c4",
) -> dict[str, Any]:
    """One row of the `results` table, as `Store.results_since` reads it."""
    answered = error_class in (None, "check_failed")
    return {
        "run_id": f"{endpoint}-{at:%H%M}",
        "endpoint": endpoint,
        "prompt_id": prompt_id,
        "golden_set": "default",
        "started_at": at.isoformat().replace("+00:00", "Z"),
        "started_ts": at.timestamp(),
        "ok": int(error_class is None),
        "error_class": error_class,
        "ttft_s": e2e_s / 5 if answered and e2e_s else None,
        "e2e_s": e2e_s if answered or error_class == "timeout" else None,
        "tokens_per_s": 60.0 if answered else None,
        "fingerprint": fingerprint,
    }


def day() -> pd.DataFrame:
    """24 hours of runs every 10 minutes: llama-b times out for a while and fails checks."""
    rng = random.Random(6)
    rows = []
    for step in range(144):
        at = NOW - timedelta(minutes=10 * step + 3)
        busy = 1 + 0.6 * (9 <= at.hour <= 17)  # office hours are slower
        for n, endpoint in enumerate(ENDPOINTS):
            for prompt in PROMPTS:
                e2e = (0.4 + 0.5 * n) * busy * rng.uniform(0.8, 1.6)
                error = None
                if endpoint == "llama-b" and 40 <= step < 52:
                    error, e2e = "timeout", 30.0
                elif endpoint == "llama-b" and prompt == "json-order" and step % 7 == 0:
                    error = "check_failed"
                fingerprint = (
                    "3f9dd82a10c4" if endpoint != "llama-b" or step > 60 else "04f4d35e9b21"
                )
                rows.append(row(endpoint, prompt, at, error, e2e, fingerprint))
    return pd.DataFrame(rows).sort_values("started_ts", ignore_index=True)


SIGNALS = [
    Signal(
        "llama-b",
        "default",
        "latency",
        "drift",
        0.42,
        "e2e p50 1.9 s → 2.7 s (×1.42), rank test p < 0.001",
        0.0004,
        "3f9dd82a10c4",
        "04f4d35e9b21",
    ),
    Signal("llama-b", "default", "format_accuracy", "ok", 0.02, "pass rate 0.97 → 0.95", 0.4),
    Signal("tgi-c", "default", "output", "inconclusive", None, "baseline too noisy (0.61)"),
    Signal("vllm-a", "default", "latency", "ok", -0.03, "e2e p50 0.61 s → 0.59 s", 0.7),
]
CHANGES = [
    Change(
        "llama-b",
        "2026-11-23T02:20:00Z",
        "fingerprint",
        "04f4d35e9b21",
        "3f9dd82a10c4",
        "model id llama-3.1-8b-q4 → llama-3.1-8b-q8",
    )
]


class Balance(HTMLParser):
    """Every element that is opened is closed, in order: the page is not torn."""

    # HTML's void elements; SVG's self-closing ones come as start and end (handle_startendtag).
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if not self.stack or self.stack.pop() != tag:
            self.problems.append(tag)


def well_formed(html: str) -> None:
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    parser = Balance()
    parser.feed(html)
    assert parser.problems == [] and parser.stack == []


def test_every_endpoint_has_a_row_a_section_and_two_charts() -> None:
    html = render_daily(day(), SIGNALS, CHANGES, NOW)
    well_formed(html)
    for name in ENDPOINTS:
        assert f'<section class="endpoint" id="endpoint-{name}">' in html
        assert f"<td><strong>{name}</strong></td>" in html
        assert f'aria-label="{name}: e2e latency p50 and p95 per hour"' in html
        assert f'aria-label="{name}: pass rate per hour"' in html
    assert html.count('<svg class="chart"') == 6
    assert "2026-11-22 12:30 UTC → 2026-11-23 12:30 UTC" in html
    assert "1296 run(s)" in html
    assert "<strong>timeout</strong> ×36: arithmetic, capital, json-order" in html
    assert "<strong>check_failed</strong> ×" in html
    assert 'fingerprint <span class="mono">04f4d35e9b21, 3f9dd82a10c4</span>' in html


def test_drift_status_is_text_as_well_as_colour() -> None:
    html = render_daily(day(), SIGNALS, CHANGES, NOW)
    for status in ("drift", "ok", "inconclusive"):
        assert f'<span class="state {status}">{status}</span>' in html
    assert '<span class="state drift">drift check: drift</span>' in html  # llama-b's worst signal
    assert "3f9dd82a10c4 → 04f4d35e9b21" in html
    assert '+0.42<div class="small">p = 0.0004</div>' in html
    drift = html[html.index("<h2>Drift</h2>") : html.index("<h2>Changes</h2>")]
    # By endpoint, then the signals in drift.SIGNALS order.
    assert re.findall(r"<td>(latency|format_accuracy|output)</td>", drift) == [
        "latency",
        "format_accuracy",
        "output",
        "latency",
    ]
    changes = html[html.index("<h2>Changes</h2>") :]
    assert "04f4d35e9b21 → 3f9dd82a10c4" in changes
    assert "model id llama-3.1-8b-q4 → llama-3.1-8b-q8" in changes


def test_an_endpoint_without_results_appears_from_signals_or_changes() -> None:
    gone = Change("old-d", "2026-11-23T01:00:00Z", "template", None, "a1b2c3", "system prompt")
    only_signal = Signal("new-e", "default", "output", "inconclusive", None, "no baseline yet")
    html = render_daily(day(), [*SIGNALS, only_signal], [*CHANGES, gone], NOW)
    well_formed(html)
    for name in ("old-d", "new-e"):
        section = html[html.index(f'id="endpoint-{name}"') :]
        assert section.index("No results in these 24 hours.") < section.index("</section>")
    assert '<td class="mono">- → a1b2c3</td>' in html
    assert html.count('<svg class="chart"') == 6


def test_an_endpoint_that_never_answered_has_no_latency_chart() -> None:
    rows = [row("down", "capital", NOW - timedelta(hours=h), "connect") for h in range(5)]
    html = render_daily(pd.DataFrame(rows), [], [], NOW)
    well_formed(html)
    assert "No answers in these 24 hours: no latency to chart." in html
    assert html.count('<svg class="chart"') == 1  # the pass rate: 0 of 1, every hour
    assert "<title>12:00 UTC: 0 of 1 passed</title>" in html
    assert "<td>connect ×5</td>" in html


def test_rows_outside_the_24_hours_do_not_count() -> None:
    rows = [
        row("vllm-a", "capital", NOW - timedelta(hours=30), "timeout"),
        row("vllm-a", "capital", NOW - timedelta(hours=1)),
    ]
    html = render_daily(pd.DataFrame(rows), [], [], NOW)
    assert "1 run(s), 100% passed" in html and "timeout" not in html


def test_hostile_names_and_details_are_escaped() -> None:
    rows = [
        row(HOSTILE, '<img src=x onerror="alert(1)">', NOW - timedelta(minutes=5), "check_failed"),
        row(HOSTILE, "capital", NOW - timedelta(minutes=65)),
    ]
    signal = Signal(HOSTILE, '"><b>set</b>', "latency", "drift", 1.0, "<iframe src=//x>", None)
    change = Change(HOSTILE, "</td><script>", "template", "<a>", "<b>", "<style>*{}</style>")
    html = render_daily(pd.DataFrame(rows), [signal], [change], NOW, title="<h1>title</h1>")
    well_formed(html)
    for raw in (
        HOSTILE,
        "<img",
        "<iframe",
        "<b>",
        "<a>",
        "<h1>title",
        "</td><script>",
        "*{}</style>",
    ):
        assert raw not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    assert 'id="endpoint-&lt;script&gt;' in html
    assert (
        'aria-label="&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;: pass rate per hour"' in html
    )
    assert html.count("<script") == 0 and html.count("<style>") == 1


def test_nothing_comes_from_outside_the_file() -> None:
    html = render_daily(day(), SIGNALS, CHANGES, NOW)
    assert re.search(r"\b(src|href|srcset|action)\s*=", html) is None
    for outside in ("://", "url(", "@import", "@font-face", "<script", "<link", "<img", "<iframe"):
        assert outside not in html


def test_empty_input_says_there_is_nothing_yet(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "w.db")
    stored = store.results_since((NOW - timedelta(hours=24)).timestamp())
    store.close()
    for frame in (pd.DataFrame(), stored):
        html = render_daily(frame, [], [], NOW)
        well_formed(html)
        assert "Nothing yet: no probe results, drift signals or changes in these 24 hours." in html
        assert "0 endpoint(s) · 0 run(s), - passed" in html
        assert "<svg" not in html and "<table" not in html


def test_renders_what_the_store_returns(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "w.db")  # real column types: ok as int, all-NULL columns
    store.record_run("r1", [result("capital"), result("json", ok=False)], {})
    moment = datetime(2026, 11, 23, 13, tzinfo=UTC)
    frame = store.results_since((moment - timedelta(hours=24)).timestamp())
    store.close()
    html = render_daily(frame, [], [], moment)
    well_formed(html)
    assert '<section class="endpoint" id="endpoint-e">' in html
    assert "2 run(s), 50.0% passed · TTFT p50 100 ms, p95 100 ms · e2e p50 500 ms" in html
    assert "<strong>check_failed</strong> ×1: json" in html


def test_ten_endpoints_stay_small() -> None:
    frame = pd.concat(
        day().assign(endpoint=lambda f, n=n: f["endpoint"] + f"-{n}") for n in range(4)
    )
    assert frame["endpoint"].nunique() == 12
    html = render_daily(frame, SIGNALS * 3, CHANGES * 3, NOW)
    assert len(html.encode()) < 300_000


def test_axis_ticks_are_round_numbers_with_one_unit() -> None:
    assert svg.nice_ticks(0.87) == [0, 0.25, 0.5, 0.75, 1.0]
    assert svg.nice_ticks(0.0) == [0, 0.25, 0.5, 0.75, 1.0]
    assert svg.nice_ticks(7.3) == [0, 2, 4, 6, 8]
    assert [label for _, label in svg.latency_ticks(0.3)] == ["0 ms", "100 ms", "200 ms", "300 ms"]
    assert [label for _, label in svg.latency_ticks(2.2)] == ["0 s", "1 s", "2 s", "3 s"]


def test_an_hour_without_answers_breaks_the_line() -> None:
    start = NOW.replace(minute=0).timestamp() - 5 * 3600
    plot = svg.Plot(start, start + 5 * 3600)
    points = [(start, 1.0), (start + 3600, 2.0), (start + 3 * 3600, 1.5)]
    chart = svg.hourly_lines(plot, [svg.Line("p50", points, "#000")], "latency")
    path = re.search(r'<path d="([^"]+)"', chart)
    assert path is not None and re.findall("[ML]", path[1]) == ["M", "L", "M"]
    assert chart.count("<circle") == 3  # an hour alone still shows as a dot
    assert re.findall(r">(\d\d:00)</text>", chart) == ["09:00", "12:00"]  # every 3 h, UTC


def png_rows(png: bytes) -> tuple[int, int, int]:
    """Width, height, and how many distinct scanlines: a blank page has one or two."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, colour = struct.unpack(">IIBB", png[16:26])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    data, at = b"", 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        if png[at + 4 : at + 8] == b"IDAT":
            data += png[at + 8 : at + 8 + length]
        at += length + 12
    raw = zlib.decompress(data)
    stride = 1 + width * channels * depth // 8
    return width, height, len({raw[i : i + stride] for i in range(0, len(raw), stride)})


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    binary = chromium()
    page = tmp_path / "daily.html"
    page.write_text(render_daily(day(), SIGNALS, CHANGES, NOW), encoding="utf-8")
    url = page.as_uri()
    shot = tmp_path / "daily.png"
    size = "--window-size=900,1600"  # the last --window-size wins: taller than browse()'s
    png = browse(binary, url, tmp_path / "a", size, f"--screenshot={shot}")
    dom = browse(binary, url, tmp_path / "b", "--dump-dom")
    assert png.returncode == 0, png.stderr.decode()[-2000:]
    width, height, distinct = png_rows(shot.read_bytes())
    assert (width, height) == (900, 1600)
    assert shot.stat().st_size > 30_000 and distinct > 300, (shot.stat().st_size, distinct)
    keep(shot, "daily-report.png")
    html = dom.stdout.decode()
    assert dom.returncode == 0 and "</html>" in html, dom.stderr.decode()[-2000:]
    for name in ENDPOINTS:
        assert f'id="endpoint-{name}"' in html
        assert f"<td>{name}</td>" in html  # its drift signal row
    assert html.count('<svg class="chart"') == 6
    assert '<span class="state drift">drift</span>' in html


def test_the_readme_shows_pictures_these_tests_took() -> None:
    readme = (IMAGES.parent.parent / "README.md").read_text()
    for name, size in (("status-page.png", (1280, 760)), ("daily-report.png", (900, 1600))):
        assert f"docs/images/{name}" in readme, name
        png = (IMAGES / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == size, name
