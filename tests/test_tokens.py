"""Token counts with the model's own tokenizer (an endpoint's `tokenizer`): what it replaces,
what it keeps, how the config says it cannot be read, and the runner using it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from tests.conftest import FakeClock
from watchdog.config.load import load_config
from watchdog.parsing.yamlfile import InvalidFile
from watchdog.probers import tokens
from watchdog.result import Answer
from watchdog.runner import Runner


def word_tokenizer(path: Path) -> Path:
    """A tokenizer.json that makes a token of every word and every punctuation run."""
    tokenizer = Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()  # type: ignore[assignment]
    tokenizer.save(str(path))
    return path


@pytest.fixture
def counter(tmp_path: Path) -> tokens.TokenCounter:
    return tokens.load(word_tokenizer(tmp_path / "tokenizer.json"))


@pytest.mark.parametrize("source", ["estimate", "events"])
def test_a_guess_or_an_event_count_is_replaced(counter: tokens.TokenCounter, source: str) -> None:
    answer = Answer(text="Paris is the capital.", reasoning="France, so", output_tokens=2)
    answer.token_source = source  # type: ignore[assignment]
    tokens.recount(answer, counter)
    assert (answer.output_tokens, answer.token_source) == (5 + 3, "tokenizer")


def test_the_engines_count_is_kept(counter: tokens.TokenCounter) -> None:
    answer = Answer(text="Paris is the capital.", output_tokens=6, token_source="usage")
    tokens.recount(answer, counter)
    assert (answer.output_tokens, answer.token_source) == (6, "usage")
    events = Answer(text="Paris.", output_tokens=1, token_source="events")
    tokens.recount(events, None)  # no tokenizer: events they stay
    assert (events.output_tokens, events.token_source) == (1, "events")
    empty = Answer(token_source=None)
    tokens.recount(empty, counter)  # no answer, nothing to count
    assert (empty.output_tokens, empty.token_source) == (None, None)


def write_config(tmp_path: Path, tokenizer: str) -> Path:
    (tmp_path / "one.yaml").write_text(
        "name: one\nprompts:\n  - {id: p, prompt: 'Capital of France?', checks: []}\n"
    )
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
storage: {{path: w.db, csv_dir: reports}}
endpoints:
  - {{name: t, api: triton, base_url: "http://triton.test", model: m, tokenizer: {tokenizer}}}
probes:
  - {{endpoint: t, golden_set: one.yaml}}
"""
    )
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(InvalidFile) as caught:
        load_config(path, env={})
    return [f"{p.line}: {p.key}: {p.message}" for p in caught.value.problems]


def test_config_reads_the_tokenizer_or_says_why_not(tmp_path: Path) -> None:
    assert problems(write_config(tmp_path, "missing.json")) == [
        "4: endpoints[0].tokenizer: no such file: missing.json"
    ]
    (tmp_path / "bad.json").write_text('{"model": "not one"}')
    (message,) = problems(write_config(tmp_path, "bad.json"))
    assert message.startswith("4: endpoints[0].tokenizer: not a Hugging Face tokenizer.json: ")
    word_tokenizer(tmp_path / "tokenizer.json")
    config = load_config(write_config(tmp_path, "tokenizer.json"), env={})
    assert config.tokenizers["t"].path == tmp_path / "tokenizer.json"


async def test_the_runner_counts_tritons_stream_with_the_tokenizer(tmp_path: Path) -> None:
    word_tokenizer(tmp_path / "tokenizer.json")
    config = load_config(write_config(tmp_path, "tokenizer.json"), env={})
    # Two events, each a few words, as Triton streams them.
    events = [b'data: {"model_name":"m","text_output":"Paris is "}\n\n']
    events.append(b'data: {"model_name":"m","text_output":"the capital."}\n\n')

    def answer(request: httpx.Request) -> httpx.Response:
        body, kind = b"{}", "application/json"
        if request.url.path.endswith("/generate_stream"):
            body, kind = b"".join(events), "text/event-stream"
        return httpx.Response(200, headers={"content-type": kind}, stream=httpx.ByteStream(body))

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        run = await Runner(config, client, FakeClock()).run(config.probes[0])
    (result,) = run.results
    assert result.answer.text == "Paris is the capital."
    assert (result.answer.output_tokens, result.answer.token_source) == (5, "tokenizer")
    assert result.to_json()["token_source"] == "tokenizer"
