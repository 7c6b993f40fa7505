"""Turn a GGUF model into a Hugging Face folder (bf16 safetensors, tokenizer.json, chat template)
that vLLM's CPU build can serve: `python convert.py MODEL.gguf OUT_DIR [CHAT_TEMPLATE]`, run by
the engine venv's Python (it needs torch, transformers, gguf and accelerate, which the watchdog's
venv has not). CHAT_TEMPLATE, a Jinja file, is for a GGUF that carries none (a base model)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from gguf import GGUFReader
from transformers import AutoModelForCausalLM, AutoTokenizer


def convert(gguf: Path, out: Path, chat_template: Path | None) -> None:
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template and chat_template is not None:
        tokenizer.chat_template = chat_template.read_text()
    # transformers drops the GGUF's word on special tokens: Gemma wants <bos> before any prompt
    # (llama.cpp adds it; without it the model rambles), SmolLM2 does not.
    fields = GGUFReader(gguf).fields
    for key in ("add_bos_token", "add_eos_token"):
        field = fields.get(f"tokenizer.ggml.{key}")
        if field is not None:
            setattr(tokenizer, key, bool(field.contents()))
    if not tokenizer.chat_template:
        sys.exit(f"{gguf.name} carries no chat template: vLLM could not serve chat with it")
    # transformers dequantises the GGUF on load; the model still says it is GGUF-quantised, and
    # save_pretrained refuses that. A fresh model from the same config without the
    # quantization_config takes its weights and saves as a plain one.
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings are not in the state dict; anything else missing is a real loss.
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        sys.exit(f"weights do not fit the config: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    if loaded.generation_config is not None:
        loaded.generation_config.save_pretrained(partial)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)  # a half-written folder never looks like a model


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: convert.py MODEL.gguf OUT_DIR [CHAT_TEMPLATE]")
    template = Path(sys.argv[3]) if len(sys.argv) == 4 else None
    convert(Path(sys.argv[1]).resolve(), Path(sys.argv[2]), template)
