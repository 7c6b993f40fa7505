"""docs/runbooks/: a runbook per alert kind, in one shape, with real commands and metric names.

Every `mlops-watchdog ...` line in the runbooks' code blocks goes through the CLI's own argparse
parser (watchdog.cli.parser), so a renamed or removed flag fails here; metric names are checked
against KNOWN_METRICS in tests/test_dashboards.py."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_dashboards import HISTOGRAMS, KNOWN_METRICS
from tests.test_reference_docs import documented_metrics
from watchdog.alerting.kinds import KINDS
from watchdog.cli import parser
from watchdog.parsing.fields import parse_duration

ROOT = Path(__file__).resolve().parent.parent
RUNBOOKS = ROOT / "docs" / "runbooks"
INDEX = RUNBOOKS / "README.md"
RULE_FILES = sorted((ROOT / "alerts" / "prometheus").glob("*.rules.yml"))
REQUIRED = ["What it means", "Confirm it", "Likely causes", "What to do"]
OPTIONAL = ["Silence it while you work", "Related"]  # in this order, after the required ones
# Tokens that only separate one shell command from the next: |, ||, &&, ;, >, 2>&1 and so on.
PUNCTUATION = re.compile(r"[();<>|&]+")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
METRIC = re.compile(r"\bmlops_watchdog_\w+")
# `... | grep "endpoint=\"$NAME\""`: a label the grep expects the metrics on that line to carry.
LABEL_FILTER = re.compile(r"grep\s[^|]*?\b(endpoint|gpu|kind|tier|prompt_id|golden_set)=")


@cache
def rules() -> tuple[dict[str, Any], ...]:
    out: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            out += [rule for rule in group["rules"] if "alert" in rule]
    return tuple(out)


def all_kinds() -> list[str]:
    return sorted(set(KINDS) | {rule["labels"]["kind"] for rule in rules()})


def alertnames(kind: str) -> set[str]:
    names = {rule["alert"] for rule in rules() if rule["labels"]["kind"] == kind}
    if kind in KINDS and KINDS[kind].alertname:
        names.add(KINDS[kind].alertname)
    return names


def severities(kind: str) -> set[str]:
    found = {rule["labels"]["severity"] for rule in rules() if rule["labels"]["kind"] == kind}
    if kind in KINDS:
        found.add(KINDS[kind].severity)
    return found


def runbook_files() -> list[Path]:
    return sorted(p for p in RUNBOOKS.glob("*.md") if p != INDEX)


# What a newcomer reads: their commands must parse too, or the docs have drifted from the CLI.
GUIDES = [
    ROOT / "README.md",
    ROOT / "deploy" / "README.md",
    ROOT / "deploy" / "fleet" / "README.md",
    ROOT / "alerts" / "README.md",
    ROOT / "dashboards" / "README.md",
    ROOT / "bench" / "README.md",
]


@dataclass(frozen=True)
class Page:
    """A Markdown file split into its prose lines and its fenced code blocks."""

    prose: list[str]
    code: list[list[str]]  # each block's lines, its indentation removed

    @classmethod
    def read(cls, path: Path) -> Page:
        prose: list[str] = []
        code: list[list[str]] = []
        block: list[str] | None = None
        indent = 0
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.lstrip()
            if stripped.startswith("```"):
                if block is None:
                    block, indent = [], len(line) - len(stripped)
                else:
                    code.append(block)
                    block = None
                continue
            if block is None:
                prose.append(line)
            else:
                block.append(line[indent:] if line[:indent].strip() == "" else line)
        assert block is None, f"{path.name}: a code fence is never closed"
        return cls(prose, code)

    def logical_lines(self) -> Iterator[str]:
        """Every code line, with backslash continuations joined."""
        for block in self.code:
            pending = ""
            for line in block:
                if line.rstrip().endswith("\\"):
                    pending += line.rstrip()[:-1] + " "
                    continue
                yield pending + line
                pending = ""
            if pending:
                yield pending


def shell_commands(line: str) -> Iterator[list[str]]:
    """The simple commands of a shell line: split at pipes, `&&`, `;` and redirections, with a
    leading `sudo`, `time` and VAR=value assignments removed."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    command: list[str] = []
    for token in [*lexer, "|"]:
        if PUNCTUATION.fullmatch(token):
            while command and (command[0] in ("sudo", "time") or ENV_ASSIGNMENT.match(command[0])):
                command.pop(0)
            if command:
                yield command
            command = []
        else:
            command.append(token)


def cli_calls(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(the code line, its arguments) for every `mlops-watchdog ...` in a page's code blocks."""
    for line in Page.read(path).logical_lines():
        for command in shell_commands(line):
            if command[0] == "mlops-watchdog" or command[0].endswith("/mlops-watchdog"):
                yield line.strip(), command[1:]


def known_metric(name: str) -> bool:
    """Exported, as docs/metrics.md (itself checked against the daemon) lists it; a name
    ending in `_` stands for a family of names (`mlops_watchdog_server_*`)."""
    documented = documented_metrics()
    if name.endswith("_"):
        return any(d.startswith(name) for d in documented)
    if name in documented or f"{name}_total" in documented:
        return True
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return base != name and base in HISTOGRAMS


def metric_labels(name: str) -> frozenset[str]:
    if name.endswith("_") or not any(n in KNOWN_METRICS for n in (name, f"{name}_total")):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if base not in KNOWN_METRICS:
            return frozenset({"endpoint", "gpu", "kind", "tier", "prompt_id", "golden_set"})
    if name in KNOWN_METRICS:
        return KNOWN_METRICS[name]
    if f"{name}_total" in KNOWN_METRICS:
        return KNOWN_METRICS[f"{name}_total"]
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return KNOWN_METRICS[base] | ({"le"} if name.endswith("_bucket") else set())


def test_every_alert_kind_has_a_runbook_and_every_runbook_a_kind() -> None:
    kinds = all_kinds()
    assert {"watchdog_down", "gpu_telemetry_down"} <= set(kinds)  # the rules' own kinds
    missing = [k for k in kinds if not (RUNBOOKS / f"{k}.md").is_file()]
    assert not missing, f"no runbook for: {missing}"
    strays = [p.name for p in runbook_files() if p.stem not in kinds]
    assert not strays, f"runbooks for no alert kind: {strays}"


def test_every_rule_links_its_kinds_runbook() -> None:
    assert rules()
    for rule in rules():
        kind = rule["labels"]["kind"]
        url = rule["annotations"]["runbook_url"]
        assert url.endswith(f"docs/runbooks/{kind}.md"), f"{rule['alert']} ({kind}): {url}"


@pytest.mark.parametrize("kind", all_kinds())
def test_runbook_shape(kind: str) -> None:
    page = Page.read(RUNBOOKS / f"{kind}.md")
    text = [line for line in page.prose if line.strip()]
    assert text[0].startswith("# "), f"{kind}.md: starts with {text[0]!r}, not a `# ` title"
    if kind in KINDS:
        title = KINDS[kind].title
        assert text[0] == f"# {title[0].upper()}{title[1:]}", f"{kind}.md: title {text[0]!r}"
    # The line under the title says which page or alert leads here, and how severe it is.
    intro = text[1]
    assert not intro.startswith("#"), f"{kind}.md: no line between the title and {intro!r}"
    for name in alertnames(kind):
        assert f"`{name}`" in intro, f"{kind}.md: the intro does not name {name}"
    for severity in severities(kind):
        assert severity in intro, f"{kind}.md: the intro does not say {severity}"
    if kind in KINDS:
        assert KINDS[kind].title in intro, f"{kind}.md: the intro does not quote the Slack page"
    headings = [line[3:].strip() for line in page.prose if line.startswith("## ")]
    assert headings[: len(REQUIRED)] == REQUIRED, f"{kind}.md: sections {headings}"
    extra = headings[len(REQUIRED) :]
    assert extra == [h for h in OPTIONAL if h in extra], f"{kind}.md: sections {headings}"
    assert not [line for line in page.prose if line.startswith("# ")][1:], f"{kind}.md: two titles"


@pytest.mark.parametrize(
    "path", [*runbook_files(), INDEX, *GUIDES], ids=lambda p: str(p.relative_to(ROOT))
)
def test_cli_commands_parse_with_the_real_parser(path: Path) -> None:
    calls = list(cli_calls(path))
    if path.parent == RUNBOOKS and path != INDEX:
        assert calls, f"{path.name}: no mlops-watchdog command in its code blocks"
    for line, args in calls:
        try:
            ns = parser().parse_args(args)
        except SystemExit as exc:  # argparse exits on unknown flags and bad values
            pytest.fail(f"{path.name}: `{line}` does not parse (exit {exc.code})")
        where = f"{path.name}: `{line}`"
        if "--config" in args:
            # Given before a nested action (`silence --config X add`), argparse drops it.
            given = args[args.index("--config") + 1]
            assert ns.config == given, f"{where}: --config is ignored in this position"
        _check_values(ns, where)


def _check_values(ns: argparse.Namespace, where: str) -> None:
    """What the parser accepts but the command would refuse at run time."""
    if ns.command == "silence" and ns.action == "add":
        assert ns.kind is None or ns.kind in KINDS, f"{where}: --kind {ns.kind} is no alert kind"
        parse_duration(getattr(ns, "for"))
    if ns.command == "report":
        parse_duration(ns.since)


@pytest.mark.parametrize(
    "path", [*runbook_files(), INDEX, *GUIDES], ids=lambda p: str(p.relative_to(ROOT))
)
def test_metric_names_are_exported(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    unknown = sorted({m for m in METRIC.findall(text) if not known_metric(m)})
    assert not unknown, f"{path.name}: metrics the daemon does not export: {unknown}"
    for line in Page.read(path).logical_lines():
        wanted = set(LABEL_FILTER.findall(line))
        for name in set(METRIC.findall(line)):
            missing = wanted - metric_labels(name)
            assert not missing, f"{path.name}: {name} has no label {missing}: `{line.strip()}`"


def index_rows() -> dict[str, str]:
    """The index table's rows (those that link a runbook), by the kind in their first cell."""
    rows = {}
    for line in Page.read(INDEX).prose:
        match = re.match(r"\|\s*`(\w+)`\s*\|", line)
        if match and re.search(r"\]\(\w+\.md\)", line):
            rows[match[1]] = line
    return rows


def test_index_lists_every_runbook() -> None:
    rows = index_rows()
    for path in runbook_files():
        kind = path.stem
        assert kind in rows, f"README.md: no row for {kind}"
        row = rows[kind]
        assert f"]({path.name})" in row, f"README.md: the row of {kind} does not link {path.name}"
        for name in alertnames(kind):
            assert f"`{name}`" in row, f"README.md: the row of {kind} does not name {name}"
        for severity in severities(kind):
            assert severity in row, f"README.md: the row of {kind} does not say {severity}"
    assert set(rows) == {p.stem for p in runbook_files()}, "README.md: rows for no runbook"


def test_the_command_finder_sees_through_shell_syntax() -> None:
    """The checks above are only as good as the way commands are found in the code blocks."""
    line = (
        "sudo MLOPS_WATCHDOG_CONFIG=/x mlops-watchdog once --json | "
        "jq -c 'select(.a | .b)' && /opt/mlops-watchdog/bin/mlops-watchdog gpu # a comment"
    )
    assert list(shell_commands(line)) == [
        ["mlops-watchdog", "once", "--json"],
        ["jq", "-c", "select(.a | .b)"],
        ["/opt/mlops-watchdog/bin/mlops-watchdog", "gpu"],
    ]
    with pytest.raises(SystemExit):
        parser().parse_args(["once", "--no-such-flag"])  # so a renamed flag fails the test
    args = ["silence", "--config", "x", "add", "--endpoint", "e", "--for", "1h", "--reason", "r"]
    assert parser().parse_args(args).config == "x"  # once a trap: the action's copy reset it
