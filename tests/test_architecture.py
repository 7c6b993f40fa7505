"""The house holds: every import follows the direction docs/architecture.md states. A module
imports its own folder and the layers below its own; nothing imports upward, no import runs in
a circle, and no import of the package hides in a function body."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "watchdog"
DOC = ROOT / "docs" / "architecture.md"
GROUND = "watchdog"  # the package's own __init__.py: the version, the distribution marker
# Imports that may wait for a call, and why: not to dodge a circle.
DEFERRED_OK = {
    "watchdog.dashboards": "the generators need the optional grafana-foundation-sdk",
}


def layers(doc: str) -> dict[str, int]:
    """The top-level name (`cli`, `probers`, ...) of every entry in the doc's layer block, and
    its height: 0 for the ground, larger above."""
    block = doc.split("<!-- layers:", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    rows = [line.split("  ")[0].split() for line in block.splitlines() if line.strip()]
    height = {}
    for level, names in enumerate(reversed(rows)):
        for name in names:
            height[name.removesuffix("/").removesuffix(".py")] = level
    return height


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, str]:
    return {module_name(p): p.read_text(encoding="utf-8") for p in sorted(PACKAGE.rglob("*.py"))}


def imports(module: str, source: str, known: set[str]) -> Iterator[tuple[int, str, bool]]:
    """(line, imported module, whether inside a function body) for every import of the
    package: `from a.b import c` imports a.b, and a.b.c when that is a module."""
    tree = ast.parse(source)
    deferred = {
        id(node)
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(fn)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name in known and name != module:
                yield node.lineno, name, id(node) in deferred


def top(module: str) -> str:
    """The folder or top-level module a module belongs to: `probers` for watchdog.probers.tgi."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else GROUND


def violations(modules: Mapping[str, str], height: Mapping[str, int]) -> list[str]:
    """Every import against the stated direction, every circle, every hidden import."""
    known = set(modules)
    out: list[str] = []
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for module, source in modules.items():
        here = top(module)
        if here != GROUND and here not in height:
            out.append(f"{module}: {here} is in no layer of docs/architecture.md")
            continue
        for line, target, deferred in imports(module, source, known):
            edges[module].add(target)
            there = top(target)
            where = f"{module} (line {line}) imports {target}"
            if deferred and module not in DEFERRED_OK:
                out.append(f"{where} inside a function: import it at the top")
            if there in (here, GROUND):
                continue
            if there not in height:
                continue  # reported for that module itself
            if height[there] >= height[here]:
                out.append(f"{where}: {there} is not below {here} in docs/architecture.md's layers")
    out += [f"import circle: {' → '.join(c)}" for c in circles(edges)]
    return out


def circles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_import_follows_the_stated_direction() -> None:
    problems = violations(sources(), layers(DOC.read_text(encoding="utf-8")))
    assert not problems, "\n".join(problems)


def test_the_nouns_are_at_the_bottom() -> None:
    height = layers(DOC.read_text(encoding="utf-8"))
    assert height["parsing"] == height["runtime"] == 0
    assert (
        height["result"]
        < height["endpoint"]
        < min(
            h
            for name, h in height.items()
            if name not in ("parsing", "runtime", "result", "endpoint")
        )
    )
    assert height["cli"] == max(height.values())
    result = sources()["watchdog.result"]
    assert not re.search(r"^\s*(from|import) watchdog", result, re.MULTILINE)


@pytest.mark.parametrize(
    ("modules", "wanted"),
    [
        (  # a noun importing upward
            {"watchdog.result": "from watchdog.store import Store\n", "watchdog.store": ""},
            "watchdog.result (line 1) imports watchdog.store: store is not below result",
        ),
        (  # a circle inside one folder
            {
                "watchdog.store.a": "from watchdog.store import b\n",
                "watchdog.store.b": "from watchdog.store import a\n",
                "watchdog.store": "",
            },
            "import circle: watchdog.store.a → watchdog.store.b",
        ),
        (  # an import hidden in a function body
            {
                "watchdog.web": "def f():\n    from watchdog.store import x\n",
                "watchdog.store.x": "",
            },
            "watchdog.web (line 2) imports watchdog.store.x inside a function",
        ),
        (  # a folder the doc does not place
            {"watchdog.plugins.x": ""},
            "watchdog.plugins.x: plugins is in no layer",
        ),
    ],
)
def test_the_check_finds_what_it_is_for(modules: dict[str, str], wanted: str) -> None:
    height = {"parsing": 0, "runtime": 0, "result": 1, "store": 2, "web": 3}
    found = violations(modules, height)
    assert any(line.startswith(wanted) for line in found), found
