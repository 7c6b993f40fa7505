"""Golden prompt sets: YAML files of prompts with the checks their answers must pass."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from watchdog.golden import checks as checks_mod
from watchdog.parsing.validate import Strict, parse
from watchdog.parsing.yamlfile import Document, InvalidFile, load

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Message(Strict):
    role: Literal["system", "user", "assistant", "developer"]
    content: str


class Sampling(Strict):
    max_tokens: int = Field(64, gt=0)
    temperature: float = Field(0.0, ge=0)
    seed: int | None = 42
    top_p: float | None = Field(None, gt=0, le=1)
    stop: list[str] | None = None


class PromptSpec(Strict):
    id: str = Field(pattern=ID_PATTERN)
    messages: list[Message] | None = None
    prompt: str | None = None
    checks: list[Any] = []
    max_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_input(self) -> PromptSpec:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of `messages` or `prompt`")
        return self


class GoldenSetSpec(Strict):
    name: str = Field(pattern=ID_PATTERN)
    version: int | str = 1
    description: str = ""
    defaults: Sampling = Sampling()
    prompts: list[PromptSpec] = Field(min_length=1)


@dataclass(frozen=True)
class Prompt:
    id: str
    messages: list[dict[str, str]]
    sampling: dict[str, Any]
    checks: list[checks_mod.Check]

    def with_system(self, system_prompt: str | None) -> Prompt:
        """The endpoint's system prompt first, unless the golden prompt brings its own."""
        if not system_prompt or any(m["role"] == "system" for m in self.messages):
            return self
        system = {"role": "system", "content": system_prompt}
        return Prompt(self.id, [system, *self.messages], self.sampling, self.checks)

    def with_extra_tokens(self, extra: int) -> Prompt:
        """Room for a reasoning model's thinking on top of the answer's own max_tokens."""
        if not extra or "max_tokens" not in self.sampling:
            return self
        sampling = {**self.sampling, "max_tokens": self.sampling["max_tokens"] + extra}
        return Prompt(self.id, self.messages, sampling, self.checks)

    @property
    def plants_canary(self) -> bool:
        return any(c.name == checks_mod.CANARY for c in self.checks)

    def with_canary(self, token: str) -> Prompt:
        """This run's canary in the messages, and the leak check that looks for it."""
        if not self.plants_canary:
            return self
        messages = [
            {**m, "content": m["content"].replace(checks_mod.CANARY_MARK, token)}
            for m in self.messages
        ]
        bound = [
            checks_mod.canary(token) if c.name == checks_mod.CANARY else c for c in self.checks
        ]
        return Prompt(self.id, messages, self.sampling, bound)

    @property
    def as_text(self) -> str:
        """The prompt for completion APIs: the messages' contents, one per paragraph."""
        return "\n\n".join(m["content"] for m in self.messages)


@dataclass(frozen=True)
class GoldenSet:
    name: str
    version: str
    path: Path
    hash: str  # of the parsed content: edits that change meaning change it, comments do not
    prompts: list[Prompt]


def load_golden_set(path: Path) -> GoldenSet:
    """Parse and check a golden set; raises InvalidFile listing every problem."""
    doc = load(path, interpolate=False)
    spec = parse(doc, GoldenSetSpec, doc.data)
    parsed_checks = _parse_checks(doc)
    prompts: list[Prompt] = []
    if spec is not None:
        seen: set[str] = set()
        for i, p in enumerate(spec.prompts):
            if p.id in seen:
                doc.problems.append(doc.problem(("prompts", i, "id"), f"duplicate id {p.id!r}"))
            seen.add(p.id)
            sampling = spec.defaults.model_dump(exclude_none=True)
            sampling.update(p.model_dump(include={"max_tokens", "temperature"}, exclude_none=True))
            messages = (
                [m.model_dump() for m in p.messages]
                if p.messages is not None
                else [{"role": "user", "content": p.prompt or ""}]
            )
            prompt = Prompt(p.id, messages, sampling, parsed_checks[i])
            if prompt.plants_canary and not any(
                checks_mod.CANARY_MARK in m["content"] for m in messages
            ):
                doc.problems.append(
                    doc.problem(
                        ("prompts", i, "checks"),
                        f"{checks_mod.CANARY} needs {checks_mod.CANARY_MARK} in one of the "
                        "prompt's messages (the system message, usually)",
                    )
                )
            prompts.append(prompt)
    if doc.problems or spec is None:
        raise InvalidFile(doc.problems)
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return GoldenSet(spec.name, str(spec.version), path, digest, prompts)


def _parse_checks(doc: Document) -> dict[int, list[checks_mod.Check]]:
    """Each prompt's checks, from the raw data, so their problems show beside any others."""
    raw = doc.data.get("prompts") if isinstance(doc.data, dict) else None
    out: dict[int, list[checks_mod.Check]] = {}
    for i, prompt in enumerate(raw if isinstance(raw, list) else []):
        items = prompt.get("checks") if isinstance(prompt, dict) else None
        out[i] = []
        for j, item in enumerate(items if isinstance(items, list) else []):
            try:
                out[i].append(checks_mod.parse(item))
            except ValueError as exc:
                doc.problems.append(doc.problem(("prompts", i, "checks", j), str(exc)))
    return out
