"""Configured secrets masked out of what the watchdog stores and shows: one Mask for every text."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from typing import Any, TypeVar

SHOWN = "***"
# A shorter value is no credential (a port, `true`, `60s`, read from the environment like any
# secret); masking it would rewrite answers, and so the checks' verdicts, everywhere.
MIN_CHARS = 6
# What a clipped text may end with after the cut (`…`, the quotes of a repr).
_CLIP_MARKS = "…'\""

T = TypeVar("T")


class Mask:
    """Every secret replaced by `***`: as written, and as a JSON body escapes it (`\\/`, `\\"`).

    A text clipped in the middle of a secret (an error body's first 200 bytes) ends in the
    secret's first part: that part is masked too."""

    def __init__(self, secrets: Iterable[str] = ()):
        forms = {
            form
            for secret in secrets
            if len(secret) >= MIN_CHARS
            for form in (secret, json.dumps(secret)[1:-1], secret.replace("/", "\\/"))
        }
        self._forms = sorted(forms, key=len, reverse=True)  # a secret inside another goes last
        self._pattern = re.compile("|".join(map(re.escape, self._forms))) if forms else None

    def text(self, text: str) -> str:
        """`text` with every secret, and a secret's first part at its end, masked."""
        if self._pattern is None:
            return text
        text = self._pattern.sub(SHOWN, text)
        body = text.rstrip(_CLIP_MARKS)
        for form in self._forms:
            # Where the text's last len(form) - 1 characters could begin this secret.
            start = max(0, len(body) - len(form) + 1)
            while (at := body.find(form[:MIN_CHARS], start)) != -1:
                if form.startswith(body[at:]):
                    return body[:at] + SHOWN + text[len(body) :]
                start = at + 1
        return text

    def __call__(self, value: T) -> T:
        """`value` with every string in it masked: a str, or the dataclasses, dicts, lists and
        tuples that hold them (copied, not changed in place)."""
        if self._pattern is None:
            return value
        masked: Any
        if isinstance(value, str):
            masked = self.text(value)
        elif isinstance(value, dict):
            masked = {self(k): self(v) for k, v in value.items()}
        elif isinstance(value, list | tuple):
            masked = type(value)(self(v) for v in value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = dataclasses.fields(value)
            masked = dataclasses.replace(
                value, **{f.name: self(getattr(value, f.name)) for f in fields if f.init}
            )
        else:
            masked = value
        return masked
