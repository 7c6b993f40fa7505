"""SmolLM2 behind NVIDIA Triton (tritonserver inside PyTriton), as TensorRT-LLM's ensemble is
served: a decoupled, non-batching model with `text_input` and a required INT32 `max_tokens` in,
one `text_output` response per streamed piece out (the generate and generate_stream routes).

Run by the Triton venv's Python (torch, transformers, nvidia-pytriton), not the watchdog's:
`python triton_model.py --model DIR --name NAME --http-port N --grpc-port N --metrics-port N
--workspace DIR --counts FILE`. It prints `serving` once Triton has started. `--counts` gets one JSON line per
answer with the number of tokens the model generated, so that tests can hold the watchdog's
count to the truth, which Triton itself never sends."""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer


class CountingStreamer(TextIteratorStreamer):
    """Text pieces at word boundaries, as transformers streams them, and the generated token ids
    behind them."""

    def __init__(self, tokenizer: Any, **kwargs: Any):
        super().__init__(tokenizer, **kwargs)
        self.ids: list[int] = []

    def put(self, value: torch.Tensor) -> None:
        if not (self.skip_prompt and self.next_tokens_are_prompt):
            self.ids.extend(int(i) for i in value.reshape(-1).tolist())
        super().put(value)


def serve(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    special = set(tokenizer.all_special_ids)
    one_at_a_time = threading.Lock()
    counts = Path(args.counts) if args.counts else None

    def run(streamer: CountingStreamer, **settings: Any) -> None:
        # The lock is held here, not in the generator below: PyTriton may drop a generator
        # whose client went away without closing it, and a lock held there would stay held.
        with one_at_a_time:
            model.generate(**settings, streamer=streamer)
        if counts is not None:
            text = tokenizer.decode(streamer.ids, skip_special_tokens=True)
            tokens = len([i for i in streamer.ids if i not in special])
            with counts.open("a") as f:
                f.write(json.dumps({"text": text, "tokens": tokens}) + "\n")

    def generate(requests: list[Any]) -> Iterator[list[dict[str, np.ndarray]]]:
        (request,) = requests  # non-batching: one request per call
        prompt = request["text_input"][0].decode()
        max_tokens = int(request["max_tokens"][0])
        messages = [{"role": "user", "content": prompt}]
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        streamer = CountingStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        settings = {**inputs, "max_new_tokens": max_tokens, "do_sample": False}
        threading.Thread(target=run, args=(streamer,), kwargs=settings, daemon=True).start()
        for piece in streamer:
            if piece:
                yield [{"text_output": np.array([piece.encode()], dtype=np.object_)}]

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        allow_gpu_metrics=False,
        # A stream whose client went away while the server was frozen can keep its connection
        # open: wait 5 s for such, not the default 30.
        exit_timeout_secs=5,
    )
    # The workspace holds PyTriton's copy of tritonserver and its sockets: in the caller's
    # temporary folder, not in ~/.cache, where a killed server would leave it.
    with Triton(config=config, workspace=args.workspace) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=generate,
            # Shaped as TensorRT-LLM's ensemble: the generate route fills `max_tokens` from the
            # request's `parameters`.
            inputs=[
                Tensor(name="text_input", dtype=bytes, shape=(1,)),
                Tensor(name="max_tokens", dtype=np.int32, shape=(1,)),
            ],
            outputs=[Tensor(name="text_output", dtype=bytes, shape=(1,))],
            config=ModelConfig(batching=False, decoupled=True),
            strict=True,
        )
        print("serving", flush=True)
        triton.serve()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a Hugging Face model folder")
    p.add_argument("--name", default="smollm2", help="the model's name in /v2/models/NAME")
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("--workspace", help="PyTriton's working folder (default: one in ~/.cache)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--counts", help="append the generated token count of each answer here")
    serve(p.parse_args())


if __name__ == "__main__":
    main()
