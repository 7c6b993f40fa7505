"""nvidia-smi read as CSV, keyed by GPU UUID: the reference the real-GPU tests compare with."""

from __future__ import annotations

import subprocess

# What the tests compare, and what the bench times as one nvidia-smi call.
QUERY = (
    "uuid",
    "utilization.gpu",
    "memory.used",
    "memory.total",
    "temperature.gpu",
    "power.draw",
    "clocks.sm",
    "clocks_event_reasons.active",
)
MISSING = {"[N/A]", "[Not Supported]", "N/A", ""}


def command(fields: tuple[str, ...] = QUERY) -> list[str]:
    return ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]


def query(fields: tuple[str, ...] = QUERY) -> dict[str, dict[str, str | None]]:
    """One nvidia-smi call: {uuid: {field: text or None}}; the first field must be uuid."""
    assert fields[0] == "uuid"
    out = subprocess.run(command(fields), capture_output=True, text=True, check=True, timeout=60)
    rows: dict[str, dict[str, str | None]] = {}
    for line in out.stdout.splitlines():
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        assert len(cells) == len(fields), f"nvidia-smi row {line!r} does not match {fields}"
        rows[cells[0]] = {
            f: None if c in MISSING else c for f, c in zip(fields, cells, strict=True)
        }
    return rows


def number(row: dict[str, str | None], field: str) -> float | None:
    text = row[field]
    return None if text is None else float(text)


def bits(row: dict[str, str | None], field: str) -> int | None:
    """A bitmask field such as clocks_event_reasons.active ("0x0000000000000001")."""
    text = row[field]
    return None if text is None else int(text, 16)
