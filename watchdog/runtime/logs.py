"""Log lines: plain text in a terminal, one JSON object per line for the journal."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from watchdog.runtime.masking import Mask

# syslog priorities: journald reads a leading <N> as the line's priority (`journalctl -p`).
PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def __init__(self, journal: bool = False):
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = record.exc_text or self.formatException(record.exc_info)
        line = json.dumps(out, ensure_ascii=False)
        return f"<{PRIORITY.get(record.levelname, 6)}>{line}" if self.journal else line


class Masked(logging.Filter):
    """Every line is written with the config's secrets masked (`mask_secrets`), its traceback
    too: an exception may quote a header or a body. A line logged with `extra={"mask": mask}`
    is masked with that one."""

    every: Mask | None = None  # the loaded config's secrets

    def filter(self, record: logging.LogRecord) -> bool:
        mask = getattr(record, "mask", None) or Masked.every
        if isinstance(mask, Mask):
            record.msg, record.args = mask(record.getMessage()), None
            if record.exc_info:  # a handler before this one may have kept it unmasked
                record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
        return True


def mask_secrets(mask: Mask) -> None:
    """From now on, every line is logged with these secrets masked (a config was loaded)."""
    Masked.every = mask


def setup(level: str, form: str, journal: bool) -> None:
    """`form`: text, json, or auto (json when stderr is the journal)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(Masked())
    if form == "json" or (form == "auto" and journal):
        handler.setFormatter(JsonFormatter(journal))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level))
    # httpx logs every request URL at INFO (URLs can carry tokens); APScheduler logs every job
    # start and end. Our own lines say what an operator needs; theirs still show warnings.
    for noisy in ("httpx", "httpcore", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
