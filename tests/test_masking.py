"""One mask for every configured secret (runtime/masking.py), applied where the probers' answers
and looks come back into the runner: split across stream chunks, compressed, cut short, echoed
by the routes, quoted by an exception, and in the log line that tells of it."""

from __future__ import annotations

import base64
import gzip
import io
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FakeClock
from watchdog.config.load import adhoc_config, load_config
from watchdog.result import Answer, CheckOutcome
from watchdog.runner import Runner
from watchdog.runtime import logs
from watchdog.runtime.masking import Mask

KEY = "sk-planted-4f9c2e7a1b"
PASSWORD = "pl4nted-s3cret~pw"  # what basic auth makes of it holds a `+`
GOLDEN = """name: echo
prompts:
  - id: capital
    prompt: "What is the capital of France?"
    checks: [{contains: Paris}]
"""


def test_a_secret_is_masked_as_written_and_as_json_escapes_it() -> None:
    quoted, token = 'say "hello"', "cHJvYmU6cGw0bnRlZC1zM2NyZXQ/Lw=="
    slashed = token.replace("/", "\\/")  # as PHP's json_encode writes it
    said = f"key {KEY}, token {json.dumps(token)} or {slashed}, {json.dumps(quoted)}"
    assert Mask({KEY, token, quoted}).text(said) == 'key ***, token "***" or ***, "***"'


def test_the_longer_of_two_secrets_is_masked_whole() -> None:
    assert Mask({PASSWORD, f"probe:{PASSWORD}"}).text(f"probe:{PASSWORD}!") == "***!"


def test_values_too_short_to_be_credentials_are_left_alone() -> None:
    """`${VAR}` also gives ports, booleans and durations; masking them would change answers."""
    said = '{"ok": true, "port": 8080, "every": "60s"}'
    assert Mask({"true", "8080", "60s", "false"}).text(said) == said


@pytest.mark.parametrize(
    ("clipped", "masked"),
    [
        (
            f"HTTP 401 Unauthorized: invalid key {KEY[:12]}",
            "HTTP 401 Unauthorized: invalid key ***",
        ),
        (f"connection broke: {KEY[:9]}…", "connection broke: ***…"),
        (f"is not JSON; starts 'key={KEY[:15]}'", "is not JSON; starts 'key=***'"),
        (f"{KEY[:5]} is too short to tell", f"{KEY[:5]} is too short to tell"),
    ],
)
def test_a_secret_cut_short_at_the_end_of_a_clipped_text_is_masked(
    clipped: str, masked: str
) -> None:
    assert Mask({KEY}).text(clipped) == masked


@dataclass(frozen=True)
class Held:
    tiers: list[CheckOutcome]
    identity: dict[str, object]
    pair: tuple[str, float]


def test_every_string_inside_is_masked_in_a_copy() -> None:
    answer = Answer(text=f"echo {KEY}", error_detail=KEY, itl_s=[0.1], server_timings={KEY: 1.0})
    held = Held([CheckOutcome("c", False, f"got {KEY}")], {"ids": [KEY], "n": 3}, (KEY, 2.0))
    masked_answer, masked_held = Mask({KEY})((answer, held))
    assert masked_answer.text == "echo ***" and masked_answer.error_detail == "***"
    assert masked_answer.itl_s == [0.1] and masked_answer.server_timings == {"***": 1.0}
    assert masked_held == Held(
        [CheckOutcome("c", False, "got ***")], {"ids": ["***"], "n": 3}, ("***", 2.0)
    )
    assert answer.text == f"echo {KEY}"  # the original is left as it was
    assert Mask()(held) is held  # no secrets, nothing copied


def test_basic_auth_in_base_url_makes_its_token_pair_and_password_secrets(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "endpoints:\n"
        '  - {name: gated, api: openai-chat, base_url: "http://probe:${PW}@gw.test"}\n'
        "probes:\n  - {endpoint: gated, golden_set: default}\n"
    )
    path.chmod(0o600)
    config = load_config(path, env={"PW": PASSWORD})
    token = base64.b64encode(f"probe:{PASSWORD}".encode()).decode()
    assert config.endpoints["gated"].headers == {"Authorization": f"Basic {token}"}
    assert {token, f"probe:{PASSWORD}", PASSWORD} <= config.secrets
    echoed = f"denied: Basic {token} (probe:{PASSWORD})"
    assert Mask(config.secrets).text(echoed) == "denied: Basic *** (***)"


def test_once_url_masks_its_key_and_the_password_in_its_url() -> None:
    bearer = adhoc_config(
        "http://llm.test", "openai-chat", "m", "default", {"Authorization": f"Bearer {KEY}"}
    )
    assert bearer.secrets == {KEY}
    basic = adhoc_config(f"http://probe:{PASSWORD}@llm.test", "openai-chat", "m", "default", {})
    assert {f"probe:{PASSWORD}", PASSWORD} <= basic.secrets


class Chunks(httpx.AsyncByteStream):
    """A body that arrives in these pieces, as a socket hands them over."""

    def __init__(self, *pieces: bytes):
        self.pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


def sse(*contents: str) -> bytes:
    events = [{"choices": [{"delta": {"content": c}, "finish_reason": None}]} for c in contents]
    events.append({"choices": [{"delta": {}, "finish_reason": "stop"}]})
    lines = [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


def unread(status: int, body: bytes, **headers: str) -> httpx.Response:
    """A response whose body is still to be read, as from a socket."""
    return httpx.Response(status, headers=headers, stream=Chunks(body))


def gateway(chat: Callable[[httpx.Request], httpx.Response]) -> httpx.MockTransport:
    """A gateway in front of a model: its health route says who called, its models route
    names a model after the key, and `chat` answers the prompt."""

    def handle(request: httpx.Request) -> httpx.Response:
        said = request.headers.get("authorization", "")
        if request.url.path == "/health":
            body = gzip.compress(f"invalid credentials: {said}".encode())
            return unread(401, body, **{"content-encoding": "gzip"})
        if request.url.path == "/v1/models":
            models = {"data": [{"id": f"m-{said.split()[-1]}"}]}
            return unread(200, json.dumps(models).encode(), **{"content-type": "application/json"})
        if request.url.path == "/v1/chat/completions":
            return chat(request)
        return unread(404, b"")

    return httpx.MockTransport(handle)


async def probe(
    tmp_path: Path, transport: httpx.MockTransport
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One run of the echo golden set through the runner: its results, and the rest of the run."""
    (tmp_path / "echo.yaml").write_text(GOLDEN)
    path = tmp_path / "config.yaml"
    path.write_text(
        "storage: {responses: full}\n"
        "endpoints:\n"
        '  - {name: e, api: openai-chat, base_url: "http://gw.test", model: m,'
        ' headers: {Authorization: "Bearer ${KEY}"}}\n'
        "probes:\n  - {endpoint: e, golden_set: echo.yaml}\n"
    )
    config = load_config(path, env={"KEY": KEY})
    async with httpx.AsyncClient(transport=transport) as client:
        run = await Runner(config, client, FakeClock()).run(config.probes[0])
    results = [r.to_json() for r in run.results]
    return results, {"tiers": run.tier_rows(), "identity": run.identity, "load": run.load_row()}


async def test_an_answer_that_echoes_the_key_split_across_chunks_is_masked_before_the_checks(
    tmp_path: Path,
) -> None:
    body = sse("You sent sk-plan", "ted-4f9c2e7a1b, not a city")
    cut = body.index(b"ted-4f9")  # and the second event split in the middle of the key
    pieces = (body[: cut + 3], body[cut + 3 :])

    def chat(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, headers=headers, stream=Chunks(*pieces))

    (result,), look = await probe(tmp_path, gateway(chat))
    assert result["error_class"] == "check_failed"
    assert result["response_excerpt"] == "You sent ***, not a city"
    assert "'You sent ***, not a city'" in result["checks"][0]["detail"]
    assert look["identity"]["model_ids"] == ["m-***"]
    tiers = {t["tier"]: t["detail"] for t in look["tiers"]}
    assert tiers["liveness"] == (
        "GET /health: http_status: HTTP 401 Unauthorized: invalid credentials: Bearer ***"
    )
    assert KEY not in json.dumps([result, look])


async def test_an_error_body_cut_in_the_middle_of_the_key_keeps_none_of_it(
    tmp_path: Path,
) -> None:
    def chat(request: httpx.Request) -> httpx.Response:
        said = request.headers["authorization"]
        return unread(403, f"{'x' * 180} {said} is not allowed".encode())

    (result,), look = await probe(tmp_path, gateway(chat))
    assert result["error_detail"].endswith("xxx Bearer ***"), result["error_detail"]
    assert KEY[:7] not in json.dumps([result, look])


@pytest.mark.parametrize("form", [logging.Formatter(logs.TEXT_FORMAT), logs.JsonFormatter()])
async def test_what_an_exception_quotes_is_masked_in_the_result_and_the_log(
    tmp_path: Path, form: logging.Formatter
) -> None:
    def chat(request: httpx.Request) -> httpx.Response:
        raise ValueError(f"header value {request.headers['authorization']!r} is not allowed")

    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.addFilter(logs.Masked())  # as logs.setup has it
    handler.setFormatter(form)
    logging.getLogger().addHandler(handler)
    try:
        (result,), _ = await probe(tmp_path, gateway(chat))
    finally:
        logging.getLogger().removeHandler(handler)
    assert result["error_class"] == "probe_error"
    assert result["error_detail"] == (
        "the watchdog could not probe: ValueError: header value 'Bearer ***' is not allowed"
    )
    assert "Traceback" in written.getvalue() and "Bearer ***" in written.getvalue()
    assert KEY not in written.getvalue()


def test_once_a_config_is_loaded_every_log_line_is_masked() -> None:
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.addFilter(logs.Masked())  # as logs.setup has it
    handler.setFormatter(logging.Formatter(logs.TEXT_FORMAT))
    logger = logging.getLogger("mlops_watchdog.test")
    logger.addHandler(handler)
    before = logs.Masked.every
    try:
        logs.mask_secrets(Mask({KEY}))
        logger.warning("a library said: %s", f"401 for Bearer {KEY}")
        try:
            raise RuntimeError(f"refused {KEY}")
        except RuntimeError:
            logger.exception("and failed")
    finally:
        logs.Masked.every = before
        logger.removeHandler(handler)
    assert KEY not in written.getvalue()
    assert "401 for Bearer ***" in written.getvalue() and "refused ***" in written.getvalue()
