"""How detector summaries write sizes and durations."""

from __future__ import annotations


def size(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20)):
        if abs(n) >= scale / 10:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1024:.0f} KiB"


def duration(seconds: float) -> str:
    """Short and operator-shaped: 4.9s, 42s, 12m, 1h30m, 24h, 3d."""
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes = int(seconds // 60)
    # Below two days, hours read better: operators write "24h", not "1d".
    days, rest = divmod(minutes, 1440) if minutes >= 2880 else (0, minutes)
    hours, mins = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (mins, "m")) if n)
