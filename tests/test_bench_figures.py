"""The benchmark figures in README.md and bench/README.md are the ones a bench run wrote.

Each figure is rendered from `bench/results/<bench>.json` by `python -m bench.figures`, and says
its date and machine. This fails when a doc's figures differ from what the results files give
(a figure edited by hand, or a bench rerun without regenerating the docs), when a results file
is quoted nowhere, and when a block does not say when and where it was measured."""

from __future__ import annotations

import json
import socket
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from bench import figures
from bench.figures import DOCS, FiguresError, blocks, caption, regenerate, render, render_block
from bench.results import ROOT, command_line, load, machine, record

RESULTS = ROOT / "bench" / "results"
STALE = (
    "{doc}: its figures are not what bench/results/ holds. Run `python -m bench.figures` after "
    "a bench run and commit the docs with the results file; do not edit figures by hand."
)


def results_files() -> list[Path]:
    return sorted(RESULTS.glob("*.json"))


@pytest.mark.parametrize("doc", DOCS, ids=str)
def test_docs_quote_what_the_results_files_hold(doc: Path) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert blocks(text, source=str(doc)), f"{doc}: no figures blocks"
    assert render(text, ROOT, source=str(doc)) == text, STALE.format(doc=doc)


def test_every_results_file_is_quoted_with_its_date_and_machine() -> None:
    quoted: dict[str, list[figures.Block]] = {}
    for doc in DOCS:
        for block in blocks((ROOT / doc).read_text(encoding="utf-8"), source=str(doc)):
            quoted.setdefault(block.module, []).append(block)
    assert {"probe_cost", "scale", "storage"} <= set(quoted)
    for path in results_files():
        result = load(path.stem)
        assert result is not None
        assert path.stem in quoted, f"bench/results/{path.name} is quoted by no block in {DOCS}"
        for block in quoted[path.stem]:
            text = render_block(block, ROOT)
            for key in ("date", "machine"):
                assert result[key] in text, f"{block.marker} does not state the run's {key}"


# render, on a synthetic bench.


def fake_bench(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """`bench.fakebench`, with a `table` renderer and one that forgets the date."""
    module = types.ModuleType("bench.fakebench")

    def table(result: dict[str, Any]) -> str:
        rate = result["figures"]["rate"]
        return f"| rate |\n| --- |\n| {rate} |\n\n{caption(result)}\n"

    def undated(result: dict[str, Any]) -> str:
        return f"rate {result['figures']['rate']}"

    def broken(result: dict[str, Any]) -> str:
        return str(result["figures"]["no_such_figure"])

    module.table = table  # type: ignore[attr-defined]
    module.undated = undated  # type: ignore[attr-defined]
    module.broken = broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench.fakebench", module)
    return module


DOC = """# Fake

Run it with the command below.

<!-- figures: fakebench.table -->
old figures, typed in by hand
<!-- /figures -->

Prose after the block stays.
"""


def test_render_fills_a_block_from_its_results_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_bench(monkeypatch)
    record("fakebench", "python -m bench.fakebench --fast", {"rate": 42.5}, root=tmp_path)
    result = load("fakebench", root=tmp_path)
    assert result is not None
    out = render(DOC, tmp_path, source="FAKE.md")
    assert "old figures" not in out
    assert "| 42.5 |" in out
    assert f"Measured {result['date']} on {machine()}: `python -m bench.fakebench --fast`" in out
    assert out.startswith("# Fake\n\nRun it with the command below.\n\n<!-- figures: fakebench.")
    assert out.endswith("<!-- /figures -->\n\nProse after the block stays.\n")
    assert render(out, tmp_path) == out, "rendering twice changes the text"
    assert regenerate(out, tmp_path)[1] == [("fakebench.table", False)]
    assert regenerate(DOC, tmp_path)[1] == [("fakebench.table", True)]


def test_a_bench_never_run_says_so_without_its_renderer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_bench(monkeypatch)
    doc = DOC.replace("fakebench.table", "fakebench.not_written_yet")
    out = render(doc, tmp_path)
    line = (
        "_Not measured yet: run `python -m bench.fakebench` to write "
        "`bench/results/fakebench.json`._"
    )
    assert f"<!-- figures: fakebench.not_written_yet -->\n\n{line}\n\n<!-- /figures -->" in out
    assert render(out, tmp_path) == out


def test_a_renderer_that_is_missing_is_an_error_once_there_are_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_bench(monkeypatch)
    record("fakebench", "python -m bench.fakebench", {"rate": 1}, root=tmp_path)
    doc = DOC.replace("fakebench.table", "fakebench.not_written_yet")
    with pytest.raises(FiguresError) as error:
        render(doc, tmp_path, source="FAKE.md")
    message = str(error.value)
    assert "FAKE.md" in message and "<!-- figures: fakebench.not_written_yet -->" in message
    assert "no function not_written_yet" in message


def test_an_unknown_module_is_an_error_naming_the_file_and_the_marker(tmp_path: Path) -> None:
    doc = DOC.replace("fakebench.table", "no_such_bench.table")
    with pytest.raises(FiguresError) as error:
        render(doc, tmp_path, source="FAKE.md")
    message = str(error.value)
    assert "FAKE.md" in message and "<!-- figures: no_such_bench.table -->" in message
    assert "no module bench.no_such_bench" in message


def test_a_block_must_state_its_date_and_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_bench(monkeypatch)
    record("fakebench", "python -m bench.fakebench", {"rate": 1}, root=tmp_path)
    with pytest.raises(FiguresError, match="does not state the run's date and machine"):
        render(DOC.replace("fakebench.table", "fakebench.undated"), tmp_path, source="FAKE.md")


def test_a_renderer_that_fails_is_an_error_naming_the_file_and_the_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_bench(monkeypatch)
    record("fakebench", "python -m bench.fakebench", {"rate": 1}, root=tmp_path)
    with pytest.raises(FiguresError, match="no_such_figure") as error:
        render(DOC.replace("fakebench.table", "fakebench.broken"), tmp_path, source="FAKE.md")
    assert str(error.value).startswith("FAKE.md: <!-- figures: fakebench.broken -->")


@pytest.mark.parametrize(
    ("doc", "complaint"),
    [
        ("<!-- figures: fakebench.table -->\nno end\n", "never closed"),
        ("text\n<!-- /figures -->\n", "closes no block"),
        ("<!-- figures: fakebench table -->\n<!-- /figures -->\n", "not a marker"),
        (
            "<!-- figures: fakebench.table -->\n<!-- figures: fakebench.table -->\n",
            "inside another block",
        ),
    ],
)
def test_malformed_markers_are_errors(doc: str, complaint: str, tmp_path: Path) -> None:
    with pytest.raises(FiguresError, match=complaint) as error:
        render(doc, tmp_path, source="FAKE.md")
    assert str(error.value).startswith("FAKE.md")


# The results file.


def test_record_writes_what_load_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert load("fakebench", root=tmp_path) is None
    written = record("fakebench", "python -m bench.fakebench -n 3", {"ms": 0.5}, root=tmp_path)
    assert written == tmp_path / "bench" / "results" / "fakebench.json"
    assert "bench/results/fakebench.json" in capsys.readouterr().out
    text = written.read_text(encoding="utf-8")
    assert (
        text.endswith("}\n")
        and text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    )
    result = load("fakebench", root=tmp_path)
    assert result == {
        "bench": "fakebench",
        "command": "python -m bench.fakebench -n 3",
        "date": result and result["date"],
        "machine": machine(),
        "figures": {"ms": 0.5},
    }
    assert result is not None and len(result["date"]) == 10 and result["date"][4] == "-"


def test_machine_says_nothing_about_who_ran_it() -> None:
    described = machine()
    assert "Python " in described and "SQLite " in described
    assert socket.gethostname() not in described
    assert "/" not in described


def test_command_line_names_the_module_and_no_path_of_the_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [
        str(ROOT / "bench" / "storage.py"),
        "--quick",
        "--dir",
        str(tmp_path / "db"),
        f"--out={tmp_path.parent}",
        "two words",
    ]
    assert command_line(argv, module="bench.storage") == (
        "python -m bench.storage --quick --dir db --out=PATH 'two words'"
    )
