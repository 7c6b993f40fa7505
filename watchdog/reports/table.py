"""Terminal tables for `once` (one line per result, then the endpoints' readiness) and `gpu` (a
block per GPU): pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from watchdog.result import ProbeResult

if TYPE_CHECKING:
    from watchdog.gpu.nvml import GpuSample
    from watchdog.result import TierOutcome

HEADER = ("ENDPOINT", "PROMPT", "RESULT", "TTFT", "E2E", "ITL P50", "TOKENS", "TOK/S", "DETAIL")


def _s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def _detail(r: ProbeResult) -> str:
    if r.answer.error_class:
        return r.answer.error_detail or ""
    failed = [f"{c.name}: {c.detail}" for c in r.checks if not c.ok]
    return "; ".join(failed)


def _tokens(count: int | None, source: str | None) -> str:
    """`12`, an estimate `12~`, or streamed events that are not tokens `12 events`."""
    if count is None:
        return "-"
    mark = {"estimate": "~", "events": " events"}.get(source or "", "")
    return f"{count}{mark}"


def render(results: list[ProbeResult], width: int = 160, notes: Sequence[str] = ()) -> str:
    """The results, one per line; then `notes` (the endpoints' readiness), then the tally."""
    rows = [HEADER]
    for r in results:
        j = r.to_json()
        tps = j["tokens_per_s"]
        rows.append(
            (
                r.endpoint,
                r.prompt_id,
                "ok" if r.ok else str(r.error_class),
                _s(j["ttft_s"]),
                _s(j["e2e_s"]),
                _s(j["itl_p50_s"]),
                _tokens(j["output_tokens"], j["token_source"]),
                "-" if tps is None else f"{tps:.1f}",
                _detail(r),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]
    lines = []
    for row in rows:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
        line = f"{line}  {row[-1]}".rstrip()
        lines.append(line if len(line) <= width else line[: width - 1] + "…")
    lines += notes  # whole: a terminal wraps them, and the engine's load comes last
    ok = sum(r.ok for r in results)
    lines.append(f"{ok}/{len(results)} ok")
    return "\n".join(lines)


def serving(endpoint: str, tiers: list[TierOutcome], load: dict[str, float] | None) -> str:
    """One line under the table per endpoint: its tiers, and its engine's own load."""
    parts = [f"{t.tier} {'ok' if t.ok else 'FAILED'} ({_tier_detail(t)})" for t in tiers]
    if load:
        parts.append("engine " + ", ".join(f"{k} {v:g}" for k, v in sorted(load.items())))
    return f"{endpoint}: " + "; ".join(parts)


def _tier_detail(t: TierOutcome) -> str:
    if t.tier == "completion":
        return t.detail.split(":")[0]
    if t.ok:
        return f"{t.path} {_s(t.latency_s)}"
    return f"{t.path} {t.error_class}"


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.1f} GiB"


def _num(value: float | None, unit: str, scale: float = 1.0, digits: int = 0) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f} {unit}"


def gpus(samples: list[GpuSample], driver: str | None) -> str:
    """One block per GPU; fields the GPU does not support say so instead of showing 0."""
    if not samples:
        return f"no GPUs (driver {driver or 'unknown'})"
    blocks = []
    for g in samples:
        events = "-" if g.clock_events is None else (", ".join(sorted(g.clock_events)) or "none")
        rows = [
            (
                "utilisation",
                f"gpu {_num(g.util_gpu, '%', 100)}, memory {_num(g.util_memory, '%', 100)}",
            ),
            (
                "memory",
                f"{_gib(g.memory_used)} used, {_gib(g.memory_free)} free, "
                f"{_gib(g.memory_reserved)} reserved, {_gib(g.memory_total)} total",
            ),
            ("temperature", _num(g.temperature_c, "°C")),
            ("power", f"{_num(g.power_w, 'W', digits=1)} of {_num(g.power_limit_w, 'W')} limit"),
            ("energy", _num(g.energy_j, "kWh", 1 / 3.6e6, 3)),
            (
                "clocks",
                f"SM {_num(g.sm_clock_hz, 'MHz', 1e-6)}, memory {_num(g.memory_clock_hz, 'MHz', 1e-6)}",
            ),
            ("clock events", events),
            (
                "ECC",
                f"uncorrected (volatile) {_num(g.ecc_uncorrected_volatile, '')}, "
                f"corrected (aggregate) {_num(g.ecc_corrected_aggregate, '')}",
            ),
            (
                "row remapping",
                "-"
                if g.remap_pending is None
                else f"pending {'yes' if g.remap_pending else 'no'}, failed {'yes' if g.remap_failed else 'no'}",
            ),
            (
                "PCIe",
                f"tx {_num(g.pcie_tx_bytes_s, 'MB/s', 1e-6, 1)}, rx {_num(g.pcie_rx_bytes_s, 'MB/s', 1e-6, 1)}",
            ),
            ("P-state", "-" if g.performance_state is None else f"P{g.performance_state}"),
            ("MIG", "-" if g.mig_enabled is None else ("on" if g.mig_enabled else "off")),
        ]
        for p in g.processes or ():
            rows.append(("process", f"{p.pid} {p.name or '?'}: {_gib(p.used_bytes)}"))
        if g.unsupported:
            rows.append(("not supported", ", ".join(sorted(g.unsupported))))
        lines = [f"GPU {g.index}  {g.name}  {g.uuid}"]
        lines += [f"  {k:<14} {v.strip()}" for k, v in rows]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + f"\n\ndriver {driver or 'unknown'}"
