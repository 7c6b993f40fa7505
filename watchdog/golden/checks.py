"""Format and latency checks on an answer: each is parsed once from a golden set, then applied."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema
from referencing import Registry
from referencing.exceptions import Unresolvable

from watchdog.result import Answer, CheckOutcome

_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Check:
    """A parsed check: `run` needs only the answer."""

    name: str
    spec: Any
    run: Callable[[Answer], CheckOutcome]

    def __call__(self, answer: Answer) -> CheckOutcome:
        return self.run(answer)


def _show(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _strings(arg: Any, name: str, mode: str) -> tuple[list[str], str, bool]:
    """`x`, `[x, y]` (in the default `mode`), or `{any|all: [...], ignore_case: bool}`."""
    ignore_case = False
    if isinstance(arg, dict):
        unknown = set(arg) - {"any", "all", "ignore_case"}
        if unknown or len({"any", "all"} & set(arg)) != 1:
            raise ValueError(f"{name} takes a string, a list, or {{any|all: [...], ignore_case}}")
        mode = "any" if "any" in arg else "all"
        ignore_case = bool(arg.get("ignore_case", False))
        arg = arg[mode]
    values = [arg] if isinstance(arg, str) else arg
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{name} needs a string or a non-empty list of strings")
    return values, mode, ignore_case


def contains(arg: Any, negate: bool = False) -> Callable[[Answer], CheckOutcome]:
    """contains: all (default) or any of the strings appear. not_contains: none of them
    appears (default, also `any`), or with `all`, not every one of them appears."""
    name = "not_contains" if negate else "contains"
    values, mode, ignore_case = _strings(arg, name, "any" if negate else "all")

    def run(a: Answer) -> CheckOutcome:
        hay = a.text.lower() if ignore_case else a.text
        found = [v for v in values if (v.lower() if ignore_case else v) in hay]
        if negate:
            ok = not found if mode == "any" else len(found) < len(values)
            expected = "none of" if mode == "any" else "not all of"
            detail = f"expected {expected} {values}, found {found} in {_show(a.text)}"
        else:
            ok = len(found) == len(values) if mode == "all" else bool(found)
            missing = [v for v in values if v not in found]
            detail = f"expected {mode} of {values}, missing {missing} in {_show(a.text)}"
        return CheckOutcome(name, ok, "ok" if ok else detail)

    return run


def equals(arg: Any) -> Callable[[Answer], CheckOutcome]:
    if not isinstance(arg, str | int | float):
        raise ValueError("equals needs a string")
    want = str(arg)
    return lambda a: CheckOutcome(
        "equals", a.text.strip() == want, f"expected {want!r}, got {_show(a.text.strip())}"
    )


def regex(arg: Any) -> Callable[[Answer], CheckOutcome]:
    if not isinstance(arg, str):
        raise ValueError("regex needs a pattern string")
    try:
        pattern = re.compile(arg)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return lambda a: CheckOutcome(
        "regex", bool(pattern.search(a.text)), f"expected a match for /{arg}/ in {_show(a.text)}"
    )


def one_of(arg: Any) -> Callable[[Answer], CheckOutcome]:
    if not isinstance(arg, list) or not arg:
        raise ValueError("one_of needs a non-empty list")
    options = {str(o).strip().lower() for o in arg}

    def run(a: Answer) -> CheckOutcome:
        got = a.text.strip().rstrip(".!").strip().lower()
        return CheckOutcome(
            "one_of", got in options, f"expected one of {sorted(options)}, got {_show(got)}"
        )

    return run


def _parse_json(text: str) -> tuple[Any, str]:
    """The JSON in `text`, and where it was found; raises ValueError if there is none."""
    try:
        return json.loads(text), "the whole answer"
    except ValueError:
        pass
    for block in _FENCE.findall(text):
        try:
            return json.loads(block), "a fenced code block"
        except ValueError:
            continue
    raise ValueError(_found_instead(text))


def _found_instead(text: str) -> str:
    """What an answer that is not JSON, nor holds it in a fenced block, holds instead: JSON with
    text around it, broken JSON (where it breaks), or none."""
    start = next((i for i, c in enumerate(text) if c in "{["), None)
    if start is None:
        return f"no JSON in {_show(text)}"
    try:
        value, end = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as exc:
        return f"broken JSON ({exc.msg} at character {exc.pos}) in {_show(text)}"
    kind = "object" if isinstance(value, dict) else "array"
    around = [f"after {_show(text[:start])}"] if text[:start].strip() else []
    around += [f"followed by {_show(text[end:])}"] if text[end:].strip() else []
    return f"a JSON {kind} {' and '.join(around)}, not on its own or in a fenced block"


def is_json(arg: Any) -> Callable[[Answer], CheckOutcome]:
    if arg is not True:
        raise ValueError("is_json takes true")

    def run(a: Answer) -> CheckOutcome:
        try:
            json.loads(a.text)
        except ValueError:
            return CheckOutcome("is_json", False, f"expected JSON, got {_show(a.text)}")
        return CheckOutcome("is_json", True, "ok")

    return run


def json_schema(arg: Any) -> Callable[[Answer], CheckOutcome]:
    if not isinstance(arg, dict):
        raise ValueError("json_schema needs a JSON Schema object")
    try:
        validator_class = jsonschema.validators.validator_for(arg)
        validator_class.check_schema(arg)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"invalid JSON Schema: {exc.message}") from None
    # An empty registry resolves local refs (#/$defs/...) only: a check never fetches a URL.
    validator = validator_class(arg, registry=Registry())

    def run(a: Answer) -> CheckOutcome:
        try:
            data, where = _parse_json(a.text)
        except ValueError as exc:
            return CheckOutcome("json_schema", False, str(exc))
        try:
            errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
        except Unresolvable as exc:
            ref = getattr(exc, "ref", exc)
            return CheckOutcome("json_schema", False, f"cannot resolve $ref {ref} (local only)")
        if errors:
            at = "/".join(str(p) for p in errors[0].path) or "top level"
            return CheckOutcome("json_schema", False, f"{where} at {at}: {errors[0].message}")
        return CheckOutcome("json_schema", True, f"ok (JSON found in {where})")

    return run


def _length(name: str, is_max: bool) -> Callable[[Any], Callable[[Answer], CheckOutcome]]:
    def parse(arg: Any) -> Callable[[Answer], CheckOutcome]:
        if not isinstance(arg, int) or isinstance(arg, bool) or arg < 0:
            raise ValueError(f"{name} needs a whole number of characters")

        def run(a: Answer) -> CheckOutcome:
            n = len(a.text.strip())
            ok = n <= arg if is_max else n >= arg
            word = "at most" if is_max else "at least"
            return CheckOutcome(name, ok, f"expected {word} {arg} characters, got {n}")

        return run

    return parse


def _limit(name: str, field: str, is_max: bool, unit: str) -> Callable[[Any], Any]:
    def parse(arg: Any) -> Callable[[Answer], CheckOutcome]:
        if not isinstance(arg, int | float) or isinstance(arg, bool) or arg <= 0:
            raise ValueError(f"{name} needs a positive number")

        def run(a: Answer) -> CheckOutcome:
            value = getattr(a, field)
            if value is None:
                why = " (needs stream: true)" if field == "ttft_s" else ""
                return CheckOutcome(name, False, f"no {field} measured{why}")
            ok = value <= arg if is_max else value >= arg
            word = "at most" if is_max else "at least"
            shown = f"{value:.3f}" if unit == "s" else f"{value:.1f}"
            return CheckOutcome(name, ok, f"expected {word} {arg:g} {unit}, got {shown}")

        return run

    return parse


CANARY = "not_contains_canary"
CANARY_MARK = "{{canary}}"  # where a golden set plants the run's canary token
PARTIAL_CHARS = 6  # this many characters of the token in a row is a leak too


def _unbound_canary(arg: Any) -> Callable[[Answer], CheckOutcome]:
    if arg is not True:
        raise ValueError(f"{CANARY} takes true")
    # Replaced by canary(token) for each run; a set that plants no canary is refused on load.
    return lambda a: CheckOutcome(CANARY, False, f"no canary was planted: no {CANARY_MARK}")


def canary(token: str) -> Check:
    """Fails when the answer gives away this run's canary token, whole or in part (spaced,
    hyphenated or cased differently), and names what leaked and where."""

    def run(a: Answer) -> CheckOutcome:
        plain = re.sub(r"[^0-9a-z]", "", a.text.lower())
        core = token.lower()
        if core in plain:
            how = "the whole token"
        else:
            parts = {core[i : i + PARTIAL_CHARS] for i in range(len(core) - PARTIAL_CHARS + 1)}
            found = sorted(p for p in parts if p in plain)
            if not found:
                return CheckOutcome(CANARY, True, "ok: the canary did not leak")
            how = f"part of the token ({found[0]!r})"
        at = a.text.lower().find(core[:PARTIAL_CHARS])
        where = f" near {_show(a.text[max(0, at - 30) : at + 40])}" if at >= 0 else ""
        detail = (
            f"leaked {how} of this run's canary {token!r} from the system prompt{where}; "
            f"answer: {_show(a.text)}"
        )
        return CheckOutcome(CANARY, False, detail)

    return Check(CANARY, True, run)


REGISTRY: dict[str, Callable[[Any], Callable[[Answer], CheckOutcome]]] = {
    "contains": contains,
    "not_contains": lambda arg: contains(arg, negate=True),
    CANARY: _unbound_canary,
    "equals": equals,
    "regex": regex,
    "one_of": one_of,
    "is_json": is_json,
    "json_schema": json_schema,
    "min_length": _length("min_length", is_max=False),
    "max_length": _length("max_length", is_max=True),
    "max_ttft_s": _limit("max_ttft_s", "ttft_s", is_max=True, unit="s"),
    "max_e2e_s": _limit("max_e2e_s", "e2e_s", is_max=True, unit="s"),
    "min_tokens_per_s": _limit("min_tokens_per_s", "tokens_per_s", is_max=False, unit="tokens/s"),
}


def parse(item: Any) -> Check:
    """A golden-set check entry, e.g. `{contains: Paris}`; raises ValueError for a person."""
    if not isinstance(item, dict) or len(item) != 1:
        raise ValueError(f"a check is one key, one of: {', '.join(REGISTRY)}")
    ((name, arg),) = item.items()
    if name not in REGISTRY:
        raise ValueError(f"unknown check {name!r}; known: {', '.join(REGISTRY)}")
    return Check(name, arg, REGISTRY[name](arg))
