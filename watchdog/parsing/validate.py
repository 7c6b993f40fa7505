"""Turn pydantic validation errors into located problems a person can act on."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from watchdog.parsing.yamlfile import Document, Path_

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Unknown keys are errors; parsed config is immutable. Each field's docstring is its
    description: `mlops-watchdog config schema` and docs/config.md are made from them."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def _message(error: Any, model: type[BaseModel], loc: Path_) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key (allowed here: {', '.join(_allowed(model, loc[:-1]))})"
    if kind == "missing":
        return "required key is missing"
    msg = str(error["msg"]).replace("Input should be", "must be")
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _allowed(model: type[BaseModel], loc: Path_) -> list[str]:
    """The keys the model accepts at `loc`, following nested models through lists."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part)
        current = _model_in(field.annotation) if field else None
    return list(current.model_fields) if current else []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def parse(
    doc: Document, model: type[M], data: Any, at: Path_ = (), context: Any = None
) -> M | None:
    """Validate `data` (found at `at` in `doc`); problems go to `doc.problems`. `context` is
    handed to the model's validators (the endpoint's APIs)."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        for error in exc.errors():
            loc = _in_file(data, error["loc"], error["type"])
            doc.problems.append(doc.problem((*at, *loc), _message(error, model, loc)))
        return None


def _in_file(data: Any, loc: tuple[Any, ...], kind: str) -> Path_:
    """The keys of `loc` that are in the file: pydantic adds union members (`version.int`)."""
    out: list[str | int] = []
    for n, part in enumerate(loc):
        keyed = isinstance(data, dict) and part in data
        indexed = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if keyed or indexed:
            data = data[part]
        elif not (kind == "missing" and n == len(loc) - 1):
            continue
        out.append(part)
    return tuple(out)
