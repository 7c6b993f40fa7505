"""Numbered schema migrations. Append only: a released step is never edited."""

from __future__ import annotations

from collections.abc import Callable

from sqlite_utils import Database


def _1_results(db: Database) -> None:
    db.table("results").create(
        {
            "id": int,
            "run_id": str,
            "endpoint": str,
            "prompt_id": str,
            "golden_set": str,
            "golden_set_hash": str,
            "started_at": str,  # RFC 3339 UTC, for people
            "started_ts": float,  # Unix seconds, for queries
            "stream": int,
            "ok": int,
            "error_class": str,
            "error_detail": str,
            "status_code": int,
            "ttfb_s": float,
            "ttft_s": float,
            "ttft_reasoning_s": float,
            "e2e_s": float,
            "itl_p50_s": float,
            "itl_p95_s": float,
            "itl_max_s": float,
            "tpot_s": float,
            "tokens_per_s": float,
            "output_tokens": int,
            "token_source": str,
            "finish_reason": str,
            "model": str,
            "fingerprint": str,
            "checks": str,  # JSON list of {name, ok, detail}
            "checks_passed": int,
            "checks_total": int,
            "response_excerpt": str,
            "response_sha256": str,
            "server_timings": str,  # JSON, as the server reported it
        },
        pk="id",
    )
    db.table("results").create_index(["endpoint", "prompt_id", "started_ts"])
    db.table("results").create_index(["started_ts"])
    db.table("fingerprints").create(
        {
            "endpoint": str,
            "fingerprint": str,
            "first_seen": str,
            "last_seen": str,
            "components": str,  # JSON: what was hashed
        },
        pk=("endpoint", "fingerprint"),
    )


MIGRATIONS: list[Callable[[Database], None]] = [_1_results]
