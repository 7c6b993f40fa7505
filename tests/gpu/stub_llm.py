"""An OpenAI-compatible stand-in that does each token's work on the GPU or on the CPU.

For tests/gpu only: the GPU machine has no network and no model to serve, and the question
under test is whether the watchdog tells a server working on its GPU from one that quietly fell
back to the CPU. Run as a script: `python3 tests/gpu/stub_llm.py PORT cuda|cpu`.
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKENS = ["The", " capital", " of", " France", " is", " Paris", "."]
CPU_TOKEN_S = 0.04  # ~25 tokens/s: how a small model decodes on a few CPU cores


def main() -> None:
    port, device = int(sys.argv[1]), sys.argv[2]
    step = cuda_step() if device == "cuda" else cpu_step

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = json.dumps({"data": [{"id": f"stub-{device}"}]}).encode()
            self._send(200 if self.path == "/v1/models" else 404, body, "application/json")

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if not request.get("stream"):
                for _ in TOKENS:
                    step()
                body = {
                    "model": f"stub-{device}",
                    "choices": [{"message": {"content": "".join(TOKENS)}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 8, "completion_tokens": len(TOKENS)},
                }
                self._send(200, json.dumps(body).encode(), "application/json")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for token in TOKENS:
                step()
                delta = {"choices": [{"index": 0, "delta": {"content": token}}]}
                self._chunk(delta)
            self._chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            self._chunk(
                {"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": len(TOKENS)}}
            )
            self._raw(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")

        def _chunk(self, event: dict[str, object]) -> None:
            self._raw(
                b"data: " + json.dumps({"model": f"stub-{device}", **event}).encode() + b"\n\n"
            )

        def _raw(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


def cpu_step() -> None:
    deadline = time.perf_counter() + CPU_TOKEN_S
    x = 0
    while time.perf_counter() < deadline:  # busy, as a CPU decode is
        x += 1


def cuda_step():  # type: ignore[no-untyped-def]
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)

    def step() -> None:
        for _ in range(5):  # ~7 ms of tensor-core work a token: the GPU is busy while serving
            a @ a
        torch.cuda.synchronize()

    step()
    return step


if __name__ == "__main__":
    main()
