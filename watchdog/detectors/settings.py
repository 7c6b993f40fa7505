"""The `gpu:` config section: sampling, retention, energy price, and each detector's limits."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    ByteSize,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from watchdog.durations import parse_duration
from watchdog.validate import Strict

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
# Clock-event reasons that mean the GPU is held back by heat or by its power budget.
THROTTLE_REASONS = (
    "sw_power_cap",
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
)


class Leak(Strict):
    """Used VRAM keeps climbing over `window` while the load stays flat."""

    window: Seconds = 1800.0
    min_growth: Size = 1 << 30  # over the window, by the robust slope
    max_load_change: Ratio = 0.2  # utilisation medians of the window's halves differ less


class Contention(Strict):
    """Several processes share one GPU and its free VRAM runs low."""

    min_processes: int = Field(2, ge=2)
    min_free_ratio: Ratio = 0.05


class Idle(Strict):
    """Probes to an endpoint bound to a GPU succeed, yet the GPU does no work for them."""

    max_utilization: Ratio = 0.05
    cpu_like_tokens_per_s: float = Field(60.0, gt=0)  # decode slower than this looks like a CPU
    runs: int = Field(3, ge=1)  # consecutive probe runs that must look idle


class Throttle(Strict):
    """Thermal or power-cap clock events active without a break for longer than `after`."""

    after: Seconds = 600.0
    reasons: list[str] = list(THROTTLE_REASONS)

    @field_validator("reasons")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        from watchdog.nvml import CLOCK_EVENT_REASONS

        unknown = sorted(set(value) - set(CLOCK_EVENT_REASONS))
        if unknown:
            raise ValueError(
                f"unknown reason(s) {unknown}; known: {', '.join(CLOCK_EVENT_REASONS)}"
            )
        return value


class Hardware(Strict):
    """XID events, uncorrectable ECC, failed row remapping, lost or missing GPUs."""

    hold: Seconds = 900.0  # an XID keeps the alert failing this long
    missing_window: Seconds = 86400.0  # GPU count below its maximum over this window


class Gpu(Strict):
    enabled: bool | Literal["auto"] = "auto"  # auto: sample when NVML answers
    interval: Seconds = 5.0
    keep_raw: Seconds = 86400.0  # full-resolution samples; then one-minute averages
    keep: Seconds = 30 * 86400.0
    price_per_kwh: float | None = Field(None, ge=0)
    currency: str = "EUR"
    leak: Leak = Leak()
    contention: Contention = Contention()
    idle: Idle = Idle()
    throttle: Throttle = Throttle()
    hardware: Hardware = Hardware()

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError(f"{value!r} is not a currency code; write e.g. EUR or USD")
        return value
