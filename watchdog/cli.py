"""The `mlops-watchdog` command: run, once, check, report, init, silence, baseline, drift, gpu,
dashboards, config."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import watchdog
from watchdog import dashboards
from watchdog.alerting import silences
from watchdog.alerting.kinds import KINDS
from watchdog.alerting.messages import Renderer
from watchdog.alerting.notifiers import build
from watchdog.config.load import Config, adhoc_config, config_path, load_config
from watchdog.config.schema import config_schema_json
from watchdog.daemon import Daemon
from watchdog.drift import attribution, baselines
from watchdog.endpoint import Probe
from watchdog.gpu.nvml import Nvml
from watchdog.otlp import export as otlp
from watchdog.parsing.fields import parse_duration
from watchdog.parsing.yamlfile import InvalidFile
from watchdog.probers.transport import http_client
from watchdog.reports import table
from watchdog.reports.daily import write_daily
from watchdog.reports.health import health_since, write_csv
from watchdog.result import Run
from watchdog.runner import Runner
from watchdog.runtime import logs, systemd
from watchdog.runtime.clock import SystemClock
from watchdog.runtime.masking import Mask
from watchdog.runtime.probing import ProbeLoop
from watchdog.runtime.systemd import Notify, credentials
from watchdog.store import Store, StoreError
from watchdog.store.recorder import Recorder
from watchdog.web.listener import ListenError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DATA = Path(__file__).parent / "data"
# Module names of the unrelated PyPI `watchdog` package; finding one means both are installed.
FOREIGN_MODULES = ("events", "observers", "tricks", "utils", "version", "watchmedo")

log = logging.getLogger("mlops_watchdog")


class Exit(Exception):
    """Stop with a one-line message for a person, never a traceback."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def ensure_ours(package: ModuleType = watchdog) -> None:
    """Refuse to run when `watchdog` is PyPI's filesystem-events package, or mixed with it."""
    folder = Path(package.__file__ or "").parent
    foreign = [m for m in FOREIGN_MODULES if (folder / m).exists() or (folder / f"{m}.py").exists()]
    if getattr(package, "DISTRIBUTION", None) != "mlops-watchdog" or foreign:
        raise Exit(
            f"the `watchdog` package in {folder} is not mlops-watchdog's (PyPI's filesystem "
            "`watchdog` shares the name); install mlops-watchdog in its own venv, e.g. with pipx"
        )


def _env() -> dict[str, str]:
    """What ${VAR} reads: the environment, then systemd credentials (LoadCredential=)."""
    try:
        return {**credentials(), **os.environ}
    except OSError as exc:  # named in the message; the variables they hold stay unset
        raise Exit(f"systemd credentials not readable ($CREDENTIALS_DIRECTORY): {exc}") from None


def _load(args: argparse.Namespace) -> Config:
    path = config_path(args.config)
    try:
        return _masking(load_config(path, _env()))
    except InvalidFile as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise Exit(f"{path}: {len(exc.problems)} problem(s); nothing was run") from None


def _masking(config: Config) -> Config:
    """The config, once every log line masks its secrets."""
    logs.mask_secrets(Mask(config.secrets))
    return config


def _open_store(config: Config) -> Store:
    try:
        return Store.open(config.resolve(config.storage.path))
    except StoreError as exc:
        raise Exit(f"{exc} (storage.path in {config.path})") from None


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args)
    templates = config.alerting.templates_dir
    problems = Renderer(config.resolve(templates) if templates else None).check()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        raise Exit(f"{config.path}: {len(problems)} template problem(s) in alerting.templates_dir")
    print(
        f"{config.path}: OK: {len(config.endpoints)} endpoint(s), {len(config.probes)} probe(s), "
        f"{len(config.golden_sets)} golden set(s)"
    )
    return EXIT_OK


def _adhoc(args: argparse.Namespace) -> Config:
    headers = {}
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise Exit(f"--api-key-env: environment variable {args.api_key_env} is not set")
        headers["Authorization"] = f"Bearer {key}"
    try:
        return _masking(
            adhoc_config(
                args.url,
                args.api,
                args.model,
                args.golden_set,
                headers,
                metrics_url=args.metrics_url,
                tokenizer=args.tokenizer,
            )
        )
    except InvalidFile as exc:
        raise Exit("; ".join(f"{p.file}: {p.message}" for p in exc.problems)) from None


def cmd_once(args: argparse.Namespace) -> int:
    config = _adhoc(args) if args.url else _load(args)
    if args.endpoint and not args.url:
        unknown = sorted(set(args.endpoint) - set(config.endpoints))
        if unknown:
            raise Exit(f"--endpoint: no endpoint {', '.join(unknown)} in {config.path}")
        config = replace(config, probes=[p for p in config.probes if p.endpoint in args.endpoint])
    store = None if args.no_store or args.url else _open_store(config)

    clock = SystemClock()

    async def go() -> list[Run]:
        async with http_client() as client:
            runner = Runner(config, client, clock)
            return await asyncio.gather(*(runner.run(p) for p in config.probes))

    runs = asyncio.run(go())
    results = [r for run in runs for r in run.results]
    if store is not None:
        try:
            recorder = Recorder.of(store, config.endpoints)
            for probe, run in zip(config.probes, runs, strict=True):
                recorded = recorder.record(config.endpoints[probe.endpoint], run, clock.now())
                recorder.committed(recorded)
        except StoreError as exc:
            print(f"warning: {exc}", file=sys.stderr)
        finally:
            store.close()
    if args.json:
        for r in results:
            print(json.dumps(r.to_json()))
    else:
        notes = [
            table.serving(p.endpoint, run.tiers, run.load.values if run.load else None)
            for p, run in zip(config.probes, runs, strict=True)
        ]
        width = shutil.get_terminal_size((160, 24)).columns
        print(table.render(results, width=width, notes=notes))
    return EXIT_OK if results and all(r.ok for r in results) else EXIT_FAILED


def cmd_report(args: argparse.Namespace) -> int:
    if args.what == "changes":
        return cmd_report_changes(args)
    config = _load(args)
    try:
        window = parse_duration(args.since)
    except ValueError as exc:
        raise Exit(f"--since: {exc}") from None
    store = _open_store(config)
    try:
        if args.html:
            out = Path(args.out or config.resolve(config.storage.csv_dir) / "daily.html")
            try:
                write_daily(store, config.pairs(), config.drift, SystemClock().now(), out)
            except OSError as exc:
                raise Exit(f"{out}: cannot write the report: {exc.strerror or exc}") from None
            print(f"{out}: the daily report of the last 24 h")
            return EXIT_OK
        since = (SystemClock().now() - timedelta(seconds=window)).timestamp()
        frame = health_since(store, since)
    finally:
        store.close()
    if args.out == "-":
        write_csv(frame, Path("/dev/stdout"))
        return EXIT_OK
    out = Path(args.out) if args.out else config.resolve(config.storage.csv_dir) / "health.csv"
    try:
        write_csv(frame, out)
    except OSError as exc:
        raise Exit(f"{out}: cannot write the report: {exc.strerror or exc}") from None
    print(f"{out}: {len(frame)} row(s) since {args.since} ago")
    return EXIT_OK


def cmd_report_changes(args: argparse.Namespace) -> int:
    config = _load(args)
    store = _open_store(config)
    try:
        lines = attribution.report(store.db, config.pairs(), config.drift)
    finally:
        store.close()
    print("\n".join(lines) if lines else "no drift to attribute")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    target = Path(args.dir)
    config = target / "config.yaml"
    if config.exists() and not args.force:
        raise Exit(f"{config} exists; pass --force to overwrite the starter files")
    (target / "golden_sets").mkdir(parents=True, exist_ok=True)
    (target / "probes").mkdir(exist_ok=True)
    shutil.copy(DATA / "golden_sets" / "default.yaml", target / "golden_sets" / "default.yaml")
    shutil.copy(DATA / "probes" / "llama-cpp.yaml", target / "probes" / "llama-cpp.yaml")
    config.write_text(STARTER_CONFIG, encoding="utf-8")
    print(
        f"wrote {config}; edit probes/llama-cpp.yaml, then: mlops-watchdog check --config {config}"
    )
    return EXIT_OK


STARTER_CONFIG = """\
# yaml-language-server: $schema=https://raw.githubusercontent.com/mlops-watchdog/mlops-watchdog/main/deploy/config.schema.json
# mlops-watchdog starter config. `mlops-watchdog check --config THIS_FILE` validates it, and
# docs/config.md explains every key. Relative paths are relative to this file. Uncomment what
# you need; it passes `check` as it is.
storage:
  path: data/watchdog.db          # SQLite: every result, alert state, baselines
  csv_dir: reports                # health-24h.csv and daily-24h.html are refreshed here
  responses: excerpt              # full | excerpt | hash (hash keeps no model text, for PII)
listen: 127.0.0.1:9464            # /metrics, /healthz, /readyz and the status page
# node: gpu-node-07               # this machine's name on every metric and page (default: host name)
include: [probes/*.yaml]          # one file per endpoint; copy the examples

# alerting:
#   failure_threshold: 3          # failing runs in a row before a page
#   success_threshold: 2          # good runs in a row before "resolved"
#   slack:
#     webhook_url: ${SLACK_WEBHOOK_URL}   # a secret: from the environment or systemd credentials
#   route: slack                  # or alertmanager: a fleet pages through Prometheus' rules

# gpu:                            # NVML telemetry is on wherever a driver answers
#   price_per_kwh: 0.30           # prices energy per token as cost per 1k tokens

# otlp:                           # also push GenAI metrics to an OpenTelemetry collector
#   endpoint: http://otel-collector:4318/v1/metrics   # needs mlops-watchdog[otlp]

# retention:
#   raw_days: 14                  # every result; hourly rollups are kept 400 days
"""


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args)
    store = _open_store(config)
    notifier = build(config.alerting)
    nvml = None
    if config.gpu.enabled is not False:
        every = config.gpu.interval  # error counters and processes twice a minute, PCIe every 5m
        nvml = Nvml(slow_every=max(1, round(30 / every)), pcie_every=max(1, round(300 / every)))

    notify = Notify()
    path = config_path(args.config)
    try:
        exporter = otlp.build(config.otlp, config.node, _env()) if config.otlp else None
    except otlp.OtlpUnavailable as exc:
        raise Exit(f"{exc} (set in {config.path})") from None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        probing = ProbeLoop(http_client).start()  # timings free of the daemon's other work
        async with http_client() as client:
            daemon = Daemon(
                config,
                client,
                store,
                SystemClock(),
                notifier,
                nvml=nvml,
                notify=notify,
                otlp=exporter,
                probing=probing,
            )
            # In the loop, between probe runs: never half a config.
            loop.add_signal_handler(
                signal.SIGHUP,
                lambda: daemon.reload_from(lambda: _masking(load_config(path, _env()))),
            )
            try:
                await daemon.serve(stop)
            finally:
                await probing.close()

    try:
        asyncio.run(main())
    except ListenError as exc:
        raise Exit(f"{exc} (set `listen:` in {config.path})") from None
    finally:
        store.close()
    return EXIT_OK


def cmd_silence(args: argparse.Namespace) -> int:
    config = _load(args)
    now = SystemClock().now()
    store = _open_store(config)
    try:
        if args.action == "add":
            gpu = args.endpoint == "gpus" or args.endpoint.startswith(("GPU-", "MIG-"))
            if args.endpoint != "*" and not gpu and args.endpoint not in config.endpoints:
                known = ", ".join(sorted(config.endpoints))
                raise Exit(
                    f"--endpoint: no endpoint named {args.endpoint!r} (known: {known}, "
                    "a GPU's UUID, gpus, or *)"
                )
            if args.kind and args.kind not in KINDS:
                raise Exit(f"--kind: unknown kind {args.kind!r}; known: {', '.join(KINDS)}")
            try:
                seconds = parse_duration(getattr(args, "for"))
            except ValueError as exc:
                raise Exit(f"--for: {exc}") from None
            number = silences.add(
                store.db, args.endpoint, args.kind or "", seconds, args.reason, now
            )
            print(
                f"silence {number} added: {args.endpoint} {args.kind or 'every kind'} for {getattr(args, 'for')}"
            )
        elif args.action == "remove":
            if not silences.remove(store.db, args.id, now):
                raise Exit(f"no active silence {args.id}", EXIT_FAILED)
            print(f"silence {args.id} removed")
        else:
            active = silences.active(store.db, now)
            print("ID  ENDPOINT  KIND  UNTIL  BY  REASON" if active else "no active silences")
            for s in active:
                print(
                    f"{s.id}  {s.endpoint}  {s.kind or '*'}  {s.ends_at}  {s.created_by}  {s.reason}"
                )
    finally:
        store.close()
    return EXIT_OK


def _probes_of(config: Config, only: str | None) -> list[Probe]:
    """Every probe, or one endpoint's; an unknown endpoint is a usage error."""
    if only is not None and only not in config.endpoints:
        known = ", ".join(sorted(config.endpoints))
        raise Exit(f"--endpoint: no endpoint named {only!r} (known: {known})")
    return [p for p in config.probes if only is None or p.endpoint == only]


def cmd_baseline(args: argparse.Namespace) -> int:
    config = _load(args)
    store = _open_store(config)
    try:
        if args.action == "record":
            return _record_baseline(config, store, args.endpoint, args.samples)
        if args.action == "pin":
            if not baselines.pin(store.db, args.id, not args.unpin):
                raise Exit(
                    f"no baseline {args.id} (see: mlops-watchdog baseline list)", EXIT_FAILED
                )
            print(f"baseline {args.id} {'unpinned' if args.unpin else 'pinned'}")
            return EXIT_OK
        rows = baselines.listing(store.db)
        if not rows:
            print("no baselines yet: mlops-watchdog baseline record")
        for r in rows:
            noise = json.loads(r["noise"] or "{}")
            spread = noise.get("e2e_spread")
            passed = noise.get("pass_rate")
            print(
                f"{r['id']:>4}  {'active' if r['active'] else 'retired':<7} "
                f"{'pinned ' if r['pinned'] else '       '}{r['endpoint']}/{r['golden_set']}  "
                f"fingerprint {r['fingerprint']}  {r['runs']} runs, {r['samples']} samples, "
                f"e2e spread {'-' if spread is None else f'{spread:.0%}'}, "
                f"pass rate {'-' if passed is None else f'{passed:.0%}'}  "
                f"{r['created_at']} ({r['reason']})"
            )
    finally:
        store.close()
    return EXIT_OK


def _record_baseline(config: Config, store: Store, only: str | None, samples: int) -> int:
    probes = _probes_of(config, only)
    if not probes:
        raise Exit("no probes to record a baseline from")
    clock = SystemClock()
    recorder = Recorder.of(store, config.endpoints)

    async def go() -> dict[tuple[str, str], list[Run]]:
        runs: dict[tuple[str, str], list[Run]] = {}
        async with http_client() as client:
            runner = Runner(config, client, clock)
            for n in range(samples):
                for probe in probes:
                    run = await runner.run(probe)
                    recorded = recorder.record(config.endpoints[probe.endpoint], run, clock.now())
                    recorder.committed(recorded)
                    golden = config.golden_sets[probe.golden_set].name
                    runs.setdefault((probe.endpoint, golden), []).append(run)
                    ok = sum(r.ok for r in run.results)
                    print(
                        f"{probe.endpoint}/{golden}: run {n + 1}/{samples}: "
                        f"{ok}/{len(run.results)} ok"
                    )
        return runs

    failed = False
    for (endpoint, golden), runs in asyncio.run(go()).items():
        answered = [r for r in runs if any(x.answer.error_class is None for x in r.results)]
        if len(answered) < max(3, samples // 2):
            print(
                f"{endpoint}/{golden}: too few runs answered ({len(answered)}/{samples}): no baseline"
            )
            failed = True
            continue
        with store.transaction():
            made = baselines.create(
                store.db, endpoint, golden, [r.run_id for r in answered], "recorded", clock.now()
            )
        row = baselines.active(store.db, endpoint, golden) or {}
        noise = json.loads(row.get("noise") or "{}")
        spread = noise.get("e2e_spread")
        print(
            f"{endpoint}/{golden}: baseline {made} from {len(answered)} runs, fingerprint "
            f"{row.get('fingerprint')}, e2e spread between repeats "
            f"{'-' if spread is None else f'{spread:.0%}'}"
        )
    return EXIT_FAILED if failed else EXIT_OK


def cmd_drift(args: argparse.Namespace) -> int:
    config = _load(args)
    store = _open_store(config)
    try:
        pairs = config.pairs()
        signals = [s for e, g in pairs for s in baselines.drift(store.db, e, g, config.drift)]
    finally:
        store.close()
    for s in signals:
        if args.json:
            print(json.dumps(s.to_json()))
        else:
            score = "-" if s.score is None else f"{s.score:+.2f}"
            print(
                f"{s.endpoint}/{s.golden_set}  {s.signal:<15} {s.status:<12} {score:>6}  {s.detail}"
            )
    return EXIT_FAILED if any(s.status == "drift" for s in signals) else EXIT_OK


def cmd_gpu(args: argparse.Namespace) -> int:
    nvml_log = logging.getLogger("mlops_watchdog.nvml")
    level = nvml_log.level
    nvml_log.setLevel(logging.ERROR)  # "telemetry off" is the daemon's line; ours is the exit
    nvml = Nvml()
    try:
        snapshot = nvml.sample(full=True) if nvml.start() else None
        if snapshot is None:
            raise Exit(
                f"no GPU telemetry: {nvml.last_error}; this needs an NVIDIA driver "
                "(nvidia-smi should work) and read access to /dev/nvidia*",
                EXIT_FAILED,
            )
    finally:
        nvml.close()
        nvml_log.setLevel(level)
    if args.json:
        for g in snapshot.gpus:
            print(json.dumps({**g.as_dict(), "driver": snapshot.driver}))
    else:
        print(table.gpus(snapshot.gpus, snapshot.driver))
    return EXIT_OK


def cmd_dashboards(args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        rendered = {name: dashboards.encode(d) for name, d in dashboards.render().items()}
    except dashboards.SdkMissing as exc:
        raise Exit(str(exc)) from None
    if args.check:
        stale = [
            name
            for name, text in sorted(rendered.items())
            if not (out / name).exists() or (out / name).read_text(encoding="utf-8") != text
        ]
        for name in stale:
            print(f"{out / name}: differs from the generator's output", file=sys.stderr)
        if stale:
            raise Exit(
                f"{len(stale)} stale dashboard(s); run: mlops-watchdog dashboards build --out {out}",
                EXIT_FAILED,
            )
        print(f"{out}: {len(rendered)} dashboard(s) up to date")
        return EXIT_OK
    try:
        paths = dashboards.build(out)
    except OSError as exc:
        raise Exit(f"{out}: cannot write the dashboards: {exc.strerror or exc}") from None
    for path in paths:
        print(f"wrote {path}")
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    sys.stdout.write(config_schema_json())
    return EXIT_OK


def _common(defaults: bool) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)

    def default(value: str | None) -> str | None:
        return value if defaults else argparse.SUPPRESS

    common.add_argument(
        "--config",
        metavar="PATH",
        default=default(None),
        help="config file (default: $MLOPS_WATCHDOG_CONFIG, then /etc/mlops-watchdog/config.yaml)",
    )
    common.add_argument(
        "--log-level", default=default("INFO"), choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    common.add_argument(
        "--log-format",
        default=default("auto"),
        choices=["auto", "text", "json"],
        help="json: one object per line; auto: json when started by systemd (default)",
    )
    return common


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlops-watchdog",
        description="Watch self-hosted LLM endpoints with golden prompts.",
    )
    p.add_argument("--version", action="version", version=f"mlops-watchdog {watchdog.__version__}")
    common = _common(defaults=True)
    # An action's copy (`silence add --config X`) must not reset what came before the action
    # (`silence --config X add`): no defaults there.
    nested = _common(defaults=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("run", parents=[common], help="run the daemon until SIGTERM")
    s.set_defaults(func=cmd_run)
    s = sub.add_parser("once", parents=[common], help="run every probe once and print the results")
    s.add_argument("--json", action="store_true", help="print JSON Lines, one object per result")
    s.add_argument("--no-store", action="store_true", help="do not write results to the database")
    s.add_argument(
        "--endpoint",
        action="append",
        metavar="NAME",
        help="only this endpoint's probes (repeat for several; default: every probe)",
    )
    s.add_argument("--url", help="probe this base URL instead of the config (nothing is stored)")
    s.add_argument(
        "--api", default="openai-chat", help="with --url: the endpoint's API (default openai-chat)"
    )
    s.add_argument(
        "--model", help="with --url: the model name to send (default: the first of /v1/models)"
    )
    s.add_argument(
        "--golden-set",
        default="default",
        help="with --url: a golden set file or a shipped set's name",
    )
    s.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="with --url: send 'Bearer $VAR' (the key never goes on the command line)",
    )
    s.add_argument(
        "--metrics-url",
        metavar="URL",
        help="with --url: read the engine's Prometheus metrics here (Triton: port 8002's /metrics)",
    )
    s.add_argument(
        "--tokenizer",
        metavar="FILE",
        help="with --url: count answer tokens with this tokenizer.json when the server sends none",
    )
    s.set_defaults(func=cmd_once)
    s = sub.add_parser("check", parents=[common], help="validate the config and golden sets")
    s.set_defaults(func=cmd_check)
    s = sub.add_parser(
        "report", parents=[common], help="write the CSV health report, or list what changed"
    )
    s.add_argument(
        "what",
        nargs="?",
        choices=["health", "changes"],
        default="health",
        help="health: the CSV report (default); changes: each drift with its likely cause",
    )
    s.add_argument(
        "--html",
        action="store_true",
        help="the self-contained daily HTML report of the last 24 h instead of the CSV",
    )
    s.add_argument("--since", default="24h", help="window, e.g. 24h or 7d (default 24h)")
    s.add_argument(
        "--out",
        metavar="FILE",
        help="output file, or - for stdout (default: storage.csv_dir/health.csv)",
    )
    s.set_defaults(func=cmd_report)
    s = sub.add_parser("silence", parents=[common], help="add, list or remove alert silences")
    actions = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("add", parents=[nested], help="silence an endpoint's alerts for a while")
    a.add_argument(
        "--endpoint", required=True, help="endpoint name, a GPU's UUID, gpus (GPU count), or *"
    )
    a.add_argument("--kind", help="only this alert kind (default: every kind)")
    a.add_argument("--for", required=True, metavar="DURATION", help="e.g. 2h or 30m")
    a.add_argument("--reason", required=True, help="why, for whoever reads the list")
    actions.add_parser("list", parents=[nested], help="list active silences")
    r = actions.add_parser("remove", parents=[nested], help="end a silence now")
    r.add_argument("id", type=int)
    s.set_defaults(func=cmd_silence)
    s = sub.add_parser("init", parents=[common], help="write a starter config tree into DIR")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--force", action="store_true", help="overwrite existing starter files")
    s.set_defaults(func=cmd_init)
    s = sub.add_parser("baseline", parents=[common], help="record, list or pin drift baselines")
    actions = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    r = actions.add_parser("record", parents=[nested], help="run the probes N times: a baseline")
    r.add_argument("--endpoint", help="only this endpoint (default: every one)")
    r.add_argument("--samples", type=int, default=10, help="runs of each probe (default 10)")
    actions.add_parser("list", parents=[nested], help="list baselines, active and retired")
    r = actions.add_parser("pin", parents=[nested], help="keep this baseline whatever changes")
    r.add_argument("id", type=int)
    r.add_argument("--unpin", action="store_true", help="let the policy replace it again")
    s.set_defaults(func=cmd_baseline)
    s = sub.add_parser("drift", parents=[common], help="compare recent runs with the baselines")
    s.add_argument("--json", action="store_true", help="JSON Lines, one object per signal")
    s.set_defaults(func=cmd_drift)
    s = sub.add_parser("gpu", help="print one NVML sample of every GPU")
    s.add_argument("--json", action="store_true", help="print JSON Lines, one object per GPU")
    s.set_defaults(func=cmd_gpu)
    s = sub.add_parser("dashboards", help="regenerate the Grafana dashboards")
    actions = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    b = actions.add_parser("build", help="write dashboards/*.json from the generator")
    b.add_argument(
        "--out", default="dashboards", metavar="DIR", help="folder (default: dashboards)"
    )
    b.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if DIR's JSON is stale"
    )
    s.set_defaults(func=cmd_dashboards)
    s = sub.add_parser("config", help="describe the config file")
    actions = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser(
        "schema", help="print the config's JSON Schema (deploy/config.schema.json) to stdout"
    )
    s.set_defaults(func=cmd_config)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.setup(
        getattr(args, "log_level", "INFO"),
        getattr(args, "log_format", "auto"),
        systemd.under_journal(),
    )
    try:
        ensure_ours()
        code = int(args.func(args))
        sys.stdout.flush()  # here, where a closed pipe can still end quietly
        return code
    except Exit as exc:
        print(f"mlops-watchdog: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`once --json | head -1`): what was recorded stays recorded.
        # Standard output now leads nowhere, so Python's own flush at exit fails no more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
