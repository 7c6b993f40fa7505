"""An answer's tokens counted with the served model's own tokenizer (a Hugging Face
`tokenizer.json`, read by the optional `tokenizers` package), for servers that send no count."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.result import Answer

# The figures a tokenizer replaces: a guess from the length of the text, and Triton's streamed
# events. A count the engine sent is never replaced.
RECOUNTED = frozenset({"estimate", "events"})
INSTALL = "pip install 'mlops-watchdog[tokenizer]'"


class TokenizerError(Exception):
    """The tokenizer cannot be used; the message says why, for the config's problem list."""


@dataclass(frozen=True, eq=False)
class TokenCounter:
    path: Path
    tokenizer: Any  # tokenizers.Tokenizer

    def count(self, text: str) -> int:
        """Tokens in the text, without the special tokens a prompt would get (BOS and the like):
        the model generated the text, not those. The end-of-sequence token is not text, so it
        is not counted either."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


def load(path: Path) -> TokenCounter:
    """Read a tokenizer.json; TokenizerError when the package is missing or the file is not one."""
    try:
        # Optional: only endpoints that name a tokenizer need it.
        from tokenizers import Tokenizer
    except ImportError:
        raise TokenizerError(f"needs the `tokenizers` package: {INSTALL}") from None
    try:
        return TokenCounter(path, Tokenizer.from_file(str(path)))
    except Exception as exc:  # the Rust side raises a bare Exception for what it cannot read
        raise TokenizerError(f"not a Hugging Face tokenizer.json: {_short(exc)}") from None


def recount(answer: Answer, counter: TokenCounter | None) -> None:
    """With a tokenizer, replace an estimated or event count by the tokens of the answer's text
    (its reasoning included: the model generated both)."""
    if counter is None or answer.token_source not in RECOUNTED:
        return
    if not (answer.text or answer.reasoning):
        return
    answer.output_tokens = counter.count(answer.text) + counter.count(answer.reasoning)
    answer.token_source = "tokenizer"


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:159] + "…"
