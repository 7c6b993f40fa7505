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
    path: str = "/var/lib/mlops-watchdog/watchdog.db"
    csv_dir: str = "/var/lib/mlops-watchdog/reports"
    responses: Literal["full", "excerpt", "hash"] = "excerpt"
    excerpt_chars: int = Field(200, ge=0, le=10000)
    report_every: Seconds = 900.0


class Retention(Strict):
    """How long results are kept, and how large the database may grow before it warns."""

    raw_days: float = Field(14, gt=0)  # every result, as recorded
    rollup_days: float = Field(400, gt=0)  # hourly rollups per endpoint, prompt and golden set
    max_db_bytes: int = Field(2_000_000_000, gt=0)  # past this, a warning and a metric
    every: Seconds = 3600.0  # how often pruning and incremental vacuum run


class Endpoint(Strict):
    name: str = Field(pattern=NAME)
    api: str
    base_url: str
    model: str | None = None
    headers: dict[str, str] = {}
    timeout_s: Seconds = 60.0
    max_body_bytes: int = Field(4_000_000, gt=0)
    concurrency: int = Field(1, ge=1, le=64)
    slo: Slo = Slo()
    # The GPUs that serve this endpoint, by UUID or NVML index: energy per token and the
    # idle-while-serving check. UUIDs are safer: NVML's order is the PCI bus order, which
    # CUDA_VISIBLE_DEVICES does not change.
    gpus: list[GpuRef] = []
    # What the application puts before every conversation; a change is a "template" event.
    system_prompt: str | None = None
    # api: http, a JSON service of your own: where to send what, and where the answer is.
    path: str | None = None
    method: Literal["POST", "PUT"] = "POST"
    body_template: str | None = None  # sandboxed Jinja2: prompt, messages, max_tokens, temperature
    text_path: str | None = None  # dotted path into the response JSON, e.g. output.text
    # Liveness and readiness routes, probed before each run; `null` turns one off.
    health_path: str | None = None
    ready_path: str | None = None
    # The engine's own Prometheus metrics, read at each run and re-exported as server_*.
    server_metrics: bool | None = None  # default: true where the stack serves /metrics
    metrics_url: str | None = None  # default: base_url + /metrics
    # One untimed request before each run's timed ones: a cold model's first answer is slow.
    warmup: bool = False
    # Added to every prompt's max_tokens, for models that think before they answer.
    reasoning_tokens: int = Field(0, ge=0, le=131072)

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
    endpoint: str
    golden_set: str
    every: Seconds | None = None
    cron: str | None = None
    timezone: str = "UTC"
    jitter: Seconds | None = None
    misfire_grace: Seconds = 30.0
    stream: bool = True

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
    storage: Storage = Storage()
    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:9464"
    # Which machine this watchdog speaks for, on every metric and message; the host name if unset.
    node: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    include: list[str] = []
    endpoints: list[Any] = []
    probes: list[Any] = []
    alerting: Alerting = Alerting()
    gpu: Gpu = Gpu()
    drift: DriftSettings = DriftSettings()
    baseline: BaselinePolicy = BaselinePolicy()
    # Probe requests in flight across every endpoint: the watchdog must never load a fleet.
    max_concurrency: int = Field(8, ge=1, le=1024)
    retention: Retention = Retention()
    # A dead-man's switch (healthchecks.io style): GET after each healthy cycle.
    heartbeat_url: str | None = None
    # TLS and basic auth on the listener, in the Prometheus exporter web-config format.
    web_config_file: str | None = None

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
    endpoints: list[Any] = []
    probes: list[Any] = []


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
