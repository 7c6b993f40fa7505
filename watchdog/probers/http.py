"""`http`: a JSON service of your own, asked through a body template and read at a dotted path."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx

from watchdog.endpoint import Endpoint
from watchdog.golden.sets import Prompt
from watchdog.golden.template import BodyTemplateError, check_template, render_body
from watchdog.probers.api import Api
from watchdog.probers.exchange import (
    Failure,
    ask,
    whole_json,
)
from watchdog.probers.identity import identify
from watchdog.probers.openai_common import headers
from watchdog.result import Answer
from watchdog.runtime.clock import Clock


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _excerpt(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:79] + "…"


def text_at(obj: Any, text_path: str) -> str:
    """The string at a dotted path (`output.text`, `choices.0.text`); ValueError says what is there."""
    where = "the body"
    current = obj
    for key in text_path.split("."):
        if isinstance(current, dict):
            if key not in current:
                keys = ", ".join(list(current)[:10]) or "none"
                raise ValueError(
                    f"text_path `{text_path}`: {where} has no `{key}` (its keys: {keys})"
                )
            current = current[key]
        elif isinstance(current, list):
            if not key.isdigit() or int(key) >= len(current):
                raise ValueError(
                    f"text_path `{text_path}`: {where} is an array of {len(current)},"
                    f" with no item `{key}`"
                )
            current = current[int(key)]
        else:
            raise ValueError(
                f"text_path `{text_path}`: {where} is {_kind(current)}, not an object"
                f" or array: {_excerpt(current)}"
            )
        where = f"`{key}`"
    if not isinstance(current, str):
        raise ValueError(
            f"text_path `{text_path}` is {_kind(current)}, not a string: {_excerpt(current)}"
        )
    return current


async def probe(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    model: str | None,
    prompt: Prompt,
    stream: bool,
    clock: Clock,
) -> Answer:
    """Send the rendered body and time the answer; never raises for what the endpoint does.

    One JSON request and response whatever `stream` says, so TTFT is e2e. `model` is not
    sent: the template's variables leave it out, as the service's path names its model.
    """
    try:
        body = render_body(endpoint.body_template or "", prompt)
    except BodyTemplateError as exc:
        return Answer(error_class="bad_response", error_detail=str(exc))
    path = endpoint.path or ""
    url = endpoint.base_url + (path if path.startswith("/") else "/" + path)
    request_headers = {"Content-Type": "application/json", **headers(endpoint, False)}

    async def read(response: httpx.Response, answer: Answer, t0: float) -> None:
        obj = await whole_json(response, endpoint.max_body_bytes, answer, t0, clock)
        try:
            answer.text = text_at(obj, endpoint.text_path or "")
        except ValueError as exc:
            raise Failure("bad_response", str(exc), response.status_code) from None

    answer = await ask(
        client,
        clock,
        endpoint,
        url,
        request_headers,
        False,
        read,
        read,
        method=endpoint.method,
        body=body.encode(),
        empty="no content at text_path `{endpoint.text_path}`",
    )
    if answer.error_class is not None:
        return answer
    answer.ttft_s = answer.e2e_s
    # About four characters a token: a service of our own reports no usage we could know.
    answer.output_tokens, answer.token_source = math.ceil(len(answer.text) / 4), "estimate"
    return answer


def _needs_template(endpoint: Endpoint) -> str | None:
    """What an `http` endpoint must give, and a body template that renders to JSON."""
    if not (endpoint.path and endpoint.body_template and endpoint.text_path):
        return "api: http needs `path`, `body_template` and `text_path`"
    problem = check_template(endpoint.body_template)
    if problem and "to JSON" in problem:
        return problem + "; write values as {{ prompt | tojson }}"
    return problem


API = Api("http", probe, identify, needs=_needs_template)
