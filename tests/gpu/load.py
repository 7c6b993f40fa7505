"""A bf16 matmul load on one GPU, in a child process, for the real-GPU tests and the bench.

The child holds a known amount of VRAM (a HOLD_GIB tensor plus the matmul operands), prints one
JSON line once the first product is done, then multiplies for a bounded number of seconds. Run
as a script (`python3 tests/gpu/load.py GIB SECONDS`), so it needs only PyTorch.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HOLD_GIB = 4
MATMUL_N = 8192  # bf16: 128 MiB an operand, ~1.1 TFLOP a product
READY_TIMEOUT_S = 120.0  # PyTorch import and CUDA context creation


@dataclass
class Load:
    process: subprocess.Popen[str]
    pid: int
    uuid: str  # NVML's form, "GPU-..."
    reserved_bytes: int  # torch.cuda.memory_reserved() once the first product is done

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start(python: str, seconds: float, hold_gib: int = HOLD_GIB) -> Load:
    """Start the load on CUDA device 0 (as CUDA_VISIBLE_DEVICES names it) and wait until it runs."""
    process = subprocess.Popen(
        [python, str(Path(__file__).resolve()), str(hold_gib), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], READY_TIMEOUT_S)
    line = process.stdout.readline() if ready else ""
    if not line:
        process.kill()
        process.wait(timeout=10)
        raise RuntimeError(
            f"the load did not start in {python} (exit {process.returncode}); it needs PyTorch "
            "with CUDA: set GPU_TEST_TORCH_PYTHON to a python that has it"
        )
    info = json.loads(line)
    uuid = str(info["uuid"])
    if not uuid.startswith(("GPU-", "MIG-")):
        uuid = "GPU-" + uuid
    return Load(process, int(info["pid"]), uuid, int(info["reserved"]))


def main(hold_gib: int, seconds: float) -> None:
    import torch

    device = torch.device("cuda", 0)
    hold = torch.ones(hold_gib << 30, dtype=torch.uint8, device=device)
    a = torch.randn(MATMUL_N, MATMUL_N, dtype=torch.bfloat16, device=device)
    b = torch.randn(MATMUL_N, MATMUL_N, dtype=torch.bfloat16, device=device)
    c = a @ b
    torch.cuda.synchronize()
    uuid = torch.cuda.get_device_properties(device).uuid
    info = {"pid": os.getpid(), "uuid": str(uuid), "reserved": torch.cuda.memory_reserved(device)}
    print(json.dumps(info), flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(10):
            torch.matmul(a, b, out=c)
        torch.cuda.synchronize()
    del hold


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
