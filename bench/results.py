"""What a bench run measured, kept as a file the docs quote: `bench/results/<bench>.json`.

A bench calls `record` at the end of a run. The file says which bench it was, the command line
that reruns it, the UTC date and the machine it ran on, and the figures themselves. The blocks in
README.md and bench/README.md are rendered from these files (`python -m bench.figures`), and
tests/test_bench_figures.py fails when the docs and the files disagree, so a figure in the docs
is always the one a run wrote, with its date and machine.

    from bench.results import command_line, record
    record("probe_cost", command_line(), {"anchor_ms": 0.513, "defaults_ms": 0.477})
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import sqlite3
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Where results live, relative to the repository root.
RESULTS = Path("bench") / "results"
KEYS = ("bench", "command", "date", "figures", "machine")
NAME = re.compile(r"[a-z_][a-z0-9_]*")


class ResultsError(ValueError):
    """A results file that cannot be quoted: unreadable, or missing what a figure must say."""


def path(bench: str, *, root: Path = ROOT) -> Path:
    """The results file of `bench` (a module name under bench/, such as `probe_cost`)."""
    if not NAME.fullmatch(bench):
        raise ValueError(f"{bench!r} is not a bench module name (such as probe_cost)")
    return root / RESULTS / f"{bench}.json"


def record(bench: str, command: str, figures: dict[str, Any], *, root: Path = ROOT) -> Path:
    """Write what a run of `bench` measured, stamped with today's UTC date and this machine.

    `command` reruns it (`command_line()` gives the one this process was started with), and
    `figures` is whatever the bench's renderers need: plain JSON values. Replaces the last
    run's file, prints its path and returns it."""
    target = path(bench, root=root)
    result = {
        "bench": bench,
        "command": command,
        "date": datetime.now(UTC).date().isoformat(),
        "machine": machine(),
        "figures": figures,
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shown = target.relative_to(root) if target.is_relative_to(root) else target
    print(f"results written to {shown}")
    return target


def load(bench: str, *, root: Path = ROOT) -> dict[str, Any] | None:
    """The last recorded run of `bench`, or None if it has not been run (no results file)."""
    source = path(bench, root=root)
    if not source.is_file():
        return None
    where = RESULTS / source.name
    try:
        result = json.loads(source.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ResultsError(f"{where}: not JSON ({exc}); rerun the bench to rewrite it") from exc
    if not isinstance(result, dict):
        raise ResultsError(f"{where}: not a JSON object; rerun the bench to rewrite it")
    missing = [key for key in KEYS if key not in result]
    if missing:
        raise ResultsError(f"{where}: no {', '.join(missing)}; rerun the bench to rewrite it")
    if result["bench"] != bench:
        raise ResultsError(f"{where}: written by bench {result['bench']!r}, not {bench!r}")
    return result


def command_line(argv: Sequence[str] | None = None, module: str | None = None) -> str:
    """The command that reruns this process: `python -m bench.NAME ARGS`, from sys.argv.

    The module is named, never the script's path. An argument that is an absolute path is
    written relative to the working directory when it lies inside it, and as `PATH` otherwise,
    so no path of the machine the bench ran on ends up in the docs."""
    argv = sys.argv if argv is None else argv
    if module is None:
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None else f"bench.{Path(argv[0]).stem}"
    return shlex.join(["python", "-m", module, *(_portable(arg) for arg in argv[1:])])


def _portable(arg: str) -> str:
    if arg.startswith("-") and "=" in arg:
        flag, value = arg.split("=", 1)
        return f"{flag}={_portable(value)}"
    if not os.path.isabs(arg):
        return arg
    try:
        return str(Path(arg).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return "PATH"


def machine() -> str:
    """What the figures were measured on, in one line that says nothing about who ran it:
    `2 vCPU (AMD EPYC 7B13), 23 GiB RAM, Linux 6.1, Python 3.11.2, SQLite 3.40.1`.

    CPUs are "vCPU" when the kernel reports a hypervisor. No host name, user or path."""
    cpuinfo = _read("/proc/cpuinfo")
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    virtual = re.search(r"^flags\s*:.*\bhypervisor\b", cpuinfo, re.MULTILINE)
    cpus = f"{os.cpu_count() or '?'} {'vCPU' if virtual else 'CPU'}"
    if model:
        cpus += f" ({_clean(model.group(1))})"
    parts = [cpus]
    memory = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.MULTILINE)
    if memory:
        parts.append(f"{round(int(memory.group(1)) / 2**20)} GiB RAM")
    release = re.match(r"\d+(\.\d+)?", platform.release())
    system = platform.system() or "unknown OS"
    parts.append(f"{system} {release.group(0)}" if release else system)
    parts.append(f"Python {platform.python_version()}")
    parts.append(f"SQLite {sqlite3.sqlite_version}")
    return ", ".join(parts)


def _clean(cpu: str) -> str:
    """A CPU model as people write it: no (R), (TM), "CPU" or slashes."""
    cpu = re.sub(r"\((R|TM|tm)\)|\bCPU\b|/", " ", cpu)
    return " ".join(cpu.split())


def _read(name: str) -> str:
    try:
        return Path(name).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
