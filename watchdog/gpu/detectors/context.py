"""What every GPU detector reads: recent samples, the probe runs of bound endpoints, XIDs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from watchdog.gpu.nvml import GpuSample
from watchdog.gpu.serving import Server
from watchdog.gpu.settings import Gpu


@dataclass(frozen=True)
class ProbeWindow:
    """One probe run of an endpoint bound to GPUs, as the GPUs saw it."""

    endpoint: str
    started: float  # Unix seconds
    ended: float
    answered: bool  # every prompt got an answer (format checks aside)
    tokens_per_s: float | None  # median decode speed of the run's answers
    gpu_utilization: Mapping[str, float]  # UUID: highest utilisation read during the run


@dataclass(frozen=True)
class XidCount:
    count: int
    last_seen: float  # Unix seconds


@dataclass(frozen=True)
class Context:
    now: float  # Unix seconds
    settings: Gpu
    history: Mapping[str, Sequence[GpuSample]]  # UUID: samples, oldest first, >= leak.window
    windows: Sequence[ProbeWindow]  # recent probe runs of bound endpoints, oldest first
    bindings: Mapping[str, Sequence[str]]  # endpoint: the UUIDs it is bound to
    xids: Mapping[tuple[str, int], XidCount] = field(default_factory=dict)  # (UUID, code)
    lost: frozenset[str] = frozenset()  # UUIDs NVML reported lost since the last evaluation
    gpu_count: int = 0
    gpu_count_max: int = 0  # over hardware.missing_window
    names: Mapping[str, str] = field(default_factory=dict)  # UUID: "GPU 0 (NVIDIA H100 ...)"
    servers: Mapping[str, Server] = field(default_factory=dict)  # endpoint: its local process
