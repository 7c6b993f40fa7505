"""What is watched: an endpoint (a model server and the API it speaks), its latency objectives,
and the probes that run golden sets against it on a schedule."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from watchdog.parsing.fields import Seconds, check_timezone, http_url
from watchdog.parsing.validate import Strict
from watchdog.runtime.scheduler import check_cron


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


class Slo(Strict):
    """Latency objectives: the median of a probe run's answers must stay within them (the
    daemon's `latency_slo` alert); Prometheus' `LatencySLOBreached` rule holds the p95 over its
    window to the same values."""

    ttft_s: Seconds | None = None
    """Time to first token: a run whose median TTFT is above this breaks the SLO. None: no
    objective."""
    e2e_s: Seconds | None = None
    """End to end, request to last byte: a run whose median e2e latency is above this breaks the
    SLO. None: no objective."""


class ApiRules(Protocol):
    """What the config checks of an API: probers/api.py's Api is one."""

    def needs(self, endpoint: Endpoint) -> str | None: ...


def _apis(info: ValidationInfo) -> Mapping[str, ApiRules] | None:
    """The APIs an endpoint may speak, as the config loader passes them in (`context`): this
    module knows no API, so that every part can import it."""
    apis: Mapping[str, ApiRules] | None = (info.context or {}).get("apis")
    return apis


class Endpoint(Strict):
    """A model server to probe: where it is, which API it speaks, and how to talk to it. `probes/`
    has an example per serving stack."""

    name: str = Field(pattern=NAME)
    """The endpoint's name in probes, metrics, alerts and reports: letters, digits, `_`, `.` and
    `-`, up to 64. Renaming it starts a new history."""
    api: str
    """The API it speaks: `openai-chat` (vLLM, llama.cpp, SGLang, LM Studio),
    `openai-completions`, `sglang` (OpenAI chat, ready when SGLang's `/health_generate` makes a
    token), `nim` (NVIDIA NIM for LLMs: OpenAI chat with NIM's `/v1/health` and `/v1/metrics`
    routes), `ollama`, `tgi`, `triton` (needs `model`) or `http` (a JSON service of your own:
    needs `path`, `body_template` and `text_path`)."""
    base_url: str
    """The server's root URL, http:// or https://, without the API's path (e.g.
    `http://127.0.0.1:8000`, not `.../v1`). A user and password in it
    (`http://probe:${PW}@host:8080`, for basic auth in front of the server) are sent as an
    `Authorization: Basic` header, and masked wherever text is stored or shown."""
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
    all answers; see `probes[].every`); by default the API's own (`/health` for the OpenAI APIs,
    SGLang and TGI, `/v1/health/live` for NIM, `/api/version` for Ollama, `/v2/health/live` for
    Triton, none for `http`). `null` turns it off."""
    ready_path: str | None = None
    """The readiness route checked before each run, as `health_path` is; by default the API's own
    (`/v1/models` for the OpenAI APIs, `/health_generate` for SGLang, `/v1/health/ready` for NIM,
    `/info` for TGI, `/api/tags` for Ollama, `/v2/models/MODEL/ready` for Triton: its
    `/v2/health/ready` says ready while the model is still loading, or is not there at all; none
    for `http`). `null` turns it off."""
    server_metrics: bool | None = None
    """Read the engine's own Prometheus metrics at each run (as `health_path` is) and re-export
    its queue, running requests, KV-cache usage, TTFT and inter-token latency as
    `mlops_watchdog_server_*`. By default on for the OpenAI APIs, SGLang, NIM and TGI, or when
    `metrics_url` is given; turn it off behind a gateway."""
    metrics_url: str | None = None
    """Where the engine's metrics are read; by default `base_url` + `/metrics` (`/v1/metrics`
    for NIM). Triton serves them on port 8002: give it here."""
    tokenizer: str | None = None
    """The served model's tokenizer, a Hugging Face `tokenizer.json` (relative to the config
    file), to count the tokens of answers whose server sends no count: Triton, TGI without
    `details`, `api: http`. Without it those counts are estimates (about four characters a token)
    or, for Triton's stream, events (one per piece of text), on which no per-token figure rests
    (tokens/s, TPOT, energy per token). Needs the `tokenizers` package
    (`pip install 'mlops-watchdog[tokenizer]'`)."""
    warmup: bool = False
    """Send one untimed request before each run's timed ones, so a model that was unloaded (Ollama
    after 5 idle minutes) is not timed loading."""
    reasoning_tokens: int = Field(0, ge=0, le=131072)
    """Tokens added to every prompt's `max_tokens`: room for a reasoning model to think before it
    answers. An answer that is all reasoning fails the `reasoning_only` check."""

    @field_validator("health_path", "ready_path", "path")
    @classmethod
    def _route_path(cls, value: str | None) -> str | None:
        if value and not value.startswith("/"):
            raise ValueError(f"a route starts with /, e.g. /{value}")
        return value

    @field_validator("api")
    @classmethod
    def _known_api(cls, value: str, info: ValidationInfo) -> str:
        apis = _apis(info)
        if apis is not None and value not in apis:
            raise ValueError(f"unknown api {value!r}; supported: {', '.join(apis)}")
        return value

    @model_validator(mode="after")
    def _api_needs(self, info: ValidationInfo) -> Endpoint:
        apis = _apis(info)
        problem = apis[self.api].needs(self) if apis and self.api in apis else None
        if problem:
            raise ValueError(problem)
        return self

    @field_validator("base_url", "metrics_url")
    @classmethod
    def _url(cls, value: str | None, info: ValidationInfo) -> str | None:
        return http_url(value, info.field_name)

    @model_validator(mode="before")
    @classmethod
    def _credentials_in_url(cls, data: Any) -> Any:
        """`http://user:${PW}@host` (basic auth in front of a model server, as nginx or Caddy
        do): sent as one `Authorization: Basic` header, and the URL kept without them."""
        if not isinstance(data, dict):
            return data
        metrics_url = data.get("metrics_url")
        if isinstance(metrics_url, str) and urlsplit(metrics_url).username is not None:
            raise ValueError(
                "metrics_url: leave the user and password out of it: the endpoint's "
                "credentials (base_url's, or headers' Authorization) are sent there too"
            )
        base_url, headers = data.get("base_url"), data.get("headers") or {}
        if not isinstance(base_url, str) or not isinstance(headers, dict):
            return data
        url = urlsplit(base_url)
        if url.username is None:
            return data
        if any(str(k).lower() == "authorization" for k in headers):
            raise ValueError(
                "base_url: it carries a user and password, and headers sets Authorization too: "
                "give the credentials once"
            )
        pair = f"{unquote(url.username)}:{unquote(url.password or '')}"
        basic = "Basic " + base64.b64encode(pair.encode()).decode()
        stripped = urlunsplit(url._replace(netloc=url.netloc.rpartition("@")[2]))
        return {**data, "base_url": stripped, "headers": {**headers, "Authorization": basic}}


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
    answered and those routes pass, and again right after any failed prompt. Runs start on the
    first tenth of a second at or after their time: those due within it share one wakeup."""
    cron: str | None = None
    """Instead of `every`: a crontab line (minute hour day month weekday; weekday 0 is Sunday) in
    `timezone`, e.g. `"0 6 * * *"`."""
    timezone: str = "UTC"
    """The IANA time zone `cron` runs in, e.g. `Europe/Berlin`."""
    jitter: Seconds | None = None
    """A random delay of up to this much added to each run, so that many probes do not fire at
    the same instant. Runs keep `every`'s cadence: each is delayed from its own slot, and a
    jitter longer than `every` spreads them over the whole interval."""
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
