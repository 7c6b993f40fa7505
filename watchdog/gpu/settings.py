"""The `gpu:` config section: sampling, retention, energy price, and each detector's limits."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    Field,
    field_validator,
)

from watchdog.gpu.nvml import CLOCK_EVENT_REASONS
from watchdog.parsing.fields import Ratio, Seconds, Size
from watchdog.parsing.validate import Strict

# Clock-event reasons that mean the GPU is held back by heat or by its power budget.
THROTTLE_REASONS = (
    "sw_power_cap",
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
)


class Leak(Strict):
    """Used VRAM keeps rising through `window` under the same processes while the load stays
    flat: a steady trend (Mann–Kendall), spread over at least half the window, so that a model
    loading or a server starting (a step) never counts, and no process came or went."""

    window: Seconds = 1800.0
    """The span over which used VRAM must keep rising. A leak is found once about two thirds of
    it has seen the growth. Longer: fewer false alarms from loads that come and go, later
    alerts."""
    min_growth: Size = 1 << 30
    """The growth over the window, by Sen's slope (robust to one spike), that counts as a leak:
    bytes, or a size like `512MiB` or `2GiB`."""
    max_load_change: Ratio = 0.2
    """How much the utilisation medians of the window's two halves may differ for the load to
    count as flat: a ratio from 0 to 1, or a percentage like `"20%"`."""


class Contention(Strict):
    """Several processes share one GPU and its free VRAM runs low."""

    min_processes: int = Field(2, ge=2)
    """Processes on one GPU from which it counts as shared."""
    min_free_ratio: Ratio = 0.05
    """Free VRAM, as a share of the total, below which a shared GPU is in contention: a ratio
    from 0 to 1, or a percentage like `"5%"`."""


class Idle(Strict):
    """Probes to an endpoint bound to a GPU succeed, yet the GPU does no work for them: it has
    no compute process at all, the serving process (found by the endpoint's port) holds no
    memory on it or runs no kernel there, or its utilisation stays low."""

    max_utilization: Ratio = 0.05
    """GPU utilisation during the probes, read from NVML's sample buffer (about five readings a
    second), at or below which the GPU counts as idle: a ratio from 0 to 1, or a percentage like
    `"5%"`. An H200 answering SmolLM2 in 40 ms read 11-15 %; once-a-second readings, 0-6 %, are
    not used for this."""
    cpu_like_tokens_per_s: float = Field(60.0, gt=0)
    """Decode speed, in tokens per second, below which the finding calls the answers CPU-paced.
    Supporting evidence only: a small model, or any model on a big CPU, decodes faster than
    this, so speed never holds a finding back."""
    runs: int = Field(3, ge=1)
    """Consecutive answered probe runs that must all look idle."""


class Throttle(Strict):
    """Thermal or power-cap clock events active without a break for longer than `after`."""

    after: Seconds = 600.0
    """How long the clock events must hold without a break before the GPU counts as
    throttling."""
    reasons: list[str] = list(THROTTLE_REASONS)
    """The NVML clock-event reasons that count. Drop `sw_power_cap` where running at the power
    cap under full load is normal."""

    @field_validator("reasons")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(CLOCK_EVENT_REASONS))
        if unknown:
            raise ValueError(
                f"unknown reason(s) {unknown}; known: {', '.join(CLOCK_EVENT_REASONS)}"
            )
        return value


class Hardware(Strict):
    """XID events, uncorrectable ECC, failed row remapping, lost or missing GPUs."""

    hold: Seconds = 900.0
    """How long one XID event keeps the `gpu_hardware` alert failing."""
    missing_window: Seconds = 86400.0
    """`gpu_missing` fires when fewer GPUs answer than the most seen over this window."""


class Gpu(Strict):
    """GPU telemetry, read through NVML in-process and keyed by UUID, and the limits of each GPU
    detector (each an alert kind, paged after `alerting.failure_threshold` samples in a row)."""

    enabled: bool | Literal["auto"] = "auto"
    """`auto` (or `true`, which acts the same): sample when NVML answers; without a driver, say
    so once, export `mlops_watchdog_gpu_telemetry_up 0` and keep probing. `false`: never load
    NVML."""
    interval: Seconds = 5.0
    """How often every GPU is sampled. Longer: a smaller database and coarser detectors."""
    keep_raw: Seconds = 86400.0
    """How long full-resolution samples are kept before they are folded into one-minute
    averages."""
    keep: Seconds = 30 * 86400.0
    """How long the one-minute averages are kept."""
    price_per_kwh: float | None = Field(None, ge=0)
    """The price of a kWh in `currency`: energy per token is then priced as a cost per 1k tokens.
    None: energy is measured, not priced."""
    currency: str = "EUR"
    """The ISO 4217 code of `price_per_kwh`'s currency, e.g. EUR or USD."""
    leak: Leak = Leak()
    """Limits of `gpu_vram_leak`."""
    contention: Contention = Contention()
    """Limits of `gpu_vram_contention`."""
    idle: Idle = Idle()
    """Limits of `gpu_idle_while_serving`."""
    throttle: Throttle = Throttle()
    """Limits of `gpu_throttling`."""
    hardware: Hardware = Hardware()
    """Limits of `gpu_hardware` and `gpu_missing`."""

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError(f"{value!r} is not a currency code; write e.g. EUR or USD")
        return value
