"""The generic http prober against a real local socket playing an in-house JSON service."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from tests.faultserver import free_port
from watchdog.endpoint import Endpoint
from watchdog.golden import template
from watchdog.golden.sets import Prompt
from watchdog.probers import http
from watchdog.probers.transport import http_client
from watchdog.result import Answer
from watchdog.runtime.clock import SystemClock

PROMPT = Prompt(
    id="p",
    messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": 'Say "Paris"\nand stop.'},
    ],
    sampling={"max_tokens": 8, "temperature": 0.0, "seed": 42},
    checks=[],
)
TEMPLATE = '{"q": {{ prompt | tojson }}, "max_new_tokens": {{ max_tokens }}}'
REASONS = {200: "OK", 429: "Too Many Requests", 500: "Internal Server Error"}


@dataclass(frozen=True)
class Reply:
    body: bytes
    status: int = 200
    content_type: str = "application/json"
    headers: str = ""


def json_reply(obj: object, status: int = 200) -> Reply:
    return Reply(json.dumps(obj).encode(), status)


@dataclass
class Service:
    """Serves `reply` on 127.0.0.1 and keeps what each request carried."""

    reply: Reply = field(default_factory=lambda: json_reply({"output": {"text": "Paris"}}))
    received: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""
    handlers: list[asyncio.Task[None]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        try:
            await self._reply(reader, writer)
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _reply(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, path, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.received.append((method, path, headers, body))
        reply = self.reply
        writer.write(
            (
                f"HTTP/1.1 {reply.status} {REASONS[reply.status]}\r\n"
                f"Content-Type: {reply.content_type}\r\n{reply.headers}"
                "Connection: close\r\n\r\n"
            ).encode()
            + reply.body
        )
        await writer.drain()


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    svc = Service()
    listener = await asyncio.start_server(svc.handle, "127.0.0.1", 0)
    svc.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    async with listener:
        yield svc
    await asyncio.gather(*svc.handlers)


def endpoint(base_url: str, **overrides: object) -> Endpoint:
    fields: dict[str, object] = {
        "name": "svc",
        "api": "http",
        "base_url": base_url,
        "path": "/predict",
        "body_template": TEMPLATE,
        "text_path": "output.text",
        "timeout_s": 5.0,
    }
    if "body_template" in overrides:
        # A template the config would reject: the prober must still record, not raise.
        valid = Endpoint(**fields)  # type: ignore[arg-type]
        return valid.model_copy(update=overrides)
    return Endpoint(**{**fields, **overrides})  # type: ignore[arg-type]


async def ask(service: Service, reply: Reply | None = None, **overrides: object) -> Answer:
    if reply is not None:
        service.reply = reply
    async with http_client() as client:
        ep = endpoint(service.url, **overrides)
        return await http.probe(client, ep, None, PROMPT, True, SystemClock())


async def test_reads_text_at_path_and_times_it(service: Service) -> None:
    answer = await ask(service)
    assert answer.error_class is None, answer.error_detail
    assert answer.text == "Paris" and answer.status_code == 200
    assert answer.ttfb_s is not None and answer.e2e_s is not None
    assert answer.ttft_s == answer.e2e_s and answer.itl_s == []
    assert (answer.output_tokens, answer.token_source) == (2, "estimate")
    ((method, path, headers, _),) = service.received
    assert (method, path) == ("POST", "/predict")
    assert headers["content-type"] == "application/json"


async def test_body_is_the_rendered_template_with_prompt_intact(service: Service) -> None:
    await ask(service, headers={"X-Api-Key": "k"}, method="PUT")
    ((method, _, headers, body),) = service.received
    assert method == "PUT" and headers["x-api-key"] == "k"
    assert (
        body.decode() == '{"q": "Be brief.\\n\\nSay \\"Paris\\"\\nand stop.", "max_new_tokens": 8}'
    )
    assert json.loads(body)["q"] == 'Be brief.\n\nSay "Paris"\nand stop.'


async def test_template_sees_messages_and_temperature(service: Service) -> None:
    template = '{"messages": {{ messages | tojson }}, "t": {{ temperature | tojson }}}'
    await ask(service, body_template=template)
    assert json.loads(service.received[0][3]) == {"messages": PROMPT.messages, "t": 0.0}


async def test_list_index_in_path(service: Service) -> None:
    reply = json_reply({"choices": [{"text": " Paris."}, {"text": "other"}]})
    answer = await ask(service, reply, text_path="choices.0.text")
    assert answer.error_class is None, answer.error_detail
    assert answer.text == " Paris."


@pytest.mark.parametrize(
    ("obj", "text_path", "detail"),
    [
        (
            {"output": {"txt": "Paris"}},
            "output.text",
            "text_path `output.text`: `output` has no `text` (its keys: txt)",
        ),
        ({"result": 1}, "output.text", "text_path `output.text`: the body has no `output`"),
        (
            {"choices": [{"text": "a"}]},
            "choices.1.text",
            "text_path `choices.1.text`: `choices` is an array of 1, with no item `1`",
        ),
        (
            {"output": "Paris"},
            "output.text",
            'text_path `output.text`: `output` is a string, not an object or array: "Paris"',
        ),
        (
            {"output": {"text": 42}},
            "output.text",
            "text_path `output.text` is a number, not a string: 42",
        ),
        (
            {"output": {"text": ["Paris"]}},
            "output.text",
            'text_path `output.text` is an array, not a string: ["Paris"]',
        ),
    ],
)
async def test_path_problems_are_bad_response(
    service: Service, obj: object, text_path: str, detail: str
) -> None:
    answer = await ask(service, json_reply(obj), text_path=text_path)
    assert answer.error_class == "bad_response" and answer.status_code == 200
    assert str(answer.error_detail).startswith(detail), answer.error_detail


async def test_empty_text_is_empty_output(service: Service) -> None:
    answer = await ask(service, json_reply({"output": {"text": ""}}))
    assert answer.error_class == "empty_output"
    assert answer.error_detail == "no content at text_path `output.text`"
    assert answer.output_tokens is None


async def test_500_is_http_status(service: Service) -> None:
    answer = await ask(service, Reply(b"boom", 500, "text/plain"))
    assert answer.error_class == "http_status" and answer.status_code == 500
    assert answer.error_detail == "HTTP 500 Internal Server Error: boom"


async def test_429_is_rate_limited(service: Service) -> None:
    answer = await ask(service, Reply(b"", 429, headers="Retry-After: 3\r\n"))
    assert answer.error_class == "rate_limited" and answer.status_code == 429
    assert answer.error_detail == "HTTP 429 Too Many Requests (Retry-After 3)"


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        (Reply(b"<html>hi</html>", content_type="text/html"), "expected JSON, got text/html"),
        (Reply(b"Paris"), "the body is not JSON"),
    ],
)
async def test_non_json_response_is_bad_response(
    service: Service, reply: Reply, detail: str
) -> None:
    answer = await ask(service, reply)
    assert answer.error_class == "bad_response"
    assert str(answer.error_detail).startswith(detail), answer.error_detail


@pytest.mark.parametrize(
    ("template", "detail"),
    [
        ('{"q": {{ prompt }}}', "body_template does not render to JSON"),  # no tojson
        (
            '{"q": {{ question | tojson }}}',
            "body_template does not render: 'question' is undefined",
        ),
        (
            '{"q": {{ messages.append(1) }}}',  # the sandbox: templates cannot change the prompt
            "body_template does not render: access to attribute 'append' of 'list' object is unsafe",
        ),
    ],
)
async def test_template_failure_is_bad_response_without_a_request(
    service: Service, template: str, detail: str
) -> None:
    answer = await ask(service, body_template=template)
    assert answer.error_class == "bad_response"
    assert str(answer.error_detail).startswith(detail), answer.error_detail
    assert answer.status_code is None and service.received == []


def test_check_template() -> None:
    assert template.check_template(TEMPLATE) is None
    assert template.check_template('{"m": {{ messages | tojson }}, "t": {{ temperature }}}') is None
    assert template.check_template('{"q": "{{ prompt }}"}') == (
        "body_template does not render to JSON: Invalid control character at: line 1"
        ' column 23 (char 22); starts \'{"q": "Answer briefly.\\n\\nSay "hi"\\nthen stop."}\''
    )
    assert template.check_template('{"q": {{ prompt | tojson }') == (
        "body_template does not render: unexpected '}'"
    )
    assert (
        template.check_template("{{ 1 / 0 }}") == "body_template does not render: division by zero"
    )


async def test_connection_refused_is_connect() -> None:
    async with http_client() as client:
        ep = endpoint(f"http://127.0.0.1:{free_port()}")
        answer = await http.probe(client, ep, None, PROMPT, False, SystemClock())
    assert answer.error_class == "connect"
