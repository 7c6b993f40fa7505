"""Field types operators write: durations (90s, 5m, 1h30m), ratios, sizes, URLs, time zones,
HOST:PORT. Each parser raises ValueError with an example of the accepted form."""

from __future__ import annotations

import math
import re
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, ByteSize, Field, TypeAdapter, ValidationError

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_SECONDS = re.compile(r"\d+(?:\.\d+)?")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> float:
    """Seconds in `value`; raises ValueError with an example of the accepted form."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and _SECONDS.fullmatch(value.strip()):
        seconds = float(value)  # plain seconds written as text, e.g. `report --since 3600`
    elif isinstance(value, str) and value.strip() and _PART.sub("", value.strip()) == "":
        seconds = sum(float(n) * _UNIT[u] for n, u in _PART.findall(value.strip()))
    else:
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m, 1h30m or 2d")
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a finite duration")
    if seconds <= 0:
        raise ValueError(f"{value!r} must be longer than zero")
    return seconds


Seconds = Annotated[float, BeforeValidator(parse_duration)]


def _ratio(value: object) -> object:
    """0.05 or "5%"; a bare 5 is a mistake worth naming, not 500 %."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100
        except ValueError:
            pass
    if isinstance(value, int | float) and not isinstance(value, bool) and not 0 <= value <= 1:
        raise ValueError(f'{value!r} is not a ratio from 0 to 1; write e.g. 0.05 or "5%"')
    return value


_BYTES = TypeAdapter(ByteSize)


def _size(value: object) -> object:
    try:
        return _BYTES.validate_python(value)
    except ValidationError:
        raise ValueError(f"{value!r} is not a size; write e.g. 512MiB or 2GiB") from None


Ratio = Annotated[float, BeforeValidator(_ratio), Field(ge=0, le=1)]
Size = Annotated[int, BeforeValidator(_size), Field(gt=0)]


def http_url(value: str | None, key: str | None) -> str | None:
    """A URL the watchdog will call: http(s) and a host; no trailing slash to join paths to."""
    if value is not None and not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"{key} must start with http:// or https:// and name a host")
    return value.rstrip("/") if value is not None else None


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; use an IANA name") from None
    return value


def parse_listen(value: str) -> tuple[str, int]:
    """`127.0.0.1:9464`, `[::1]:9464` or `:9464` (all interfaces)."""
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)
