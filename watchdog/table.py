"""The `once` table: one line per result, sized for a terminal, built by a pure function."""

from __future__ import annotations

from watchdog.result import ProbeResult

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


def render(results: list[ProbeResult], width: int = 160) -> str:
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
                "-"
                if j["output_tokens"] is None
                else f"{j['output_tokens']}{'~' if j['token_source'] == 'estimate' else ''}",
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
    ok = sum(r.ok for r in results)
    lines.append(f"{ok}/{len(results)} ok")
    return "\n".join(lines)
