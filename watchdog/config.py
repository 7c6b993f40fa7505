"""The config file: parsed once, strictly, with every problem reported as FILE:LINE: key: msg."""

from __future__ import annotations

import glob
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from watchdog.alerting.settings import Alerting, Slo
from watchdog.baselines import BaselinePolicy
from watchdog.detectors.settings import Gpu
from watchdog.drift import DriftSettings
from watchdog.durations import parse_duration
from watchdog.golden import GoldenSet, load_golden_set
from watchdog.permissions import permission_problems
from watchdog.validate import Strict, parse
from watchdog.webconfig import WebConfig, load_web_config
from watchdog.yamlfile import Document, InvalidFile, Problem, load

DEFAULT_PATH = Path("/etc/mlops-watchdog/config.yaml")
SHIPPED_GOLDEN_SETS = Path(__file__).parent / "data" / "golden_sets"
APIS = ("openai-chat", "openai-completions", "ollama", "tgi", "triton", "http")
# Each API's own liveness (health) and readiness (models) routes; `http` services name theirs.
ROUTES: dict[str, tuple[str | None, str | None]] = {
    "openai-chat": ("/health", "/v1/models"),
    "openai-completions": ("/health", "/v1/models"),
    "ollama": ("/api/version", "/api/tags"),
    "tgi": ("/health", "/info"),
    "triton": ("/v2/health/live", "/v2/health/ready"),
    "http": (None, None),
}
# Stacks that serve their own Prometheus metrics at base_url/metrics (Triton's are on port 8002:
# give `metrics_url`).
HAS_METRICS = frozenset({"openai-chat", "openai-completions", "tgi"})

Seconds = Annotated[float, BeforeValidator(parse_duration)]


def _gpu_ref(value: object) -> str | int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and re.fullmatch(r"(GPU|MIG)-[0-9a-fA-F-]{8,}", value):
        return value
    raise ValueError(
        f"{value!r} is not a GPU: give its UUID (GPU-…, from `mlops-watchdog gpu` or "
        "`nvidia-smi -L`) or its NVML index (0, 1, …)"
    )


GpuRef = Annotated[str | int, BeforeValidator(_gpu_ref)]
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


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


class Storage(Strict):
    """Where results, reports and the answers' text are kept."""

    path: str = "/var/lib/mlops-watchdog/watchdog.db"
    """The SQLite database of results, alert state, baselines and GPU samples, relative to the
    config file. Put it on a local disk the daemon may write; moving it starts an empty history."""
    csv_dir: str = "/var/lib/mlops-watchdog/reports"
    """Folder, relative to the config file, where the daemon refreshes `health-24h.csv` and
    `daily-24h.html`, and where `mlops-watchdog report` writes by default."""
    responses: Literal["full", "excerpt", "hash"] = "excerpt"
    """How much of each model answer is stored: `full`, `excerpt` (the first `excerpt_chars`
    characters) or `hash` (no model text at all, for PII; output drift then stays inconclusive)."""
    excerpt_chars: int = Field(200, ge=0, le=10000)
    """Characters kept of each answer with `responses: excerpt`. Raise it to see more of a failed
    answer in reports; lower it to keep less text."""
    report_every: Seconds = 900.0
    """How often the daemon rewrites the health CSV and the daily HTML report."""


class Retention(Strict):
    """How long results are kept, and how large the database may grow before it warns."""

    raw_days: float = Field(14, gt=0)
    """Days every result is kept as recorded (those of an active or pinned drift baseline stay
    longer). Lower it to keep the database smaller; raise it to look further back in detail."""
    rollup_days: float = Field(400, gt=0)
    """Days the hourly rollups per endpoint, golden set and prompt (counts, error classes, TTFT and
    e2e p50/p95) are kept."""
    max_db_bytes: int = Field(2_000_000_000, gt=0)
    """Database size in bytes past which the daemon logs a warning (the size is always exported as
    `mlops_watchdog_database_size_bytes`). Set it below the free space of its disk."""
    every: Seconds = 3600.0
    """How often results are rolled up and pruned and freed pages are returned by incremental
    vacuum."""


class Endpoint(Strict):
    """A model server to probe: where it is, which API it speaks, and how to talk to it. `probes/`
    has an example per serving stack."""

    name: str = Field(pattern=NAME)
    """The endpoint's name in probes, metrics, alerts and reports: letters, digits, `_`, `.` and
    `-`, up to 64. Renaming it starts a new history."""
    api: str
    """The API it speaks: `openai-chat` (vLLM, llama.cpp, SGLang, LM Studio),
    `openai-completions`, `ollama`, `tgi`, `triton` (needs `model`) or `http` (a JSON service of
    your own: needs `path`, `body_template` and `text_path`)."""
    base_url: str
    """The server's root URL, http:// or https://, without the API's path (e.g.
    `http://127.0.0.1:8000`, not `.../v1`)."""
    model: str | None = None
    """The model name sent as `model`; by default the first id of `/v1/models`. vLLM and gateways
    need the served name; Triton needs it for /v2/models/NAME/generate."""
    headers: dict[str, str] = {}
    """HTTP headers sent with every request, e.g. `Authorization: "Bearer ${LLM_API_KEY}"`. Write
    secrets as `${VAR}`: a secret written out in a file every user can read is refused."""
    timeout_s: Seconds = 60.0
    """One total deadline per request, connect to last byte. Raise it for slow models or long
    answers; a request past it is a `timeout`."""
    max_body_bytes: int = Field(4_000_000, gt=0)
    """The largest response body read, in bytes counted after decompression; past it the answer
    is `too_large`."""
    concurrency: int = Field(1, ge=1, le=64)
    """Requests in flight to this endpoint at once (`max_concurrency` caps them all together).
    Keep it low: the watchdog must not load the server it measures."""
    slo: Slo = Slo()
    """Latency objectives for this endpoint; the `latency_slo` alert fires when a run breaks
    them."""
    gpus: list[GpuRef] = []
    """The GPUs that serve this endpoint, by UUID (`GPU-…`, from `mlops-watchdog gpu`) or NVML
    index: energy per token and the idle-while-serving check. UUIDs are safer: NVML's order is the
    PCI bus order, which CUDA_VISIBLE_DEVICES does not change."""
    system_prompt: str | None = None
    """What the application puts before every conversation, sent first unless a golden prompt has
    its own. Part of the fingerprint: a change is a "template" change event."""
    path: str | None = None
    """`api: http` only: the route the request is sent to, starting with `/`."""
    method: Literal["POST", "PUT"] = "POST"
    """`api: http` only: the HTTP method of the request."""
    body_template: str | None = None
    """`api: http` only: the JSON request body, a sandboxed Jinja2 template with `prompt`,
    `messages`, `max_tokens` and `temperature`; write values as `{{ prompt | tojson }}`."""
    text_path: str | None = None
    """`api: http` only: the dotted path to the answer in the response JSON, e.g. `output.text`."""
    health_path: str | None = None
    """The liveness route checked before each run (at most every 30 s for a faster probe while
    all answers; see `probes[].every`); by default the API's own (`/health` for the OpenAI APIs
    and TGI, `/api/version` for Ollama, `/v2/health/live` for Triton, none for `http`). `null`
    turns it off."""
    ready_path: str | None = None
    """The readiness route checked before each run, as `health_path` is; by default the API's own
    (`/v1/models` for the OpenAI APIs, `/info` for TGI, `/api/tags` for Ollama,
    `/v2/health/ready` for Triton, none for `http`). `null` turns it off."""
    server_metrics: bool | None = None
    """Read the engine's own Prometheus metrics at each run (as `health_path` is) and re-export
    its queue, running requests, KV-cache usage and TTFT as `mlops_watchdog_server_*`. By default
    on for the OpenAI APIs and TGI, or when `metrics_url` is given; turn it off behind a gateway."""
    metrics_url: str | None = None
    """Where the engine's metrics are read; by default `base_url` + `/metrics`. Triton serves
    them on port 8002: give it here."""
    warmup: bool = False
    """Send one untimed request before each run's timed ones, so a model that was unloaded (Ollama
    after 5 idle minutes) is not timed loading."""
    reasoning_tokens: int = Field(0, ge=0, le=131072)
    """Tokens added to every prompt's `max_tokens`: room for a reasoning model to think before it
    answers. An answer that is all reasoning fails the `reasoning_only` check."""

    @property
    def liveness_path(self) -> str | None:
        return self._route("health_path", 0)

    @property
    def readiness_path(self) -> str | None:
        return self._route("ready_path", 1)

    def _route(self, key: str, which: int) -> str | None:
        if key in self.model_fields_set:
            value: str | None = getattr(self, key)
            return value or None
        return ROUTES[self.api][which]

    @property
    def metrics_source(self) -> str | None:
        """Where the engine's metrics are read, or None when they are not."""
        wanted = self.server_metrics
        if wanted is None:
            wanted = self.metrics_url is not None or self.api in HAS_METRICS
        if not wanted:
            return None
        return self.metrics_url or self.base_url + "/metrics"

    @field_validator("health_path", "ready_path", "path")
    @classmethod
    def _route_path(cls, value: str | None) -> str | None:
        if value and not value.startswith("/"):
            raise ValueError(f"a route starts with /, e.g. /{value}")
        return value

    @model_validator(mode="after")
    def _api_needs(self) -> Endpoint:
        if self.api == "http":
            if not (self.path and self.body_template and self.text_path):
                raise ValueError("api: http needs `path`, `body_template` and `text_path`")
            from watchdog.probers.http import check_template

            problem = check_template(self.body_template)
            if problem:
                hint = "; write values as {{ prompt | tojson }}" if "to JSON" in problem else ""
                raise ValueError(problem + hint)
        if self.api == "triton" and not self.model:
            raise ValueError("api: triton needs `model` (the name in /v2/models/NAME/generate)")
        return self

    @field_validator("api")
    @classmethod
    def _known_api(cls, value: str) -> str:
        if value not in APIS:
            raise ValueError(f"unknown api {value!r}; supported: {', '.join(APIS)}")
        return value

    @field_validator("base_url", "metrics_url")
    @classmethod
    def _url(cls, value: str | None, info: ValidationInfo) -> str | None:
        return http_url(value, info.field_name)


class Probe(Strict):
    """One golden set run against one endpoint on a schedule: every `every`, or at the times of
    `cron`. A probe never overlaps itself: a run still going when the next is due skips it."""

    endpoint: str
    """The `name` of the endpoint to probe."""
    golden_set: str
    """The golden set to run: a file, relative to the config file, or the name of a set shipped
    with the package (`default`, `injection`)."""
    every: Seconds | None = None
    """The interval between runs; 60s when neither `every` nor `cron` is given. Shorter catches
    outages sooner and costs the server more requests. Under 30s, the endpoint's health, ready and
    engine-metrics routes and its identity are read at most every 30s while its prompts are
    answered and those routes pass, and again right after any failed prompt."""
    cron: str | None = None
    """Instead of `every`: a crontab line (minute hour day month weekday; weekday 0 is Sunday) in
    `timezone`, e.g. `"0 6 * * *"`."""
    timezone: str = "UTC"
    """The IANA time zone `cron` runs in, e.g. `Europe/Berlin`."""
    jitter: Seconds | None = None
    """A random delay of up to this much added to each run, so that many probes do not fire at
    the same instant."""
    misfire_grace: Seconds = 30.0
    """How late a run may start (a busy or suspended machine) before it is skipped."""
    stream: bool = True
    """Stream the answer (measures TTFT and inter-token latency) or ask for the whole answer at
    once."""

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        from watchdog.scheduler import check_cron

        if value is not None:
            check_cron(value)
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> Probe:
        if self.every is not None and self.cron is not None:
            raise ValueError("give `every` or `cron`, not both")
        return self

    @property
    def interval_s(self) -> float:
        return self.every if self.every is not None else 60.0


class TopLevel(Strict):
    """The config file's top level; `endpoints` and `probes` are parsed one by one as Endpoint
    and Probe, so that one bad entry does not hide the others' problems."""

    storage: Storage = Storage()
    """Where results, reports and the answers' text are kept."""
    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:9464"
    """HOST:PORT of the listener for `/metrics`, `/healthz`, `/readyz` and the status page;
    `:9464` listens on every interface, an empty string turns the listener off."""
    node: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    """Which machine this watchdog speaks for, on every metric (`node` label) and message; the
    host name if unset. Under Kubernetes give the node's name (`${NODE_NAME}`), not the pod's."""
    include: list[str] = []
    """Globs of more files holding `endpoints:` and `probes:`, relative to this file, e.g.
    `[probes/*.yaml]`. A name without a wildcard must exist."""
    endpoints: list[Any] = []
    """The model servers to probe."""
    probes: list[Any] = []
    """What to run against which endpoint, and when."""
    alerting: Alerting = Alerting()
    """When and where alerts page."""
    gpu: Gpu = Gpu()
    """GPU telemetry through NVML and the GPU detectors."""
    drift: DriftSettings = DriftSettings()
    """How recent runs are compared with the baseline."""
    baseline: BaselinePolicy = BaselinePolicy()
    """How drift baselines are made and replaced."""
    max_concurrency: int = Field(8, ge=1, le=1024)
    """Probe requests in flight across every endpoint together (each endpoint also has its own
    `concurrency`): the watchdog must never load a fleet."""
    retention: Retention = Retention()
    """How long results are kept, and how large the database may grow before it warns."""
    heartbeat_url: str | None = None
    """A dead-man's switch (healthchecks.io style): GET at most once a minute after healthy
    cycles, so that a watchdog that stopped is noticed."""
    web_config_file: str | None = None
    """TLS and basic auth on the listener: a file in the Prometheus exporter web-config format,
    relative to this file."""

    @field_validator("heartbeat_url")
    @classmethod
    def _heartbeat(cls, value: str | None, info: ValidationInfo) -> str | None:
        return http_url(value, info.field_name)


def _listen(value: str) -> str:
    from watchdog.web import parse_listen

    if value:
        parse_listen(value)
    return value


class Included(Strict):
    """A file named by `include:`: more endpoints and probes, and nothing else."""

    endpoints: list[Any] = []
    """More model servers to probe."""
    probes: list[Any] = []
    """More probes; they may name endpoints of any file."""


@dataclass
class Config:
    path: Path
    storage: Storage
    listen: str
    endpoints: dict[str, Endpoint]
    probes: list[Probe]
    golden_sets: dict[str, GoldenSet]  # by the probe's `golden_set` value
    secrets: set[str] = field(default_factory=set, repr=False)
    alerting: Alerting = field(default_factory=Alerting)
    gpu: Gpu = field(default_factory=Gpu)
    drift: DriftSettings = field(default_factory=DriftSettings)
    baseline: BaselinePolicy = field(default_factory=BaselinePolicy)
    max_concurrency: int = 8
    retention: Retention = field(default_factory=Retention)
    heartbeat_url: str | None = None
    web_config_file: str | None = None
    web_config: WebConfig | None = None  # web_config_file, read and checked
    node: str = field(default_factory=socket.gethostname)

    def resolve(self, relative: str) -> Path:
        """A path written in the config, relative to the config file's folder."""
        return (self.path.parent / os.path.expanduser(relative)).resolve()


def config_path(given: str | None, env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    return Path(given or env.get("MLOPS_WATCHDOG_CONFIG") or DEFAULT_PATH)


def find_golden_set(base: Path, value: str) -> Path:
    """`value` relative to the config's folder; else a set shipped with the package."""
    here = (base / value).resolve()
    if here.exists():
        return here
    shipped = SHIPPED_GOLDEN_SETS / Path(value).name
    for candidate in (shipped, shipped.with_suffix(".yaml")):
        if candidate.is_file():
            return candidate
    return here


def load_config(path: Path, env: dict[str, str] | None = None) -> Config:
    """Parse the config and everything it includes; raises InvalidFile with every problem."""
    main = load(path, env)
    docs = [main]
    raw = main.data if isinstance(main.data, dict) else {}
    if not isinstance(main.data, dict):
        main.problems.append(main.problem((), "the config must be a mapping of keys"))
    top = parse(main, TopLevel, raw)

    def listed(name: str) -> list[Any]:
        # Keep validating the other sections when one top-level key is wrong.
        value = getattr(top, name) if top else raw.get(name)
        return value if isinstance(value, list) else []

    items: list[tuple[Document, str, int, Any]] = []
    for name in ("endpoints", "probes"):
        items.extend((main, name, i, item) for i, item in enumerate(listed(name)))
    for n, pattern in enumerate(listed("include")):
        if not isinstance(pattern, str):
            continue
        matches = sorted(glob.glob(str(path.parent / pattern)))
        if not matches and not glob.has_magic(pattern):
            main.problems.append(main.problem(("include", n), f"no such file: {pattern}"))
        for match in matches:
            try:
                doc = load(Path(match), env)
            except InvalidFile as exc:
                main.problems.extend(exc.problems)
                continue
            docs.append(doc)
            inc = parse(doc, Included, doc.data)
            inc_raw = doc.data if isinstance(doc.data, dict) else {}
            for name in ("endpoints", "probes"):
                # As in the main file: an unknown key must not hide the endpoints' problems.
                value = getattr(inc, name) if inc else inc_raw.get(name)
                value = value if isinstance(value, list) else []
                items.extend((doc, name, i, item) for i, item in enumerate(value))

    endpoints: dict[str, Endpoint] = {}
    probes: list[Probe] = []
    for doc, section, i, raw in items:
        if section == "endpoints":
            ep = parse(doc, Endpoint, raw, (section, i))
            if ep and ep.name in endpoints:
                doc.problems.append(
                    doc.problem((section, i, "name"), f"duplicate endpoint {ep.name!r}")
                )
            elif ep:
                endpoints[ep.name] = ep
    golden_sets: dict[str, GoldenSet] = {}
    problems: list[Problem] = []
    for doc, section, i, raw in items:
        if section != "probes":
            continue
        pr = parse(doc, Probe, raw, (section, i))
        if pr is None:
            continue
        if pr.endpoint not in endpoints:
            known = ", ".join(sorted(endpoints)) or "none defined"
            doc.problems.append(
                doc.problem(
                    (section, i, "endpoint"), f"no endpoint named {pr.endpoint!r} (known: {known})"
                )
            )
        if pr.golden_set not in golden_sets:
            gs_path = find_golden_set(path.parent, pr.golden_set)
            if not gs_path.exists():
                doc.problems.append(
                    doc.problem((section, i, "golden_set"), f"no such file: {pr.golden_set}")
                )
                continue
            try:
                golden_sets[pr.golden_set] = load_golden_set(gs_path)
            except InvalidFile as exc:
                problems.extend(exc.problems)
                continue
        probes.append(pr)
    for n, window in enumerate(top.alerting.maintenance if top else []):
        for name in window.endpoints:
            if name not in endpoints:
                at = ("alerting", "maintenance", n, "endpoints")
                main.problems.append(main.problem(at, f"no endpoint named {name!r}"))
    if not endpoints and not main.problems:
        main.problems.append(main.problem(("endpoints",), "no endpoints configured"))
    web_config = None
    if top and top.web_config_file:
        web_path = (path.parent / os.path.expanduser(top.web_config_file)).resolve()
        if not web_path.is_file():
            missing = f"no such file: {top.web_config_file}"
            main.problems.append(main.problem(("web_config_file",), missing))
        else:
            try:
                web_config = load_web_config(web_path)
            except InvalidFile as exc:
                problems.extend(exc.problems)
    for doc in docs:
        problems.extend(doc.problems)
        # A secret written out in a file every user can read: see watchdog/permissions.py.
        problems.extend(permission_problems(Path(doc.file)))
    if problems:
        raise InvalidFile(_dedupe(problems))
    assert top is not None
    secrets = set().union(*(d.secrets for d in docs))
    return Config(
        path,
        top.storage,
        top.listen,
        endpoints,
        probes,
        golden_sets,
        secrets,
        top.alerting,
        top.gpu,
        top.drift,
        top.baseline,
        top.max_concurrency,
        top.retention,
        top.heartbeat_url,
        top.web_config_file,
        web_config,
        top.node or socket.gethostname(),
    )


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def adhoc_config(
    url: str, api: str, model: str | None, golden_set: str, headers: dict[str, str]
) -> Config:
    """A one-endpoint config from the command line, for `once --url`; nothing is stored."""
    path = Path.cwd() / "(command line)"
    doc = Document("--url", {})
    host = re.sub(r"[^A-Za-z0-9_.-]+", "-", url.split("://")[-1].split("/")[0]).strip("-.")
    fields = {"name": host[:64] or "adhoc", "api": api, "base_url": url, "model": model}
    endpoint = parse(doc, Endpoint, {**fields, "headers": headers})
    golden_path = find_golden_set(Path.cwd(), golden_set)
    if not golden_path.exists():
        doc.problems.append(Problem("--golden-set", 0, "", f"no such file: {golden_set}"))
    if doc.problems or endpoint is None:
        raise InvalidFile(doc.problems)
    probe = Probe(endpoint=endpoint.name, golden_set=golden_set)
    return Config(
        path=path,
        storage=Storage(),
        listen="",
        endpoints={endpoint.name: endpoint},
        probes=[probe],
        golden_sets={golden_set: load_golden_set(golden_path)},
        secrets={v for v in headers.values() if v},
    )
