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


def _2_alerting(db: Database) -> None:
    db.table("alerts").create(
        {
            "endpoint": str,
            "kind": str,
            "state": str,  # ok | pending | firing
            "failures": int,
            "successes": int,
            "since": str,
            "incident": str,
            "notified_at": str,
            "firing_sent": int,
            "summary": str,  # the last observation, for `alerts` listings and the status page
            "updated_at": str,
        },
        pk=("endpoint", "kind"),
    )
    db.table("outbox").create(
        {
            "id": int,
            "key": str,  # idempotency key: incident + event + when
            "incident": str,
            "endpoint": str,
            "kind": str,
            "event": str,  # firing | reminder | resolved
            "facts": str,  # JSON: what the message says; rendered at send time
            "status": str,  # pending | sending | sent | suppressed | failed
            "attempts": int,
            "next_attempt_ts": float,
            "last_error_class": str,
            "created_at": str,
            "sent_at": str,
            "ts": str,  # Slack's message ts, to thread replies under the firing page
        },
        pk="id",
    )
    db.table("outbox").create_index(["key"], unique=True)
    db.table("outbox").create_index(["status", "next_attempt_ts"])
    db.table("silences").create(
        {
            "id": int,
            "endpoint": str,
            "kind": str,  # empty: every kind
            "starts_at": str,
            "ends_at": str,
            "ends_ts": float,
            "reason": str,
            "created_by": str,
            "created_at": str,
            "removed_at": str,
        },
        pk="id",
    )


def _3_gpu(db: Database) -> None:
    db.table("gpus").create(
        {
            "uuid": str,
            "gpu_index": int,  # NVML's index when last seen
            "name": str,
            "first_seen": str,
            "last_seen": str,
            "last_seen_ts": float,
        },
        pk="uuid",
    )
    db.table("gpu_samples").create(
        {
            "id": int,
            "uuid": str,
            "at_ts": float,
            "resolution": str,  # raw | 1m (one-minute averages of older samples)
            "util_gpu": float,
            "util_memory": float,
            "memory_total": int,
            "memory_used": int,
            "memory_free": int,
            "memory_reserved": int,
            "temperature_c": float,
            "power_w": float,
            "power_limit_w": float,
            "energy_j": float,
            "sm_clock_hz": float,
            "memory_clock_hz": float,
            "clock_events": str,  # comma-separated reason names
            "ecc_uncorrected_volatile": int,
            "ecc_corrected_aggregate": int,
            "remap_pending": int,
            "remap_failed": int,
            "pcie_tx_bytes_s": float,
            "pcie_rx_bytes_s": float,
            "performance_state": int,
            "processes": str,  # JSON list of {pid, name, used_bytes}
        },
        pk="id",
    )
    db.table("gpu_samples").create_index(["uuid", "at_ts"])
    db.table("gpu_samples").create_index(["resolution", "at_ts"])
    db.table("gpu_xids").create(
        {"id": int, "uuid": str, "code": int, "at_ts": float, "at": str}, pk="id"
    )
    db.table("gpu_xids").create_index(["uuid", "code"])
    db.table("run_energy").create(
        {
            "run_id": str,
            "endpoint": str,
            "started_ts": float,
            "ended_ts": float,
            "gpus": str,  # JSON list of UUIDs
            "energy_j": float,
            "output_tokens": int,
            "joules_per_token": float,
            "cost_per_1k_tokens": float,
            "currency": str,
        },
        pk="run_id",
    )
    db.table("run_energy").create_index(["endpoint", "started_ts"])


def _4_drift(db: Database) -> None:
    db.table("results").add_column("output_profile", str)  # JSON, see drift.profile
    db.table("identities").create(
        {
            "endpoint": str,
            "identity": str,  # JSON: model ids, build, template hash... (not the golden set)
            "digest": str,
            "since": str,
        },
        pk="endpoint",
    )
    db.table("changes").create(
        {
            "id": int,
            "endpoint": str,
            "at": str,
            "at_ts": float,
            "kind": str,  # fingerprint | template
            "before": str,
            "after": str,
            "detail": str,
        },
        pk="id",
    )
    db.table("changes").create_index(["endpoint", "at_ts"])
    db.table("baselines").create(
        {
            "id": int,
            "endpoint": str,
            "golden_set": str,
            "fingerprint": str,
            "created_at": str,
            "created_ts": float,
            "runs": int,
            "samples": int,
            "noise": str,  # JSON: the spread between repeats, per signal
            "reason": str,  # recorded | after a fingerprint change | first runs
            "pinned": int,
            "active": int,
        },
        pk="id",
    )
    db.table("baselines").create_index(["endpoint", "golden_set", "active"])
    db.table("baseline_runs").create(
        {"baseline_id": int, "run_id": str}, pk=("baseline_id", "run_id")
    )


def _5_serving(db: Database) -> None:
    db.table("readiness").create(
        {
            "id": int,
            "run_id": str,
            "endpoint": str,
            "started_ts": float,
            "tier": str,  # liveness | readiness | completion
            "ok": int,
            "path": str,
            "status_code": int,
            "latency_s": float,
            "error_class": str,
            "detail": str,
        },
        pk="id",
    )
    db.table("readiness").create_index(["endpoint", "tier", "started_ts"])
    db.table("server_load").create(
        {
            "run_id": str,
            "endpoint": str,
            "at_ts": float,
            "ok": int,
            "load": str,  # JSON: the engine's own metrics under our names (server_metrics.py)
            "detail": str,  # why the scrape failed, or what restarted
        },
        pk="run_id",
    )
    db.table("server_load").create_index(["endpoint", "at_ts"])
    db.table("results").add_column("cold", int)  # first answer after a change or a restart
    db.table("results").add_column("cold_reason", str)


def _6_retention(db: Database) -> None:
    # One row per endpoint × golden set × prompt × hour, made by retention.py before the hour's
    # raw results are pruned. The primary key is the unique index that upserts replace on.
    db.table("rollups").create(
        {
            "endpoint": str,
            "golden_set": str,
            "prompt_id": str,
            "hour_ts": int,  # the hour's start, Unix seconds (UTC hours)
            "answers": int,  # results in the hour
            "runs": int,  # distinct probe runs among them
            "ok": int,
            "answered": int,  # got an answer (no error class, or check_failed): latency counts
            "errors": str,  # JSON: {error_class: count}, {} when none
            "ttft_p50_s": float,  # percentiles over answered results, linear (numpy's default)
            "ttft_p95_s": float,
            "e2e_p50_s": float,
            "e2e_p95_s": float,
            "tokens_per_s_mean": float,
            "output_tokens": int,  # sum
            "checks_passed": int,  # sums: format accuracy over time
            "checks_total": int,
            "cold": int,  # answers flagged cold (after a change or a restart)
        },
        pk=("endpoint", "golden_set", "prompt_id", "hour_ts"),
    )
    db.table("rollups").create_index(["hour_ts"])
    # Pruning walks these by time; without them each pass would scan the whole table.
    db.table("readiness").create_index(["started_ts"])
    db.table("server_load").create_index(["at_ts"])
    db.table("run_energy").create_index(["started_ts"])
    # Progress that must survive restarts: "rolled_until_ts", the end of the last rolled-up hour.
    db.table("retention_state").create({"key": str, "value": float}, pk="key")
    # Incremental vacuum needs `auto_vacuum = INCREMENTAL`, which an existing file only takes
    # through a full VACUUM. That cannot run here (VACUUM refuses to run inside the migration's
    # transaction) and is far cheaper after the first prune, so retention.maintain() does it once,
    # when its first complete pass has freed pages. New files get it in Store.open.


def _7_run_lookups(db: Database) -> None:
    # Drift reads a pair's last runs and their results about once a minute; without these, each
    # read scanned the endpoint's whole history (or the whole table), so CPU per probe grew with
    # the database.
    db.table("results").create_index(["endpoint", "golden_set", "started_ts"])
    db.table("results").create_index(["run_id"])


def _8_token_events(db: Database) -> None:
    # Triton's streamed answers had their events stored as an `estimate` of tokens, with a
    # tokens/s and TPOT worked out from them. They count events, not tokens (a word each, say):
    # label them so, and drop the figures that took them for tokens. Concerned are the streamed
    # results of endpoints last identified as Triton, and the hourly rollups made from them.
    triton = "select endpoint from identities where json_extract(identity, '$.api') = 'triton'"
    db.execute(
        "update results set token_source = 'events', tokens_per_s = null, tpot_s = null "
        f"where token_source = 'estimate' and stream = 1 and endpoint in ({triton})"
    )
    hour = (
        "from results r where r.endpoint = rollups.endpoint "
        "and r.golden_set = rollups.golden_set and r.prompt_id = rollups.prompt_id "
        "and r.started_ts >= rollups.hour_ts and r.started_ts < rollups.hour_ts + 3600"
    )
    db.execute(
        f"update rollups set tokens_per_s_mean = (select avg(r.tokens_per_s) {hour}), "
        f"output_tokens = (select coalesce(sum(r.output_tokens), 0) {hour} "
        "and coalesce(r.token_source, '') != 'events') "
        f"where exists (select 1 {hour} and r.token_source = 'events')"
    )


def _9_trace_context(db: Database) -> None:
    # The W3C trace context each golden prompt was sent with (probers/tracing.py): what to look
    # up in an engine's traces.
    db.table("results").add_column("trace_id", str)
    db.table("results").add_column("span_id", str)


def _10_rollup_times(db: Database) -> None:
    # The health report's first_run and last_run are times of results. Past raw_days only the
    # rollups are left, so each hour keeps the started_at of its first and last result. Hours
    # rolled up before this step take them from their results while all of those are stored;
    # the others keep NULL (the report then says the first and last time it still knows).
    db.table("rollups").add_column("first_at", str)
    db.table("rollups").add_column("last_at", str)
    hour = (
        "from results r where r.endpoint = rollups.endpoint and r.prompt_id = rollups.prompt_id "
        "and r.started_ts >= rollups.hour_ts and r.started_ts < rollups.hour_ts + 3600 "
        "and r.golden_set = rollups.golden_set"
    )
    db.execute(
        f"update rollups set first_at = (select r.started_at {hour} order by r.started_ts limit 1), "
        f"last_at = (select r.started_at {hour} order by r.started_ts desc limit 1) "
        f"where answers = (select count(*) {hour})"
    )


def _11_fewer_page_writes(db: Database) -> None:
    # A stored run rewrote a page of every index keyed by endpoint: with runs of many endpoints
    # in each commit, every such index costs a page a run. These two served no query (each
    # read by endpoint goes through (endpoint, golden_set, started_ts), each read by time
    # through started_ts), and cost 3.5 of the 7.5 pages a run wrote (bench/README.md, "Pages
    # a stored run writes").
    db.execute("drop index if exists idx_results_endpoint_prompt_id_started_ts")
    db.execute("drop index if exists idx_readiness_endpoint_tier_started_ts")


MIGRATIONS: list[Callable[[Database], None]] = [
    _1_results,
    _2_alerting,
    _3_gpu,
    _4_drift,
    _5_serving,
    _6_retention,
    _7_run_lookups,
    _8_token_events,
    _9_trace_context,
    _10_rollup_times,
    _11_fewer_page_writes,
]
