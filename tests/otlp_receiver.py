"""An OTLP/HTTP receiver on a loopback socket for the tests: it decodes what it is sent with
the official `opentelemetry-proto` messages, as a collector reads it. No OpenTelemetry
Collector binary can be had here (the registries offer only wrappers that download one at run
time), and Debian's Prometheus (2.42) predates its OTLP receiver (2.47)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

# OTLP/HTTP's paths, each with its request and response messages.
SIGNALS: dict[str, tuple[type[Message], type[Message]]] = {
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
}


@dataclass
class Export:
    headers: dict[str, str]
    request: Any  # the decoded Export*ServiceRequest


@dataclass
class Receiver:
    base: str
    path: str = "/v1/metrics"
    got: list[Export] = field(default_factory=list)  # of every signal, in arrival order
    status: int = 200

    @property
    def url(self) -> str:
        return self.base + self.path

    def of(self, path: str) -> list[Any]:
        return [e.request for e in self.got if isinstance(e.request, SIGNALS[path][0])]


@contextmanager
def receiving(path: str = "/v1/metrics") -> Iterator[Receiver]:
    """The receiver in its own thread: an exporter's flush blocks its caller until it answers."""
    box: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request_type, response_type = SIGNALS[self.path]
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = request_type()
            request.ParseFromString(body)
            box[0].got.append(Export({k.lower(): v for k, v in self.headers.items()}, request))
            reply = response_type().SerializeToString()
            self.send_response(box[0].status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.append(Receiver(f"http://127.0.0.1:{server.server_port}", path))
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield box[0]
    finally:
        server.shutdown()
        server.server_close()
