"""Load YAML while remembering the line of every key, and collect errors as FILE:LINE: key: msg."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str | int, ...]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file, located for a person to fix."""

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        key = f" {self.key}:" if self.key else ""
        return f"{self.file}:{self.line}:{key} {self.message}"


class InvalidFile(Exception):
    """Raised with every problem found, so an operator fixes them all in one pass."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.key))
        super().__init__("\n".join(str(p) for p in self.problems))


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Document:
    """Parsed YAML plus where each value came from; secrets are the values read from ${VAR}."""

    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, path: Path_) -> int:
        """The line of the deepest known ancestor of `path` (1 if none)."""
        for i in range(len(path), -1, -1):
            if path[:i] in self.lines:
                return self.lines[path[:i]]
        return 1

    def problem(self, path: Path_, message: str) -> Problem:
        for secret in self.secrets:
            message = message.replace(secret, "***")
        return Problem(self.file, self.line_of(path), dotted(path), message)


def load(path: Path, env: dict[str, str] | None = None, interpolate: bool = True) -> Document:
    """Read a YAML file; ${VAR} is replaced from `env`, and each missing variable is a problem."""
    env = dict(os.environ) if env is None else env
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidFile([Problem(name, 0, "", f"cannot read: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise InvalidFile([Problem(name, 0, "", "not UTF-8 text")]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise InvalidFile([Problem(name, line, "", f"invalid YAML: {exc.problem}")]) from None
    except yaml.reader.ReaderError as exc:  # a control character: no mark, only a position
        line = text.count("\n", 0, exc.position) + 1
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        message = f"invalid YAML: character {char}: {exc.reason}"
        raise InvalidFile([Problem(name, line, "", message)]) from None
    doc = Document(name, None)
    scalars = yaml.SafeLoader("")

    def construct(node: yaml.Node, path: Path_) -> Any:
        try:
            return scalars.construct_object(node)
        except (yaml.YAMLError, ValueError) as exc:
            # An unknown tag (!Ref) or a bad typed scalar (!!int x) is the file's fault: report it.
            reason = getattr(exc, "problem", None) or exc
            doc.problems.append(doc.problem(path, f"invalid YAML value: {reason}"))
            return None

    active: set[int] = set()  # nodes being built: an alias back to one of them is a cycle

    def build(node: yaml.Node, path: Path_) -> Any:
        doc.lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in active:
            doc.problems.append(doc.problem(path, "recursive YAML alias"))
            return None
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            active.add(id(node))
            try:
                return build_collection(node, path)
            finally:
                active.discard(id(node))
        value = construct(node, path)
        if interpolate and isinstance(value, str) and "${" in value:
            value = _interpolate(value, path, doc, env)
        return value

    def build_collection(node: yaml.Node, path: Path_) -> Any:
        if isinstance(node, yaml.SequenceNode):
            return [build(item, (*path, i)) for i, item in enumerate(node.value)]
        out: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`
                value = build(value_node, path)
                for part in value if isinstance(value, list) else [value]:
                    if isinstance(part, dict):
                        merged = {**part, **merged}
                continue
            key = str(construct(key_node, path))
            child = (*path, key)
            doc.lines[child] = key_node.start_mark.line + 1
            if key in out:
                doc.problems.append(doc.problem(child, "duplicate key"))
            out[key] = build(value_node, child)
        return {**merged, **out}

    doc.data = build(node, ()) if node is not None else {}
    return doc


def _interpolate(value: str, path: Path_, doc: Document, env: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        var = match.group(1)
        if var not in env:
            doc.problems.append(doc.problem(path, f"environment variable {var} is not set"))
            return ""
        if env[var]:
            doc.secrets.add(env[var])
        return env[var]

    return _VAR.sub(sub, value)
