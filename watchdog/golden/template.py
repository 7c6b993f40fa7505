"""The request body of `api: http`: a sandboxed Jinja2 template rendered for each golden prompt,
checked to be JSON (at config time with a sample prompt, so a bad template fails `check`)."""

from __future__ import annotations

import json
from typing import Any

from jinja2 import StrictUndefined, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from watchdog.golden.sets import Prompt

# What check_template renders with: quotes and a newline, so that a template that pastes the
# prompt in without `tojson` fails at config time rather than at 3 a.m.
SAMPLE_PROMPT = Prompt(
    id="check",
    messages=[
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": 'Say "hi"\nthen stop.'},
    ],
    sampling={"max_tokens": 64, "temperature": 0.0},
    checks=[],
)


class BodyTemplateError(ValueError):
    """`body_template` does not render to JSON; the message starts with `body_template`."""


def _tojson(value: Any) -> str:
    # Jinja's own tojson escapes <, >, & and ' for HTML; the service should get the prompt as is.
    return json.dumps(value, ensure_ascii=False, default=_not_json)


def _not_json(value: Any) -> Any:
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises here, naming the variable that is missing
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def render_body(template: str, prompt: Prompt) -> str:
    """The request body: `template` rendered for `prompt`, checked to be JSON."""
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    env.filters["tojson"] = _tojson
    variables = {
        "prompt": prompt.as_text,
        "messages": [dict(m) for m in prompt.messages],
        "max_tokens": prompt.sampling.get("max_tokens"),
        "temperature": prompt.sampling.get("temperature"),
    }
    try:
        text = env.from_string(template).render(**variables)
    except Exception as exc:  # a template can fail in any of Python's ways: 1/0, "a" + 1, ...
        raise BodyTemplateError(f"body_template does not render: {exc}") from None
    try:
        json.loads(text)
    except ValueError as exc:
        raise BodyTemplateError(
            f"body_template does not render to JSON: {exc}; starts {text[:80]!r}"
        ) from None
    return text


def check_template(template: str) -> str | None:
    """The problem with `template` for config validation, or None when it renders to JSON."""
    try:
        render_body(template, SAMPLE_PROMPT)
    except BodyTemplateError as exc:
        return str(exc)
    return None
