"""The benchmark figures in the docs, rendered from the results files the benches wrote.

README.md and bench/README.md hold generated blocks:

    <!-- figures: probe_cost.table -->
    ...generated markdown...
    <!-- /figures -->

The marker names MODULE.FUNCTION: `bench.MODULE`'s `FUNCTION(result) -> str` renders the block's
markdown from `bench/results/MODULE.json` (as `bench.results.load` returns it). What it returns
must state the run's date and machine (`caption(result)` gives a line that does). Until the bench
has been run, the block says so. Nothing here writes a figure: edit a renderer, or rerun the
bench, then regenerate every block in place with

    python -m bench.figures            # rewrites the blocks, says which changed
    python -m bench.figures --check    # changes nothing; exit 1 if a block is stale
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.results import RESULTS, ROOT, ResultsError, load

# The documents that quote figures, relative to the repository root.
DOCS = (Path("README.md"), Path("bench") / "README.md")
START = re.compile(
    r"<!-- figures: (?P<module>[a-z_][a-z0-9_]*)\.(?P<function>[a-z_][a-z0-9_]*) -->"
)
END = "<!-- /figures -->"


class FiguresError(Exception):
    """A block that cannot be rendered; the message names the document and the marker."""


@dataclass(frozen=True)
class Block:
    """One generated block of a document: its marker and the markdown now between the markers."""

    module: str
    function: str
    body: str

    @property
    def marker(self) -> str:
        return f"<!-- figures: {self.module}.{self.function} -->"

    @property
    def name(self) -> str:
        return f"{self.module}.{self.function}"


def caption(result: dict[str, Any]) -> str:
    """One line saying when, where and how a result was measured, for a renderer to put in its
    block: "Measured 2026-12-04 on 2 vCPU (...), ...: `python -m bench.probe_cost ...`"."""
    return f"Measured {result['date']} on {result['machine']}: `{result['command']}`"


def not_measured(module: str) -> str:
    """What a block says while its bench has never written a results file."""
    return (
        f"_Not measured yet: run `python -m bench.{module}` to write "
        f"`{(RESULTS / f'{module}.json').as_posix()}`._"
    )


def blocks(text: str, *, source: str = "text") -> list[Block]:
    """The generated blocks of a document, in order. A marker that does not parse, a block
    never closed, a block inside a block or a stray end marker is an error."""
    found: list[Block] = []
    opened: tuple[re.Match[str], list[str]] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("<!-- figures"):
            start = START.fullmatch(stripped)
            if start is None:
                raise FiguresError(
                    f"{source}:{number}: `{stripped}` is not a marker; write "
                    "`<!-- figures: MODULE.FUNCTION -->` on a line of its own"
                )
            if opened is not None:
                raise FiguresError(f"{source}:{number}: `{stripped}` inside another block")
            opened = (start, [])
        elif stripped == END:
            if opened is None:
                raise FiguresError(f"{source}:{number}: `{END}` closes no block")
            start, lines = opened
            found.append(Block(start["module"], start["function"], "\n".join(lines)))
            opened = None
        elif opened is not None:
            opened[1].append(line)
    if opened is not None:
        raise FiguresError(f"{source}: `{opened[0].group(0)}` is never closed by `{END}`")
    return found


def render_block(block: Block, root: Path, *, source: str = "text") -> str:
    """The markdown a block should hold now: its renderer's output for the results file, or
    the "Not measured yet" line when there is none."""
    where = f"{source}: {block.marker}"
    module_name = f"bench.{block.module}"
    try:
        result = load(block.module, root=root)
    except ResultsError as exc:
        raise FiguresError(f"{where}: {exc}") from exc
    if result is None:
        if module_name not in sys.modules and importlib.util.find_spec(module_name) is None:
            raise FiguresError(f"{where}: there is no module {module_name}")
        return not_measured(block.module)
    renderer = _renderer(module_name, block.function, where)
    try:
        rendered = renderer(result)
    except Exception as exc:
        raise FiguresError(f"{where}: {block.name} failed on the results file: {exc!r}") from exc
    if not isinstance(rendered, str):
        raise FiguresError(f"{where}: {block.name} returned {type(rendered).__name__}, not str")
    missing = [key for key in ("date", "machine") if str(result[key]) not in rendered]
    if missing:
        raise FiguresError(
            f"{where}: what {block.name} renders does not state the run's {' and '.join(missing)}"
            " (put `bench.figures.caption(result)` in it)"
        )
    return rendered.strip("\n")


def _renderer(module_name: str, function: str, where: str) -> Callable[[dict[str, Any]], Any]:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name == module_name:
            raise FiguresError(f"{where}: there is no module {module_name}") from exc
        raise FiguresError(f"{where}: {module_name} cannot be imported: {exc}") from exc
    renderer = getattr(module, function, None)
    if not callable(renderer):
        raise FiguresError(
            f"{where}: {module_name} has no function {function}(result: dict) -> str, "
            f"and bench/results/{module_name.split('.')[-1]}.json exists for it to render"
        )
    return renderer  # type: ignore[no-any-return]


def regenerate(
    text: str, root: Path, *, source: str = "text"
) -> tuple[str, list[tuple[str, bool]]]:
    """The document with every block rendered anew, and each block's name with whether its
    markdown changed, in order."""
    blocks(text, source=source)  # reports malformed markers with their line
    report: list[tuple[str, bool]] = []
    out: list[str] = []
    lines = iter(text.splitlines(keepends=True))
    for line in lines:
        start = START.fullmatch(line.strip())
        if start is None:
            out.append(line)
            continue
        old: list[str] = []
        for inner in lines:
            if inner.strip() == END:
                break
            old.append(inner.rstrip("\n"))
        block = Block(start["module"], start["function"], "\n".join(old))
        body = render_block(block, root, source=source)
        new = ["", body, ""]
        report.append((block.name, "\n".join(new) != block.body))
        indent = line[: len(line) - len(line.lstrip())]
        out.append(line)
        out.extend(f"{part}\n" for part in new)
        out.append(f"{indent}{END}\n")
    result = "".join(out)
    if not text.endswith("\n") and result.endswith("\n"):
        result = result[:-1]
    return result, report


def render(text: str, root: Path, *, source: str = "text") -> str:
    """`text` with every block regenerated from the results files under `root`/bench/results.
    Pure: reads the results files, writes nothing. `source` names the document in errors."""
    return regenerate(text, root, source=source)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a block is stale"
    )
    args = parser.parse_args(argv)
    stale = False
    for doc in DOCS:
        path = ROOT / doc
        text = path.read_text(encoding="utf-8")
        try:
            new, report = regenerate(text, ROOT, source=doc.as_posix())
        except FiguresError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for name, changed in report:
            state = ("stale" if args.check else "changed") if changed else "unchanged"
            print(f"{doc.as_posix()}: {name} {state}")
        if not report:
            print(f"{doc.as_posix()}: no figures blocks")
        if new != text:
            stale = True
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        print("stale: run `python -m bench.figures` and commit the docs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
