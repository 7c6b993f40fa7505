"""Golden tests of every check's detail, of golden-set loading and hashing, and of durations."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from watchdog.golden import checks
from watchdog.golden.sets import load_golden_set
from watchdog.parsing.fields import parse_duration
from watchdog.parsing.yamlfile import InvalidFile
from watchdog.result import Answer, CheckOutcome

DEFAULT_SET = Path(__file__).resolve().parent.parent / "golden_sets" / "default.yaml"
KNOWN = (
    "contains, not_contains, not_contains_canary, equals, regex, one_of, is_json, json_schema, "
    "min_length, max_length, max_ttft_s, max_e2e_s, min_tokens_per_s"
)
PERSON = {
    "type": "object",
    "required": ["name", "age"],
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
}


def run(spec: dict[str, Any], answer: Answer | str) -> CheckOutcome:
    if isinstance(answer, str):
        answer = Answer(text=answer)
    return checks.parse(spec)(answer)


# (check, answer that passes, answer that fails, the failing detail, exactly)
GOLDEN: list[tuple[dict[str, Any], Answer | str, Answer | str, str]] = [
    (
        {"contains": "Paris"},
        "The capital is Paris.",
        "It is London.",
        "expected all of ['Paris'], missing ['Paris'] in 'It is London.'",
    ),
    (
        {"contains": ["Paris", "France"]},
        "Paris, France",
        "Paris",
        "expected all of ['Paris', 'France'], missing ['France'] in 'Paris'",
    ),
    (
        {"contains": {"any": ["Paris", "Lutetia"]}},
        "Lutetia, today Paris",
        "Lyon",
        "expected any of ['Paris', 'Lutetia'], missing ['Paris', 'Lutetia'] in 'Lyon'",
    ),
    (
        {"contains": {"any": ["paris"], "ignore_case": True}},
        "PARIS!",
        "Marseille",
        "expected any of ['paris'], missing ['paris'] in 'Marseille'",
    ),
    (
        {"contains": {"all": ["Paris", "France"], "ignore_case": True}},
        "paris is in FRANCE",
        "paris",
        "expected all of ['Paris', 'France'], missing ['France'] in 'paris'",
    ),
    (
        {"not_contains": ["As an AI", "I cannot"]},
        "Sure: 4",
        "As an AI, I cannot answer.",
        "expected none of ['As an AI', 'I cannot'], found ['As an AI', 'I cannot'] "
        "in 'As an AI, I cannot answer.'",
    ),
    (
        {"not_contains": "sorry"},
        "Paris",
        "I'm sorry,\n  I can't.",
        "expected none of ['sorry'], found ['sorry'] in \"I'm sorry, I can't.\"",
    ),
    ({"equals": "4"}, " 4\n", "four", "expected '4', got 'four'"),
    ({"equals": 4}, "4", "4.0", "expected '4', got '4.0'"),
    (
        {"regex": r"\b4\b"},
        "The answer is 4.",
        "The answer is 42.",
        r"expected a match for /\b4\b/ in 'The answer is 42.'",
    ),
    ({"one_of": ["Yes", "No"]}, "yes.", "Maybe!", "expected one of ['no', 'yes'], got 'maybe'"),
    ({"is_json": True}, '{"a": 1}', 'Here: {"a": 1}', "expected JSON, got 'Here: {\"a\": 1}'"),
    (
        {"json_schema": PERSON},
        '{"name": "Alice", "age": 30}',
        '{"name": "Alice", "age": "30"}',
        "the whole answer at age: '30' is not of type 'integer'",
    ),
    (
        {"json_schema": PERSON},
        'Sure!\n```json\n{"name": "Alice", "age": 30}\n```',
        'Sure!\n```json\n{"name": "Alice"}\n```',
        "a fenced code block at top level: 'age' is a required property",
    ),
    (
        {"json_schema": PERSON},
        '{"name": "Alice", "age": 30}',
        "I do not know Alice.",
        "no JSON in 'I do not know Alice.'",
    ),
    (  # seen from SmolLM2 on vLLM: once reported as "no JSON in …"
        {"json_schema": PERSON},
        '{"name": "Alice", "age": 30}',
        '{"name": "Alice", "age": 30}\n```',
        "a JSON object followed by '```', not on its own or in a fenced block",
    ),
    (
        {"json_schema": PERSON},
        '{"name": "Alice", "age": 30}',
        'Here it is: {"name": "Alice", "age": 30} Hope that helps!',
        "a JSON object after 'Here it is:' and followed by 'Hope that helps!', not on its own or "
        "in a fenced block",
    ),
    (
        {"json_schema": PERSON},
        '{"name": "Alice", "age": 30}',
        '{"name": "Alice", "age": 30',
        """broken JSON (Expecting ',' delimiter at character 27) in '{"name": "Alice", "age": 30'""",
    ),
    ({"min_length": 3}, "Paris", " ok \n", "expected at least 3 characters, got 2"),
    (
        {"max_length": 10},
        "Paris",
        "The capital of France is Paris.",
        "expected at most 10 characters, got 31",
    ),
    (
        {"max_ttft_s": 0.5},
        Answer(text="x", ttft_s=0.2),
        Answer(text="x", ttft_s=1.25),
        "expected at most 0.5 s, got 1.250",
    ),
    (
        {"max_ttft_s": 0.5},
        Answer(text="x", ttft_s=0.5),
        Answer(text="x", e2e_s=0.1),
        "no ttft_s measured (needs stream: true)",
    ),
    (
        {"max_e2e_s": 10},
        Answer(text="x", e2e_s=2.0),
        Answer(text="x", e2e_s=12.345),
        "expected at most 10 s, got 12.345",
    ),
    (  # streamed: 1 / ((e2e - ttft) / (n - 1)) = 1 / (1 s / 40) = 40 tokens/s
        {"min_tokens_per_s": 20},
        Answer(text="x", ttft_s=0.5, e2e_s=1.5, output_tokens=41),
        Answer(text="x", ttft_s=0.5, e2e_s=1.5, output_tokens=11),
        "expected at least 20 tokens/s, got 10.0",
    ),
    (  # not streamed: output tokens over e2e
        {"min_tokens_per_s": 20},
        Answer(text="x", e2e_s=0.25, output_tokens=10),
        Answer(text="x", e2e_s=2.0, output_tokens=10),
        "expected at least 20 tokens/s, got 5.0",
    ),
]


@pytest.mark.parametrize(
    ("spec", "good", "bad", "detail"),
    GOLDEN,
    ids=[f"{next(iter(g[0]))}-{i}" for i, g in enumerate(GOLDEN)],
)
def test_check_detail(
    spec: dict[str, Any], good: Answer | str, bad: Answer | str, detail: str
) -> None:
    name = next(iter(spec))
    passed = run(spec, good)
    assert (passed.name, passed.ok) == (name, True), passed.detail
    assert run(spec, bad) == CheckOutcome(name, False, detail)


def test_every_registered_check_has_a_golden_case() -> None:
    # The canary check is bound to each run's token: tests/test_serving.py has its cases.
    assert {next(iter(g[0])) for g in GOLDEN} == set(checks.REGISTRY) - {checks.CANARY}


def test_passing_details_say_what_was_measured() -> None:
    assert run({"contains": "Paris"}, "Paris").detail == "ok"
    assert run({"equals": "4"}, "4").detail == "expected '4', got '4'"
    assert run({"json_schema": PERSON}, '{"name": "A", "age": 1}').detail == (
        "ok (JSON found in the whole answer)"
    )
    fenced = 'Here you go:\n```\n{"name": "A", "age": 1}\n```\nAnything else?'
    assert run({"json_schema": PERSON}, fenced).detail == "ok (JSON found in a fenced code block)"
    assert run({"max_e2e_s": 10}, Answer(e2e_s=2.0)).detail == "expected at most 10 s, got 2.000"


def test_long_answers_are_shortened_in_details() -> None:
    outcome = run({"contains": "x"}, "a" * 200)
    assert outcome.detail == f"expected all of ['x'], missing ['x'] in '{'a' * 79}…'"


def test_local_refs_resolve_and_remote_refs_are_never_fetched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a check tried to use the network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    local = {"$defs": {"n": {"type": "integer"}}, "properties": {"age": {"$ref": "#/$defs/n"}}}
    assert run({"json_schema": local}, '{"age": 3}').ok
    assert run({"json_schema": local}, '{"age": "3"}').detail == (
        "the whole answer at age: '3' is not of type 'integer'"
    )
    remote = {"$ref": "http://schemas.example.invalid/person.json"}
    assert run({"json_schema": remote}, "{}") == CheckOutcome(
        "json_schema",
        False,
        "cannot resolve $ref http://schemas.example.invalid/person.json (local only)",
    )


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("contains", f"a check is one key, one of: {KNOWN}"),
        ({"contains": "a", "regex": "b"}, f"a check is one key, one of: {KNOWN}"),
        ({"contain": "Paris"}, f"unknown check 'contain'; known: {KNOWN}"),
        ({"contains": 5}, "contains needs a string or a non-empty list of strings"),
        ({"not_contains": []}, "not_contains needs a string or a non-empty list of strings"),
        (
            {"contains": {"any": ["a"], "all": ["b"]}},
            "contains takes a string, a list, or {any|all: [...], ignore_case}",
        ),
        (
            {"contains": {"some": ["a"]}},
            "contains takes a string, a list, or {any|all: [...], ignore_case}",
        ),
        ({"equals": [1]}, "equals needs a string"),
        (
            {"regex": "("},
            "invalid regular expression: missing ), unterminated subpattern at position 0",
        ),
        ({"regex": 5}, "regex needs a pattern string"),
        ({"one_of": []}, "one_of needs a non-empty list"),
        ({"is_json": False}, "is_json takes true"),
        ({"json_schema": "object"}, "json_schema needs a JSON Schema object"),
        (
            {"json_schema": {"type": "thing"}},
            "invalid JSON Schema: 'thing' is not valid under any of the given schemas",
        ),
        ({"min_length": -1}, "min_length needs a whole number of characters"),
        ({"max_length": 2.5}, "max_length needs a whole number of characters"),
        ({"max_length": True}, "max_length needs a whole number of characters"),
        ({"max_ttft_s": 0}, "max_ttft_s needs a positive number"),
        ({"max_e2e_s": "10s"}, "max_e2e_s needs a positive number"),
        ({"min_tokens_per_s": True}, "min_tokens_per_s needs a positive number"),
    ],
)
def test_parse_errors(item: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        checks.parse(item)
    assert str(caught.value) == message


def test_default_golden_set() -> None:
    gs = load_golden_set(DEFAULT_SET)
    assert (gs.name, gs.version, gs.path) == ("default", "1", DEFAULT_SET)
    assert [p.id for p in gs.prompts] == [
        "capital-france",
        "arithmetic",
        "person-json",
        "repeat-word",
        "one-word-answer",
    ]
    capital = gs.prompts[0]
    assert capital.sampling == {"max_tokens": 64, "temperature": 0.0, "seed": 42}
    assert [c.name for c in capital.checks] == ["contains", "max_length", "max_e2e_s"]
    assert capital.as_text == "What is the capital of France? Answer with one word."
    assert [m["role"] for m in gs.prompts[2].messages] == ["system", "user"]
    assert len(gs.hash) == 16
    assert all(c(Answer(text="Paris", e2e_s=1.0)).ok for c in capital.checks)


def test_golden_set_hash_is_stable_and_follows_meaning(tmp_path: Path) -> None:
    original = load_golden_set(DEFAULT_SET)
    assert load_golden_set(DEFAULT_SET).hash == original.hash
    text = DEFAULT_SET.read_text(encoding="utf-8")

    copy = tmp_path / "copy.yaml"
    copy.write_text("# a new comment\n" + text, encoding="utf-8")
    assert load_golden_set(copy).hash == original.hash  # comments and paths do not count

    changed = tmp_path / "changed.yaml"
    changed.write_text(text.replace("capital of France", "capital of Italy"), encoding="utf-8")
    assert load_golden_set(changed).hash != original.hash

    stricter = tmp_path / "stricter.yaml"
    stricter.write_text(text.replace("max_length: 200", "max_length: 100"), encoding="utf-8")
    assert load_golden_set(stricter).hash != original.hash


def test_golden_set_problems_are_located(tmp_path: Path) -> None:
    path = tmp_path / "set.yaml"
    path.write_text(
        "name: s\n"
        "prompts:\n"
        "  - id: a\n"
        "    prompt: one\n"
        "    checks:\n"
        "      - regex: '('\n"
        "  - id: a\n"
        "    prompt: two\n"
    )
    with pytest.raises(InvalidFile) as caught:
        load_golden_set(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:6: prompts[0].checks[0]: "
        "invalid regular expression: missing ), unterminated subpattern at position 0",
        f"{path}:7: prompts[1].id: duplicate id 'a'",
    ]


def test_golden_set_needs_exactly_one_input(tmp_path: Path) -> None:
    path = tmp_path / "set.yaml"
    path.write_text("name: s\nprompts:\n  - id: a\n  - {id: b, prompt: x, messages: []}\n")
    with pytest.raises(InvalidFile) as caught:
        load_golden_set(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:3: prompts[0]: give exactly one of `messages` or `prompt`",
        f"{path}:4: prompts[1]: give exactly one of `messages` or `prompt`",
    ]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("250ms", 0.25),
        (" 10s ", 10.0),
        ("3600", 3600.0),
        (45, 45.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "'' is not a duration; write e.g. 30s, 5m, 1h30m or 2d"),
        ("soon", "'soon' is not a duration; write e.g. 30s, 5m, 1h30m or 2d"),
        ("10 s", "'10 s' is not a duration; write e.g. 30s, 5m, 1h30m or 2d"),
        ("-5s", "'-5s' is not a duration; write e.g. 30s, 5m, 1h30m or 2d"),
        ("5x", "'5x' is not a duration; write e.g. 30s, 5m, 1h30m or 2d"),
        (True, "True is not a duration; write e.g. 30s, 5m, 1h30m or 2d"),
        (None, "None is not a duration; write e.g. 30s, 5m, 1h30m or 2d"),
        (0, "0 must be longer than zero"),
        ("0s", "'0s' must be longer than zero"),
    ],
)
def test_parse_duration_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    assert str(caught.value) == message


def test_not_contains_any_and_all() -> None:
    text = Answer(text="I cannot help. As an AI model...")
    assert not run({"not_contains": ["As an AI", "I cannot"]}, text).ok  # none may appear
    assert not run({"not_contains": {"any": ["As an AI", "sorry"]}}, text).ok
    assert run({"not_contains": {"all": ["As an AI", "sorry"]}}, text).ok  # not every one appears
    failed = run({"not_contains": {"all": ["As an AI", "I cannot"]}}, text)
    assert (
        failed.detail
        == "expected not all of ['As an AI', 'I cannot'], found ['As an AI', 'I cannot'] in 'I cannot help. As an AI model...'"
    )
