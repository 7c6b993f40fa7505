"""The config file: parsed once, strictly, with every problem reported as FILE:LINE: key: msg."""

from __future__ import annotations

import base64
import contextlib
import glob
import os
import re
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    field_validator,
)

from watchdog.alerting.settings import Alerting
from watchdog.drift.baselines import BaselinePolicy
from watchdog.drift.compare import DriftSettings
from watchdog.endpoint import Endpoint, Probe
from watchdog.golden.sets import GoldenSet, load_golden_set
from watchdog.gpu.settings import Gpu
from watchdog.otlp import export as otlp_export
from watchdog.otlp.settings import Otlp
from watchdog.parsing.fields import http_url, parse_listen
from watchdog.parsing.permissions import permission_problems
from watchdog.parsing.validate import Strict, parse
from watchdog.parsing.yamlfile import Document, InvalidFile, Problem, load
from watchdog.probers import APIS
from watchdog.probers.tokens import TokenCounter, TokenizerError
from watchdog.probers.tokens import load as load_tokenizer
from watchdog.store.settings import Retention, Storage
from watchdog.web.settings import WebConfig, load_web_config

DEFAULT_PATH = Path("/etc/mlops-watchdog/config.yaml")
SHIPPED_GOLDEN_SETS = Path(__file__).parent.parent / "data" / "golden_sets"
# What an endpoint's `api:` may name, and what each API needs of it: the endpoint validators' context.
KNOWN_APIS = {"apis": APIS}


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
    otlp: Otlp | None = None
    """Also push the GenAI client metrics (and optionally `hw.gpu.*`) to an OpenTelemetry
    collector over OTLP/HTTP; off when unset."""

    @field_validator("heartbeat_url")
    @classmethod
    def _heartbeat(cls, value: str | None, info: ValidationInfo) -> str | None:
        return http_url(value, info.field_name)


def _listen(value: str) -> str:
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
    # Each endpoint's `tokenizer`, read, by endpoint name.
    tokenizers: dict[str, TokenCounter] = field(default_factory=dict, repr=False)
    otlp: Otlp | None = None

    def resolve(self, relative: str) -> Path:
        """A path written in the config, relative to the config file's folder."""
        return (self.path.parent / os.path.expanduser(relative)).resolve()

    def pairs(self, endpoint: str | None = None) -> list[tuple[str, str]]:
        """(endpoint, golden set name) of every probe, or of one endpoint's: sorted, once each."""
        return sorted(
            {
                (p.endpoint, self.golden_sets[p.golden_set].name)
                for p in self.probes
                if endpoint is None or p.endpoint == endpoint
            }
        )

    def prompts(self) -> dict[str, list[str]]:
        """Each endpoint's prompt ids, over all its probes' golden sets."""
        out: dict[str, list[str]] = {name: [] for name in self.endpoints}
        for probe in self.probes:
            ids = [p.id for p in self.golden_sets[probe.golden_set].prompts]
            out[probe.endpoint] += [i for i in ids if i not in out[probe.endpoint]]
        return out


# Changed in the file, these keep their old values until a restart; a reload names them.
RESTART = (
    "storage",
    "listen",
    "node",
    "web_config_file",
    "alerting.slack",
    "alerting.route",
    "alerting.alertmanager",
    "gpu",
    "retention.every",
    "otlp",
)


def until_restart(old: Config, new: Config) -> tuple[Config, list[str]]:
    """`new` with every RESTART key as `old` has it, and the keys among them that changed (the
    web config file counts as changed when its content did)."""
    changed = [key for key in RESTART if _at(old, key) != _at(new, key)]
    if old.web_config != new.web_config and "web_config_file" not in changed:
        changed.append("web_config_file")
    kept = replace(new, web_config=old.web_config)
    for key in RESTART:
        kept = _with(kept, key.split("."), _at(old, key))
    return kept, changed


def _at(config: Any, key: str) -> Any:
    for part in key.split("."):
        config = getattr(config, part)
    return config


def _with(config: Any, path: list[str], value: Any) -> Any:
    """A copy of `config` (the Config or a section of it) with `value` at `path`."""
    head, *rest = path
    new = _with(getattr(config, head), rest, value) if rest else value
    if isinstance(config, Config):
        return replace(config, **{head: new})
    return config.model_copy(update={head: new})


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
    tokenizers: dict[str, TokenCounter] = {}
    by_file: dict[Path, TokenCounter] = {}  # endpoints of one model share its tokenizer
    probes: list[Probe] = []
    for doc, section, i, raw in items:
        if section == "endpoints":
            ep = parse(doc, Endpoint, raw, (section, i), KNOWN_APIS)
            if ep and ep.name in endpoints:
                doc.problems.append(
                    doc.problem((section, i, "name"), f"duplicate endpoint {ep.name!r}")
                )
            elif ep:
                endpoints[ep.name] = ep
                if ep.tokenizer:
                    key = (section, i, "tokenizer")
                    _read_tokenizer(doc, key, path.parent, ep, tokenizers, by_file)
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
    if top and top.otlp:
        _check_otlp(main, top)
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
        # A secret written out in a file every user can read: see watchdog/parsing/permissions.py.
        problems.extend(permission_problems(Path(doc.file)))
    if problems:
        raise InvalidFile(_dedupe(problems))
    assert top is not None
    secrets = set().union(*(d.secrets for d in docs), *map(_credentials, endpoints.values()))
    secrets |= _otlp_secrets(top.otlp)
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
        tokenizers,
        otlp=top.otlp,
    )


def _read_tokenizer(
    doc: Document,
    key: tuple[str | int, ...],
    base: Path,
    endpoint: Endpoint,
    tokenizers: dict[str, TokenCounter],
    by_file: dict[Path, TokenCounter],
) -> None:
    """Read an endpoint's `tokenizer` (relative to `base`) into `tokenizers`, or say why not."""
    assert endpoint.tokenizer is not None
    file = (base / os.path.expanduser(endpoint.tokenizer)).resolve()
    if file not in by_file:
        if not file.is_file():
            doc.problems.append(doc.problem(key, f"no such file: {endpoint.tokenizer}"))
            return
        try:
            by_file[file] = load_tokenizer(file)
        except TokenizerError as exc:
            doc.problems.append(doc.problem(key, str(exc)))
            return
    tokenizers[endpoint.name] = by_file[file]


def _check_otlp(doc: Document, top: TopLevel) -> None:
    """`otlp:` needs its optional packages, and `otlp.gpu` needs GPU telemetry."""
    assert top.otlp is not None
    problem = otlp_export.missing()
    if problem:
        doc.problems.append(doc.problem(("otlp",), problem))
    if top.otlp.gpu and top.gpu.enabled is False:
        needs = "needs GPU telemetry: gpu.enabled is false"
        doc.problems.append(doc.problem(("otlp", "gpu"), needs))


def _otlp_secrets(otlp: Otlp | None) -> set[str]:
    """Every OTLP header value is a credential, and so is the token of `Bearer TOKEN`."""
    found: set[str] = set()
    for value in otlp.headers.values() if otlp else ():
        found |= {value.strip(), value.strip().partition(" ")[2].strip()}
    return found - {""}


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def adhoc_config(
    url: str,
    api: str,
    model: str | None,
    golden_set: str,
    headers: dict[str, str],
    metrics_url: str | None = None,
    tokenizer: str | None = None,
) -> Config:
    """A one-endpoint config from the command line, for `once --url`; nothing is stored."""
    path = Path.cwd() / "(command line)"
    doc = Document("--url", {})
    host = re.sub(r"[^A-Za-z0-9_.-]+", "-", url.split("://")[-1].split("/")[0]).strip("-.")
    fields = {"name": host[:64] or "adhoc", "api": api, "base_url": url, "model": model}
    # Only what was given: an endpoint tells a key set to null from one left out.
    given = {"metrics_url": metrics_url, "tokenizer": tokenizer}
    fields |= {key: value for key, value in given.items() if value is not None}
    endpoint = parse(doc, Endpoint, {**fields, "headers": headers}, (), KNOWN_APIS)
    tokenizers: dict[str, TokenCounter] = {}
    if endpoint is not None and endpoint.tokenizer:
        said = Document("--tokenizer", {})
        _read_tokenizer(said, (), Path.cwd(), endpoint, tokenizers, {})
        doc.problems.extend(said.problems)
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
        secrets=_credentials(endpoint),
        tokenizers=tokenizers,
    )


def _credentials(endpoint: Endpoint) -> set[str]:
    """What the Authorization header sends, in each form a gateway could echo it back: its
    token (the key of `Bearer KEY`, also when written out or given by `once --api-key-env`);
    for basic auth (`http://user:PW@host` in base_url becomes such a header), the base64 token,
    the `user:PW` pair it encodes, and the password."""
    found = set()
    for key, value in endpoint.headers.items():
        if key.lower() != "authorization":
            continue
        kind, _, token = value.strip().partition(" ")
        found.add(token.strip() or kind)
        if kind.lower() == "basic":
            with contextlib.suppress(ValueError):  # not base64, or not UTF-8 in it
                pair = base64.b64decode(token.strip(), validate=True).decode()
                found |= {pair, pair.partition(":")[2]}
    return found - {""}
